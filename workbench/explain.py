"""Two explainers for teaching: what a LoRA update is, and what 4- and 8-bit storage does to a weight.

LoRA: a linear layer's frozen weight W (d×k, d outputs, k inputs) is adapted by ΔW = B·A·scaling with
B (d×r) and A (r×k). `lora_geometry` / `lora_shapes_figure` draw the three matrices to scale from the
layer's shape alone (the model's config on the meta device: no weights); `adapter_spectra` reads a
trained adapter (a PEFT folder, or a loaded PeftModel) and gives, per layer, the singular values of
ΔW, its Frobenius norm and how many directions hold most of it.

Quantization: `quant_table` quantizes one weight with bitsandbytes itself (the kernels the 4- and
8-bit models use) in every format, dequantizes it back and reports the error and the bytes really
stored; `quant_histogram_figure` shows the weights against the 16 code points of NF4 or FP4.

Nothing here imports ipywidgets; workbench.ui.explain puts these in panels.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from . import memory

# the order module types are listed in (a Llama block's own order); others follow alphabetically
MODULE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
W_COLOR, B_COLOR, A_COLOR = "#9ecae1", "#fd8d3c", "#fdae6b"


def module_sort_key(module: str) -> tuple[int, str]:
    return (MODULE_ORDER.index(module), "") if module in MODULE_ORDER else (len(MODULE_ORDER), module)


def layer_index(name: str) -> int | None:
    """The block a module belongs to: 3 for model.layers.3.self_attn.q_proj (None outside the blocks)."""
    m = re.search(r"\.(?:layers|h|blocks|layer)\.(\d+)\.", "." + name)
    return int(m.group(1)) if m else None


# =========================================================================== LoRA: shapes


@dataclass(frozen=True)
class LinearShape:
    """One linear layer: W is d×k (d = out_features, rows; k = in_features, columns), as torch stores it."""

    name: str
    d: int
    k: int

    @property
    def module(self) -> str:
        return self.name.split(".")[-1]


def linear_shapes(model) -> list[LinearShape]:
    """The linear layers LoRA can target (lm_head excluded), by full name, with their shapes.

    `model` is a model name or folder (only its config is read, and the model is built on the meta
    device: no weight is loaded), a transformers config, or a loaded model."""
    if isinstance(model, torch.nn.Module):
        built = model
    else:
        config = memory.model_config_for(model) if isinstance(model, (str, Path)) else model
        built = memory._meta_model(config)
    return [LinearShape(name, out_f, in_f) for name, in_f, out_f in memory._linear_layers(built)]


def lora_counts(d: int, k: int, r: int) -> dict[str, float]:
    """Parameters of W (d·k) and of its LoRA factors (B: d·r, A: r·k, together r·(d+k)), and their ratio."""
    lora = r * (d + k)
    return {"W": d * k, "B": d * r, "A": r * k, "BA": lora, "fraction": lora / (d * k)}


@dataclass(frozen=True)
class Rect:
    """A matrix drawn as a rectangle: x to the right, y downwards (row 0 at the top), both in matrix entries."""

    x: float
    y: float
    width: float
    height: float


def lora_geometry(d: int, k: int, r: int) -> dict[str, Rect]:
    """W, B and A as rectangles to one scale: one unit is one row or one column.

    W is k wide and d tall; B is r wide and d tall (its rows line up with W's); A is k wide and r tall,
    drawn top-aligned with B so that B's r columns meet A's r rows, as in the product B·A."""
    gap = 0.12 * max(d, k)
    w = Rect(0.0, 0.0, float(k), float(d))
    b = Rect(k + gap, 0.0, float(r), float(d))
    a = Rect(b.x + r + 0.5 * gap, 0.0, float(k), float(r))
    return {"W": w, "B": b, "A": a}


def lora_shapes_figure(name: str, d: int, k: int, r: int) -> Figure:
    """W beside B and A, drawn to scale, with the parameter counts."""
    from matplotlib.patches import Rectangle

    geo = lora_geometry(d, k, r)
    c = lora_counts(d, k, r)
    span = geo["A"].x + geo["A"].width
    pad = 0.03 * span
    x0, x1 = -pad, span + pad
    y0, y1 = -0.05 * max(d, k), max(d, r) + 0.14 * max(d, k)
    # one scale for both directions (aspect 1), so the figure takes the drawing's proportions,
    # within 7.4 × 4.4 inches for the drawing itself
    scale = min(7.4 / (x1 - x0), 4.4 / (y1 - y0))
    ax_w, ax_h = (x1 - x0) * scale, (y1 - y0) * scale
    fig_w, fig_h = max(ax_w, 6.0) + 0.4, ax_h + 1.3
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes(((fig_w - ax_w) / 2 / fig_w, 0.8 / fig_h, ax_w / fig_w, ax_h / fig_h))
    colors = {"W": W_COLOR, "B": B_COLOR, "A": A_COLOR}
    labels = {"W": f"W  {d}×{k}\nfrozen", "B": f"B\n{d}×{r}", "A": f"A  {r}×{k}"}
    for key, rect in geo.items():
        # an edge keeps a rank-1 factor visible as a line however thin it is at this scale
        ax.add_patch(Rectangle((rect.x, rect.y), rect.width, rect.height, facecolor=colors[key],
                               edgecolor="#333333", linewidth=0.8))
    w, b, a = geo["W"], geo["B"], geo["A"]
    ax.text(w.x + w.width / 2, w.y + w.height / 2, labels["W"], ha="center", va="center", fontsize=10)
    ax.text(b.x + b.width / 2, b.y + b.height + pad, labels["B"], ha="center", va="top", fontsize=9)
    ax.text(a.x + a.width / 2, a.y + a.height + pad, labels["A"], ha="center", va="top", fontsize=9)
    ax.text((w.x + w.width + b.x) / 2, d / 2, "+", ha="center", va="center", fontsize=18)
    ax.text((b.x + b.width + a.x) / 2, min(d / 2, max(r, 1) / 2 + 0.06 * d), "·", ha="center", va="center",
            fontsize=22)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # rows run downwards, as in a matrix
    ax.set_aspect("equal")
    ax.axis("off")
    fig.text(0.5, 1 - 0.15 / fig_h, f"{name}: W + B·A, drawn to scale at rank r = {r}", fontsize=11,
             ha="center", va="top")
    fig.text(0.5, 0.1 / fig_h,
             f"W: d·k = {c['W']:,} parameters (frozen)    B and A: r·(d+k) = {c['BA']:,} trained\n"
             f"r(d+k)/(dk) = {c['fraction']:.2%} of W" + ("  (more than W itself: r is above dk/(d+k))"
                                                          if c["fraction"] > 1 else ""),
             ha="center", va="bottom", fontsize=9)
    return fig


# =========================================================================== LoRA: a trained adapter


class _NamedLayer:
    """A layer known by its module name, e.g. model.layers.3.self_attn.q_proj."""

    name: str

    @property
    def module(self) -> str:
        return self.name.split(".")[-1]

    @property
    def layer(self) -> int | None:
        return layer_index(self.name)


@dataclass
class LoraFactors(_NamedLayer):
    """One adapted layer: ΔW = B·A·scaling, with B d×r and A r×k."""

    name: str  # the base model's module name, e.g. model.layers.3.self_attn.q_proj
    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def delta(self) -> torch.Tensor:
        """ΔW as a dense d×k matrix (float64)."""
        return (self.B.double() @ self.A.double()) * self.scaling


_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


def _pattern_value(patterns: dict, module: str, default):
    # peft's own rule (peft.utils.other.get_pattern_key): a pattern matches the end of the module name
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def lora_scaling(alpha: float, r: int, use_rslora: bool = False) -> float:
    """peft's scale of B·A: alpha/r, or alpha/√r with rank-stabilised LoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def read_adapter(path: str | Path) -> list[LoraFactors]:
    """The factors of a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), without
    loading the base model. r is read from each tensor's shape, alpha from the config (alpha_pattern too).
    For a DoRA adapter these are its direction update only (its per-row magnitudes are not part of B·A)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(f"adapter: {path} is not a PEFT adapter folder (it needs adapter_config.json and "
                         "adapter_model.safetensors)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"adapter: {path} holds a {cfg.get('peft_type')} adapter, not LoRA")
    tensors = load_file(str(weights), device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = value
    out = []
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            continue
        r = int(ab["A"].shape[0])
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8)))
        out.append(LoraFactors(module, ab["A"].float(), ab["B"].float(),
                               lora_scaling(alpha, r, bool(cfg.get("use_rslora", False)))))
    if not out:
        raise ValueError(f"adapter: no LoRA factors (lora_A/lora_B weights) in {weights}")
    return _sorted(out)


def peft_factors(model, adapter_name: str | None = None) -> list[LoraFactors]:
    """The factors of a loaded PeftModel (its active adapter unless one is named)."""
    if adapter_name is None:
        active = getattr(model, "active_adapter", "default")
        adapter_name = active[0] if isinstance(active, (list, tuple)) else active
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and adapter_name in lora_a:
            a = lora_a[adapter_name].weight.detach().float().cpu()
            b = module.lora_B[adapter_name].weight.detach().float().cpu()
            clean = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
            out.append(LoraFactors(clean, a, b, float(module.scaling[adapter_name])))
    if not out:
        raise ValueError(f"adapter: the model has no LoRA layers for adapter {adapter_name!r}")
    return _sorted(out)


def adapter_factors(source) -> list[LoraFactors]:
    """From an adapter folder (cheap: no base model) or a loaded PeftModel."""
    if isinstance(source, (str, Path)):
        return read_adapter(source)
    return peft_factors(source)


def _sorted(factors: list[LoraFactors]) -> list[LoraFactors]:
    return sorted(factors, key=lambda f: (f.layer if f.layer is not None else -1, module_sort_key(f.module), f.name))


def delta_singular_values(B: torch.Tensor, A: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """Singular values of ΔW = B·A·scaling without forming the d×k product.

    With B = Q_B R_B and Aᵀ = Q_A R_A (reduced QR; Q_B, Q_A have orthonormal columns), B·A =
    Q_B (R_B R_Aᵀ) Q_Aᵀ, so ΔW has the singular values of the small r×r core R_B R_Aᵀ.
    Returned in float64, largest first (at most r of them)."""
    B, A = B.detach().double().cpu(), A.detach().double().cpu()
    _, rb = torch.linalg.qr(B)
    _, ra = torch.linalg.qr(A.T)
    return torch.linalg.svdvals(rb @ ra.T) * abs(scaling)


def energy_fraction(svals: torch.Tensor) -> torch.Tensor:
    """Cumulative share of ‖ΔW‖_F² held by the first 1, 2, ... singular values."""
    sq = svals.double() ** 2
    total = sq.sum()
    return torch.cumsum(sq, 0) / total if total > 0 else torch.zeros_like(sq)


def energy_rank(svals: torch.Tensor, energy: float = 0.9) -> int:
    """How many singular values hold `energy` of the squared Frobenius norm (0 for ΔW = 0)."""
    frac = energy_fraction(svals)
    if len(frac) == 0 or frac[-1] == 0:
        return 0
    return int((frac < energy - 1e-12).sum().item()) + 1


def numerical_rank(svals: torch.Tensor, rtol: float = 1e-6) -> int:
    """Singular values above rtol × the largest: the rank of ΔW up to rounding."""
    if len(svals) == 0 or svals.max() == 0:
        return 0
    return int((svals > rtol * svals.max()).sum().item())


@dataclass
class LayerSpectrum(_NamedLayer):
    name: str
    rank: int
    scaling: float
    singular_values: torch.Tensor  # float64, largest first
    energy: float = 0.9

    @property
    def fro_norm(self) -> float:
        """‖ΔW‖_F = √(Σσᵢ²)."""
        return float(torch.sqrt((self.singular_values ** 2).sum()))

    @property
    def effective_rank(self) -> int:
        return energy_rank(self.singular_values, self.energy)


def adapter_spectra(source, energy: float = 0.9) -> list[LayerSpectrum]:
    """Per adapted layer: ΔW's singular values, Frobenius norm and effective rank (`energy` of ‖ΔW‖_F²).

    `source`: an adapter folder, a loaded PeftModel, or a list of LoraFactors."""
    factors = source if isinstance(source, list) else adapter_factors(source)
    return [LayerSpectrum(f.name, f.rank, f.scaling, delta_singular_values(f.B, f.A, f.scaling), energy)
            for f in factors]


def norm_heatmap(spectra: list[LayerSpectrum]) -> tuple[list[int], list[str], np.ndarray]:
    """(layer indices, module types, values): values[i, j] = ‖ΔW‖_F of module j in layer i, NaN where
    that module is not adapted. Layers outside the numbered blocks are left out."""
    layers = sorted({s.layer for s in spectra if s.layer is not None})
    modules = sorted({s.module for s in spectra if s.layer is not None}, key=module_sort_key)
    values = np.full((len(layers), len(modules)), np.nan)
    for s in spectra:
        if s.layer is not None:
            values[layers.index(s.layer), modules.index(s.module)] = s.fro_norm
    return layers, modules, values


def _draw_spectra(ax, spectra: list[LayerSpectrum], module: str | None, layer: int | None) -> None:
    import matplotlib
    from matplotlib import cm, colors

    if module is not None:
        chosen = [s for s in spectra if s.module == module]
        cmap = matplotlib.colormaps["viridis"]
        layers = [s.layer or 0 for s in chosen]
        norm = colors.Normalize(min(layers, default=0), max(max(layers, default=1), 1))
        for s in chosen:
            ax.plot(range(1, len(s.singular_values) + 1), s.singular_values.numpy(), marker=".", markersize=3,
                    linewidth=1, color=cmap(norm(s.layer or 0)))
        title = f"Singular values of ΔW, {module}: one line per layer (colour = layer)"
        ax.figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer", fraction=0.05, pad=0.02)
    else:
        chosen = [s for s in spectra if s.layer == layer]
        for s in chosen:
            ax.plot(range(1, len(s.singular_values) + 1), s.singular_values.numpy(), marker=".", markersize=4,
                    linewidth=1.2, label=f"{s.module} (eff. rank {s.effective_rank})")
        title = f"Singular values of ΔW, layer {layer}: one line per module"
        if chosen:
            ax.legend(fontsize=7)
    ranks = sorted({s.rank for s in chosen})
    eff = [s.effective_rank for s in chosen]
    ax.set_yscale("log")
    ax.set_xlabel(f"index i (r = {', '.join(map(str, ranks)) or '-'})")
    ax.set_ylabel("σᵢ of ΔW = B·A·scaling")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title, fontsize=9)
    if chosen:
        energy = chosen[0].energy
        ax.text(0.98, 0.97, f"effective rank ({energy:.0%} of ‖ΔW‖²_F): median {int(np.median(eff))}, "
                            f"range {min(eff)}–{max(eff)}", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})


def _draw_heatmap(ax, spectra: list[LayerSpectrum]) -> None:
    layers, modules, values = norm_heatmap(spectra)
    im = ax.imshow(values, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xticks(range(len(modules)), modules, rotation=45, ha="right", fontsize=8)
    step = max(1, len(layers) // 15)
    ax.set_yticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)], fontsize=8)
    ax.set_ylabel("layer")
    ax.set_title("‖ΔW‖_F per layer and module", fontsize=9)
    ax.figure.colorbar(im, ax=ax, label="‖ΔW‖_F", fraction=0.08, pad=0.03)


def spectra_figure(spectra: list[LayerSpectrum], module: str | None = None, layer: int | None = None) -> Figure:
    """Singular values of ΔW: one line per layer for one module type, or one line per module for one layer.
    With neither given: the first module type."""
    if module is None and layer is None:
        modules = sorted({s.module for s in spectra}, key=module_sort_key)
        module = modules[0] if modules else None
    fig = Figure(figsize=(6.4, 3.8))
    _draw_spectra(fig.subplots(), spectra, module, layer)
    return fig


def heatmap_figure(spectra: list[LayerSpectrum]) -> Figure:
    """‖ΔW‖_F as a heat map: rows = layers, columns = module types."""
    layers, _, _ = norm_heatmap(spectra)
    fig = Figure(figsize=(4.6, min(9.0, 1.8 + 0.16 * max(len(layers), 4))))
    _draw_heatmap(fig.subplots(), spectra)
    return fig


def adapter_figure(spectra: list[LayerSpectrum], module: str | None = None, layer: int | None = None,
                   title: str = "") -> Figure:
    """The spectra and the heat map side by side (one picture of a trained adapter)."""
    if module is None and layer is None:
        modules = sorted({s.module for s in spectra}, key=module_sort_key)
        module = modules[0] if modules else None
    layers, _, _ = norm_heatmap(spectra)
    fig = Figure(figsize=(11.5, max(4.2, min(7.5, 1.8 + 0.15 * len(layers)))))
    left, right = fig.subplots(1, 2, width_ratios=[1.6, 1.0])
    _draw_spectra(left, spectra, module, layer)
    _draw_heatmap(right, spectra)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# =========================================================================== quantization

BLOCKSIZE = memory.NF4_BLOCK  # bitsandbytes' default 4-bit block (what QLoRA and load_model use)
FORMATS: list[tuple[str, bool]] = [("bf16", False), ("int8", False), ("nf4", False), ("nf4", True),
                                   ("fp4", False), ("fp4", True)]
FORMAT_LABELS = {"bf16": "16-bit (bfloat16)", "int8": "8-bit LLM.int8 (row-wise)", "nf4": "4-bit NF4",
                 "fp4": "4-bit FP4"}


def format_label(fmt: str, double_quant: bool = False) -> str:
    return FORMAT_LABELS[fmt] + (" + double quant" if double_quant else "")


def code_points(quant_type: str = "nf4") -> torch.Tensor:
    """The 16 values a 4-bit code stands for, on [-1, 1], from bitsandbytes itself, in code order.

    NF4: 16 quantiles of a normal distribution, with an exact 0. FP4: a 1-2-1 sign/exponent/mantissa
    float; its +0 and -0 are the same value, so it has 15 distinct points."""
    from bitsandbytes.functional import get_4bit_type

    return get_4bit_type(quant_type, device="cpu").float()


def distinct_code_points(quant_type: str = "nf4") -> torch.Tensor:
    return torch.unique(code_points(quant_type) + 0.0)  # + 0.0 turns -0 into +0


def block_absmax(w: torch.Tensor, blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """max |w| over each run of `blocksize` weights of the flattened tensor (bitsandbytes' 4-bit blocks)."""
    flat = w.detach().reshape(-1).float()
    pad = (-flat.numel()) % blocksize
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, blocksize).abs().amax(dim=1)


def normalized_weights(w: torch.Tensor, blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """Each weight divided by its block's absmax: what the 4-bit code actually rounds (values on [-1, 1])."""
    flat = w.detach().reshape(-1).float()
    scale = block_absmax(flat, blocksize).repeat_interleave(blocksize)[: flat.numel()]
    return flat / torch.where(scale > 0, scale, torch.ones_like(scale))


@dataclass
class QuantResult:
    """One storage format applied to one weight: what is stored, and how far the dequantized weight is off."""

    fmt: str  # bf16, int8, nf4, fp4
    double_quant: bool
    numel: int
    parts: dict[str, int]  # stored tensor -> bytes (the real tensors' nbytes)
    mean_abs_error: float
    max_abs_error: float
    weight_std: float
    blocksize: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return format_label(self.fmt, self.double_quant)

    @property
    def stored_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def bits_per_param(self) -> float:
        return 8 * self.stored_bytes / self.numel

    @property
    def formula_bits(self) -> float:
        """What workbench.memory's estimator charges per parameter for this format."""
        bits = {"bf16": 16, "int8": 8}.get(self.fmt, 4)
        return memory.bits_per_param(bits, self.double_quant)

    @property
    def rel_mean_error(self) -> float:
        return self.mean_abs_error / self.weight_std if self.weight_std else float("nan")

    @property
    def rel_max_error(self) -> float:
        return self.max_abs_error / self.weight_std if self.weight_std else float("nan")

    def to_dict(self) -> dict:
        return {"format": self.label, "stored_bytes": self.stored_bytes, "bits_per_param": self.bits_per_param,
                "formula_bits_per_param": self.formula_bits, "mean_abs_error": self.mean_abs_error,
                "max_abs_error": self.max_abs_error, "mean_abs_error_rel_std": self.rel_mean_error,
                "max_abs_error_rel_std": self.rel_max_error, "parts": dict(self.parts)}


def _nbytes(t) -> int:
    return int(t.numel() * t.element_size()) if isinstance(t, torch.Tensor) else 0


@torch.no_grad()
def quantize_roundtrip(w: torch.Tensor, fmt: str, double_quant: bool = False,
                       blocksize: int = BLOCKSIZE) -> tuple[torch.Tensor, dict[str, int]]:
    """Quantize a weight with bitsandbytes and dequantize it back (on the CPU, float32).

    Returns (the dequantized weight, {stored tensor: bytes}). The 4-bit parts are those a Params4bit
    keeps and saves: the packed codes, the absmax per block and the code table; with double
    quantization the absmax is 8-bit and adds its own fp32 absmax per 256 blocks, its 256-value code
    table and one fp32 offset. LLM.int8 keeps int8 weights and one fp32 scale per output row."""
    import bitsandbytes.functional as bnbf

    w = w.detach().to("cpu", torch.float32).contiguous()
    if fmt == "bf16":
        q = w.to(torch.bfloat16)
        return q.float(), {"weights (bf16)": _nbytes(q)}
    if fmt == "int8":
        cb, scb, _ = bnbf.int8_vectorwise_quant(w.reshape(-1, w.shape[-1]).clone())  # threshold 0: no outliers
        back = bnbf.int8_vectorwise_dequant(cb, scb).reshape(w.shape).float()
        return back, {"weights (int8)": _nbytes(cb), "row scales (fp32, one per row)": _nbytes(scb)}
    if fmt not in ("nf4", "fp4"):
        raise ValueError(f"format must be one of bf16, int8, nf4, fp4; got {fmt!r}")
    packed, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type=fmt, compress_statistics=double_quant)
    back = bnbf.dequantize_4bit(packed, state).float()
    parts = {"packed 4-bit codes": _nbytes(packed), "code table (16 values)": _nbytes(state.code)}
    if state.nested:
        parts[f"absmax (8-bit, one per {blocksize})"] = _nbytes(state.absmax)
        parts[f"nested absmax (fp32, one per {state.state2.blocksize} blocks)"] = _nbytes(state.state2.absmax)
        parts["nested code table (256 values)"] = _nbytes(state.state2.code)
        parts["absmax offset"] = _nbytes(state.offset)
    else:
        parts[f"absmax (fp32, one per {blocksize})"] = _nbytes(state.absmax)
    return back, parts


@torch.no_grad()
def quant_error(w: torch.Tensor, fmt: str, double_quant: bool = False, blocksize: int = BLOCKSIZE) -> QuantResult:
    w = w.detach().to("cpu", torch.float32)
    back, parts = quantize_roundtrip(w, fmt, double_quant, blocksize)
    err = (back - w).abs()
    return QuantResult(fmt, double_quant, w.numel(), parts, float(err.mean()), float(err.max()),
                       float(w.std()), blocksize if fmt in ("nf4", "fp4") else None)


def quant_table(w: torch.Tensor, formats=None, blocksize: int = BLOCKSIZE) -> list[QuantResult]:
    """Every format (16-bit, LLM.int8, NF4 and FP4 with and without double quantization) on one weight."""
    return [quant_error(w, fmt, dq, blocksize) for fmt, dq in (formats or FORMATS)]


def quant_table_html(results: list[QuantResult], highlight: str | None = None) -> str:
    """The table the Quantization explainer shows: one row per format; `highlight` is a label to bold."""
    head = ("<tr><th>format</th><th>bytes stored</th><th>bits/param</th><th>estimator</th>"
            "<th>mean |error|</th><th>max |error|</th><th>mean / σ</th><th>max / σ</th></tr>")
    rows = []
    for r in results:
        style = " style='font-weight:bold;background:#fff3e0'" if r.label == highlight else ""
        parts = "; ".join(f"{k}: {v:,} B" for k, v in r.parts.items())
        rows.append(f"<tr{style} title='{parts}'><td>{r.label}</td><td>{r.stored_bytes:,}</td>"
                    f"<td>{r.bits_per_param:.3f}</td><td>{r.formula_bits:.3f}</td>"
                    f"<td>{r.mean_abs_error:.3g}</td><td>{r.max_abs_error:.3g}</td>"
                    f"<td>{r.rel_mean_error:.2%}</td><td>{r.rel_max_error:.2%}</td></tr>")
    return f"<table class='wb-quant-table'>{head}{''.join(rows)}</table>"


def _sample(x: torch.Tensor, limit: int = 2_000_000) -> np.ndarray:
    # a histogram of a few million points looks the same as one of all of them, and draws in a blink
    if x.numel() > limit:
        g = torch.Generator().manual_seed(0)
        x = x[torch.randint(0, x.numel(), (limit,), generator=g)]
    return x.numpy()


def quant_histogram_figure(w: torch.Tensor, quant_type: str = "nf4", name: str = "",
                           blocksize: int = BLOCKSIZE) -> Figure:
    """The layer's weights against the 4-bit code points, in two views.

    Left, the view that teaches best: every weight divided by its own block's absmax, with the 16 code
    points on [-1, 1]. That division is exactly what bitsandbytes does before rounding, so this one
    picture is true for every block at once: each weight is rounded to the nearest line, and how the
    lines sit against the bulk of the histogram (NF4 dense near 0, FP4 sparse there and packed near 0
    with one tiny step) is the whole story of the two types. The spikes at ±1 are each block's
    largest weight, which always lands exactly on an end point.
    Right, the same weights in their own units, with the code points times the median block absmax:
    the 16 values a typical block can hold. It is only true for a block of that absmax (blocks with
    larger outliers get wider-spaced points), which is why it is the second view, not the first."""
    flat = w.detach().reshape(-1).float().cpu()
    absmax = block_absmax(flat, blocksize)
    norm = normalized_weights(flat, blocksize)
    codes = distinct_code_points(quant_type).numpy()
    typical = float(absmax.median())
    fig = Figure(figsize=(11.5, 4.3))
    left, right = fig.subplots(1, 2)
    color = "#d62728" if quant_type == "nf4" else "#9467bd"
    left.hist(_sample(norm), bins=241, range=(-1.005, 1.005), color="#6baed6")
    for c in codes:
        left.axvline(c, color=color, linewidth=0.9, alpha=0.8)
    left.set_xlabel(f"weight / absmax of its block of {blocksize}")
    left.set_ylabel("weights")
    left.set_title(f"{quant_type.upper()}: {len(codes)} code points (lines) on [-1, 1]", fontsize=10)
    wn = _sample(flat)
    lim = float(np.quantile(np.abs(wn), 0.999)) * 1.15 or 1.0
    right.hist(wn, bins=200, range=(-lim, lim), color="#9ecae1")
    for c in codes * typical:
        right.axvline(c, color=color, linewidth=0.9, alpha=0.8)
    right.set_xlim(-lim, lim)
    right.set_xlabel("weight")
    right.set_title(f"weights, with code points × median block absmax ({typical:.3g})", fontsize=10)
    fig.suptitle(f"{name}  ({flat.numel():,} weights, σ = {float(flat.std()):.3g})" if name else
                 f"{flat.numel():,} weights", fontsize=11)
    fig.text(0.5, -0.02,
             f"4-bit storage keeps, per block of {blocksize} weights, the block's absmax and one of 16 codes per "
             f"weight; a weight comes back as code point × absmax. Left: weights divided by their block's absmax, "
             f"so every block shares\nthe same {len(codes)} points (each weight is rounded to the nearest line; "
             f"the spikes at ±1 are each block's largest weight). Right: the points of a typical block "
             f"(median absmax), in weight units.", ha="center", va="top", fontsize=8)
    fig.tight_layout()
    return fig
