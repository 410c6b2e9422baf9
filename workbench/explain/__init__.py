"""Two explainers for teaching: what a LoRA update is (lora.py), and what 4- and 8-bit storage does to a
weight (quant.py). Nothing here imports ipywidgets; workbench.ui.explain puts these in panels. This
package re-exports both modules' public names, so `explain.read_adapter` and `explain.quant_table` work.
"""

from .lora import (
    MODULE_ORDER,
    LayerSpectrum,
    LoraFactors,
    Rect,
    adapter_factors,
    adapter_figure,
    adapter_spectra,
    delta_singular_values,
    energy_fraction,
    energy_rank,
    heatmap_figure,
    lora_counts,
    lora_geometry,
    lora_shapes_figure,
    module_sort_key,
    norm_heatmap,
    numerical_rank,
    peft_factors,
    read_adapter,
    spectra_figure,
    uses_dora,
)
from .quant import (
    BLOCKSIZE,
    FORMAT_LABELS,
    FORMATS,
    QuantResult,
    block_absmax,
    code_points,
    distinct_code_points,
    format_label,
    normalized_weights,
    quant_error,
    quant_histogram_figure,
    quant_table,
    quantize_roundtrip,
)

__all__ = [
    "BLOCKSIZE", "FORMATS", "FORMAT_LABELS", "MODULE_ORDER", "LayerSpectrum", "LoraFactors", "QuantResult",
    "Rect", "adapter_factors", "adapter_figure", "adapter_spectra", "block_absmax", "code_points",
    "delta_singular_values", "distinct_code_points", "energy_fraction", "energy_rank", "format_label",
    "heatmap_figure", "lora_counts", "lora_geometry", "lora_shapes_figure", "module_sort_key", "norm_heatmap",
    "normalized_weights", "numerical_rank", "peft_factors", "quant_error", "quant_histogram_figure",
    "quant_table", "quantize_roundtrip", "read_adapter", "spectra_figure", "uses_dora",
]
