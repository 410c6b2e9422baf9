"""What 4- and 8-bit storage does to a weight. `quant_table` quantizes one weight with bitsandbytes
itself (the kernels the 4- and 8-bit models use) in every format, dequantizes it back and reports the
error and the bytes really stored; `quant_histogram_figure` shows the weights against the 16 code
points of NF4 or FP4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure

from workbench.engine.estimator import NF4_BLOCK, bits_per_param

BLOCKSIZE = NF4_BLOCK  # bitsandbytes' default 4-bit block (what QLoRA and load_model use)
FORMATS: list[tuple[str, bool]] = [
    ("bf16", False),
    ("int8", False),
    ("nf4", False),
    ("nf4", True),
    ("fp4", False),
    ("fp4", True),
]
FORMAT_LABELS = {
    "bf16": "16-bit (bfloat16)",
    "int8": "8-bit LLM.int8 (row-wise)",
    "nf4": "4-bit NF4",
    "fp4": "4-bit FP4",
}


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
        """What workbench.machine.memory's estimator charges per parameter for this format."""
        bits = {"bf16": 16, "int8": 8}.get(self.fmt, 4)
        return bits_per_param(bits, self.double_quant)

    @property
    def rel_mean_error(self) -> float:
        return self.mean_abs_error / self.weight_std if self.weight_std else float("nan")

    @property
    def rel_max_error(self) -> float:
        return self.max_abs_error / self.weight_std if self.weight_std else float("nan")

    def to_dict(self) -> dict:
        return {
            "format": self.label,
            "stored_bytes": self.stored_bytes,
            "bits_per_param": self.bits_per_param,
            "formula_bits_per_param": self.formula_bits,
            "mean_abs_error": self.mean_abs_error,
            "max_abs_error": self.max_abs_error,
            "mean_abs_error_rel_std": self.rel_mean_error,
            "max_abs_error_rel_std": self.rel_max_error,
            "parts": dict(self.parts),
        }


def _nbytes(t) -> int:
    return int(t.numel() * t.element_size()) if isinstance(t, torch.Tensor) else 0


@torch.no_grad()
def quantize_roundtrip(
    w: torch.Tensor, fmt: str, double_quant: bool = False, blocksize: int = BLOCKSIZE
) -> tuple[torch.Tensor, dict[str, int]]:
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
    return QuantResult(
        fmt,
        double_quant,
        w.numel(),
        parts,
        float(err.mean()),
        float(err.max()),
        float(w.std()),
        blocksize if fmt in ("nf4", "fp4") else None,
    )


def quant_table(w: torch.Tensor, formats=None, blocksize: int = BLOCKSIZE) -> list[QuantResult]:
    """Every format (16-bit, LLM.int8, NF4 and FP4 with and without double quantization) on one weight."""
    return [quant_error(w, fmt, dq, blocksize) for fmt, dq in (formats or FORMATS)]


def _sample(x: torch.Tensor, limit: int = 2_000_000) -> np.ndarray:
    # a histogram of a few million points looks the same as one of all of them, and draws in a blink
    if x.numel() > limit:
        g = torch.Generator().manual_seed(0)
        x = x[torch.randint(0, x.numel(), (limit,), generator=g)]
    return x.numpy()


def quant_histogram_figure(
    w: torch.Tensor, quant_type: str = "nf4", name: str = "", blocksize: int = BLOCKSIZE
) -> Figure:
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
    fig.suptitle(
        f"{name}  ({flat.numel():,} weights, σ = {float(flat.std()):.3g})" if name else f"{flat.numel():,} weights",
        fontsize=11,
    )
    fig.text(
        0.5,
        -0.02,
        f"4-bit storage keeps, per block of {blocksize} weights, the block's absmax and one of 16 codes per "
        f"weight; a weight comes back as code point × absmax. Left: weights divided by their block's absmax, "
        f"so every block shares\nthe same {len(codes)} points (each weight is rounded to the nearest line; "
        f"the spikes at ±1 are each block's largest weight). Right: the points of a typical block "
        f"(median absmax), in weight units.",
        ha="center",
        va="top",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
