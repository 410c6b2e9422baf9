"""What a LoRA update is. A linear layer's frozen weight W (d×k, d outputs, k inputs) is adapted by
ΔW = B·A·scaling with B (d×r) and A (r×k). `lora_geometry` / `lora_shapes_figure` draw the three
matrices to scale from the layer's shape alone (layout.ModelLayout: the config on the meta device,
no weights); `adapter_spectra` reads a trained adapter (a PEFT folder, or a loaded PeftModel) and
gives, per layer, the singular values of ΔW, its Frobenius norm and how many directions hold most of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from workbench.engine.layout import block_index, lora_params, lora_scaling

# the order module types are listed in (a Llama block's own order); others follow alphabetically
MODULE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
W_COLOR, B_COLOR, A_COLOR = "#9ecae1", "#fd8d3c", "#fdae6b"


def module_sort_key(module: str) -> tuple[int, str]:
    return (MODULE_ORDER.index(module), "") if module in MODULE_ORDER else (len(MODULE_ORDER), module)


# =========================================================================== LoRA: shapes


def lora_counts(d: int, k: int, r: int) -> dict[str, float]:
    """Parameters of W (d·k) and of its LoRA factors (B: d·r, A: r·k, together r·(d+k)), and their ratio."""
    lora = lora_params(k, d, r)
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
        ax.add_patch(
            Rectangle(
                (rect.x, rect.y), rect.width, rect.height, facecolor=colors[key], edgecolor="#333333", linewidth=0.8
            )
        )
    w, b, a = geo["W"], geo["B"], geo["A"]
    ax.text(w.x + w.width / 2, w.y + w.height / 2, labels["W"], ha="center", va="center", fontsize=10)
    ax.text(b.x + b.width / 2, b.y + b.height + pad, labels["B"], ha="center", va="top", fontsize=9)
    ax.text(a.x + a.width / 2, a.y + a.height + pad, labels["A"], ha="center", va="top", fontsize=9)
    ax.text((w.x + w.width + b.x) / 2, d / 2, "+", ha="center", va="center", fontsize=18)
    ax.text((b.x + b.width + a.x) / 2, min(d / 2, max(r, 1) / 2 + 0.06 * d), "·", ha="center", va="center", fontsize=22)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # rows run downwards, as in a matrix
    ax.set_aspect("equal")
    ax.axis("off")
    fig.text(
        0.5, 1 - 0.15 / fig_h, f"{name}: W + B·A, drawn to scale at rank r = {r}", fontsize=11, ha="center", va="top"
    )
    fig.text(
        0.5,
        0.1 / fig_h,
        f"W: d·k = {c['W']:,} parameters (frozen)    B and A: r·(d+k) = {c['BA']:,} trained\n"
        f"r(d+k)/(dk) = {c['fraction']:.2%} of W"
        + ("  (more than W itself: r is above dk/(d+k))" if c["fraction"] > 1 else ""),
        ha="center",
        va="bottom",
        fontsize=9,
    )
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
        return block_index(self.name)


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


def read_adapter(path: str | Path) -> list[LoraFactors]:
    """The factors of a PEFT LoRA adapter folder, without loading the base model: peft reads the config and
    the weights. r is read from each tensor's shape, alpha from the config (alpha_pattern too, by peft's own
    pattern rule). For a DoRA adapter these are its direction update only (its per-row magnitudes are not
    part of B·A)."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights
    from peft.utils.other import get_pattern_key

    path = Path(path)
    # checked here: given a folder without weights, peft would look for them on the hub
    if not (path / "adapter_config.json").is_file() or not any(
        (path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")
    ):
        raise ValueError(
            f"adapter: {path} is not a PEFT adapter folder (it needs adapter_config.json and adapter_model.safetensors)"
        )
    cfg = PeftConfig.from_pretrained(str(path))
    if str(cfg.peft_type).rsplit(".", 1)[-1].upper() != "LORA":
        raise ValueError(f"adapter: {path} holds a {cfg.peft_type} adapter, not LoRA")
    tensors = load_peft_weights(str(path), device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = value
    alpha_pattern = getattr(cfg, "alpha_pattern", None) or {}
    out = []
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            continue
        r = int(ab["A"].shape[0])
        alpha = float(alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), cfg.lora_alpha))
        out.append(LoraFactors(module, ab["A"].float(), ab["B"].float(), lora_scaling(alpha, r, cfg.use_rslora)))
    if not out:
        raise ValueError(f"adapter: no LoRA factors (lora_A/lora_B weights) in {path}")
    return _sorted(out)


def uses_dora(path: str | Path) -> bool:
    """Whether a saved adapter is DoRA (its per-row magnitudes are not part of B·A)."""
    from peft import PeftConfig

    return bool(getattr(PeftConfig.from_pretrained(str(path)), "use_dora", False))


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
            clean = name[len("base_model.model.") :] if name.startswith("base_model.model.") else name
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
        return float(torch.sqrt((self.singular_values**2).sum()))

    @property
    def effective_rank(self) -> int:
        return energy_rank(self.singular_values, self.energy)


def adapter_spectra(source, energy: float = 0.9) -> list[LayerSpectrum]:
    """Per adapted layer: ΔW's singular values, Frobenius norm and effective rank (`energy` of ‖ΔW‖_F²).

    `source`: an adapter folder, a loaded PeftModel, or a list of LoraFactors."""
    factors = source if isinstance(source, list) else adapter_factors(source)
    return [
        LayerSpectrum(f.name, f.rank, f.scaling, delta_singular_values(f.B, f.A, f.scaling), energy) for f in factors
    ]


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
            ax.plot(
                range(1, len(s.singular_values) + 1),
                s.singular_values.numpy(),
                marker=".",
                markersize=3,
                linewidth=1,
                color=cmap(norm(s.layer or 0)),
            )
        title = f"Singular values of ΔW, {module}: one line per layer (colour = layer)"
        ax.figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer", fraction=0.05, pad=0.02)
    else:
        chosen = [s for s in spectra if s.layer == layer]
        for s in chosen:
            ax.plot(
                range(1, len(s.singular_values) + 1),
                s.singular_values.numpy(),
                marker=".",
                markersize=4,
                linewidth=1.2,
                label=f"{s.module} (eff. rank {s.effective_rank})",
            )
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
        ax.text(
            0.98,
            0.97,
            f"effective rank ({energy:.0%} of ‖ΔW‖²_F): median {int(np.median(eff))}, range {min(eff)}–{max(eff)}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )


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


def adapter_figure(
    spectra: list[LayerSpectrum], module: str | None = None, layer: int | None = None, title: str = ""
) -> Figure:
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
