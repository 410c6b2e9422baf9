"""Weight memory of the 8- and 4-bit variants against the theoretical minimum.

    .venv/bin/python bench/bench_weights.py

Measured: models.weight_bytes of the embedded model loaded at 8 and 4 bits (every parameter and buffer,
and bitsandbytes' quantization state). The minimum: the quantized parameters at their bits, plus the
constants their blocks need (4-bit: one float32 absmax per 64 weights, or with double quantization one
byte per 64 and one float32 per 256 blocks; 8-bit: one float32 scale per output row), plus every layer
kept in full precision at its dtype. Nothing else: no code tables, no offsets, no alignment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, markdown_table, save  # noqa: E402

FORMATS = [(8, "nf4", True), (4, "nf4", True), (4, "nf4", False), (4, "fp4", True)]  # the 4-bit type is unused at 8


def minimum(layout, bits: int, double_quant: bool, full_bytes: int) -> int:
    quantized = sum(lin.in_features * lin.out_features for lin in layout.linears)
    rows = sum(lin.out_features for lin in layout.linears)
    if bits == 8:
        consts = rows * 4
    elif double_quant:
        consts = quantized // 64 + quantized // (64 * 256) * 4
    else:
        consts = quantized // 64 * 4
    return quantized * bits // 8 + consts + (layout.total_params - quantized) * full_bytes


def main(argv=None) -> int:
    from workbench.core.config import DEFAULT_MODEL, QuantSettings
    from workbench.engine import models
    from workbench.engine.layout import ModelLayout
    from workbench.engine.resolve import model_config_for, resolve_model

    path = resolve_model(DEFAULT_MODEL)
    layout = ModelLayout(model_config_for(str(path)))
    rows, out = [], []
    for bits, qtype, dq in FORMATS:
        model, choice = models.load_model(
            path, bits=bits, device="cpu", quant=QuantSettings(bits=bits, quant_type=qtype, double_quant=dq)
        )
        measured = models.weight_bytes(model)
        least = minimum(layout, bits, dq, choice.dtype.itemsize)
        label = "LLM.int8" if bits == 8 else f"{qtype.upper()}{' + double quant' if dq else ''}"
        out.append({"format": label, "measured": measured, "minimum": least, "ratio": measured / least})
        rows.append([label, f"{measured:,}", f"{least:,}", f"{measured / least - 1:+.2%}"])
        del model
    md = markdown_table(["format", "weight bytes measured", "theoretical minimum", "above the minimum"], rows)
    print(md)
    save("weights", {"machine": machine(), "rows": out}, md)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
