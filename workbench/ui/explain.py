"""The LoRA explainer: a layer's update drawn to scale as the rank moves, and a trained adapter taken
apart. The numbers and figures are workbench.engine.explain's; the quantization explainer is in ui/quant.py.

    from workbench.ui.explain import LoraExplainer
    LoraExplainer()      # the shapes need only the model's config; trained adapters are read from runs/
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from workbench.core.config import VARIANTS, LoraSettings
from workbench.engine import explain
from workbench.engine.layout import Linear, block_index
from workbench.records import runs, scan
from workbench.ui.adapter import RANKS
from workbench.ui.common import WIDE, Quiet, error_html, helped, image, layer_dropdown, message, png
from workbench.ui.state import AppState, model_layout

NO_ADAPTER = "(no trained adapter yet)"


def layer_options(linears: list[Linear]) -> list[tuple[str, str]]:
    """Dropdown entries for linear layers: 'name (d×k)' -> name."""
    return [(f"{lin.name}  ({lin.d}×{lin.k})", lin.name) for lin in linears]


def default_layer(names: list[str]) -> str | None:
    """A layer in the middle of the model (the first and last blocks are often atypical): its
    mlp.down_proj when there is one, else its first linear layer."""
    if not names:
        return None
    indices = sorted({i for i in (block_index(n) for n in names) if i is not None})
    if not indices:
        return names[0]
    mid = indices[len(indices) // 2]
    in_mid = [n for n in names if block_index(n) == mid]
    return next((n for n in in_mid if n.endswith("mlp.down_proj")), in_mid[0])


def runs_with_adapters(root: Path) -> list[Path]:
    """Run folders under root (newest first) that saved at least one adapter."""
    return [r.path for r in scan.find_runs(root) if r.trained_variants()]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# =========================================================================== LoRA


class LoraExplainer(widgets.VBox):
    """W beside B and A to scale as the rank moves; a trained adapter's singular values and ‖ΔW‖ heat map."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        cfg = self.state.config
        self.model_info = widgets.HTML()
        self.layer = layer_dropdown("One of the model's linear layers (W is out × in: d rows, k columns)")
        self.rank = helped(
            widgets.SelectionSlider(
                options=sorted(set(RANKS) | {cfg.lora.rank}),
                value=cfg.lora.rank,
                description="Rank r",
                continuous_update=False,
            ),
            LoraSettings,
            "rank",
        )
        self.counts = widgets.HTML()
        self.shape_image = image()
        self.run = widgets.Dropdown(
            description="Run",
            layout=widgets.Layout(width="520px"),
            tooltip="A finished run whose adapters to take apart (newest first)",
        )
        self.run.style.description_width = "150px"
        self.variant = widgets.ToggleButtons(
            options=[("LoRA", "lora"), ("QLoRA", "qlora")],
            value="lora",
            description="Adapter",
            tooltip="Which of the run's adapters: trained on the 16-bit or the 4-bit base",
        )
        self.variant.style.description_width = "150px"
        self.spectra_of = widgets.Dropdown(
            description="Spectra of",
            layout=WIDE,
            tooltip="One module type in every layer, or every module of one layer",
        )
        self.spectra_of.style.description_width = "150px"
        self.refresh_button = widgets.Button(
            description="Refresh runs",
            icon="refresh",
            tooltip="Look for runs with adapters under the runs folder again",
        )
        self.trained_info = widgets.HTML()
        self.spectra_image = image()
        self.heatmap_image = image()
        super().__init__(
            [
                widgets.HTML(
                    "<b>LoRA, to scale</b>: a layer's frozen W (d×k) and the two factors LoRA trains, "
                    "B (d×r) and A (r×k); ΔW = B·A·alpha/r has rank at most r"
                ),
                self.model_info,
                self.layer,
                self.rank,
                self.counts,
                self.shape_image,
                widgets.HTML(
                    "<b>A trained adapter</b>: the singular values of each layer's ΔW (how many "
                    "directions it really uses) and its size ‖ΔW‖_F per layer and module"
                ),
                widgets.HBox([self.run, self.refresh_button]),
                self.variant,
                self.spectra_of,
                self.trained_info,
                widgets.HBox([self.spectra_image, self.heatmap_image], layout=widgets.Layout(flex_flow="row wrap")),
            ]
        )
        self.add_class("wb-explain-lora")
        self.shapes: dict[str, tuple[int, int]] = {}  # full name -> (d, k)
        self.spectra: list[explain.LayerSpectrum] = []
        self.adapter_source = None
        self._shown_model: str | None = None
        self._quiet = Quiet()
        self.layer.observe(lambda _: self._quiet or self.draw_shapes(), "value")
        self.rank.observe(lambda _: self._quiet or self.draw_shapes(), "value")
        self.run.observe(lambda _: self._quiet or self.show_run(), "value")
        self.variant.observe(lambda _: self._quiet or self.show_run(), "value")
        self.spectra_of.observe(lambda _: self._quiet or self.draw_trained(), "value")
        self.refresh_button.on_click(lambda _: self.refresh_runs())
        self.state.subscribe(self._on_state)
        self._load_layers()
        self.refresh_runs()

    # ------------------------------------------------------------------ shapes

    def _load_layers(self) -> None:
        name = self.state.config.model.name
        self._shown_model = name
        try:
            layout = model_layout(name)  # the config on the meta device: no weights
        except ValueError as exc:
            self.model_info.value = error_html(exc)
            self.shapes = {}
            with self._quiet():
                self.layer.options = []
            self.shape_image.value = b""
            self.counts.value = ""
            return
        self.model_info.value = message("info", f"{Path(name).name}: {layout.describe()}.")
        self.shapes = {lin.name: (lin.d, lin.k) for lin in layout.linears}
        with self._quiet():
            self.layer.options = layer_options(layout.linears)
            self.layer.value = default_layer(list(self.shapes))
        self.draw_shapes()

    def draw_shapes(self) -> None:
        name = self.layer.value
        if name is None:
            return
        d, k, r = *self.shapes[name], self.rank.value
        c = explain.lora_counts(d, k, r)
        self.counts.value = (
            f"<div class='wb-lora-counts'>W: d·k = {d}·{k} = <b>{c['W']:,}</b> frozen · B and A: r·(d+k) = "
            f"{r}·({d}+{k}) = <b>{c['BA']:,}</b> trained · r(d+k)/(dk) = <b>{c['fraction']:.2%}</b>"
            + (" (more than W: at this rank LoRA saves nothing here)" if c["fraction"] > 1 else "")
            + "</div>"
        )
        self.shape_image.value = png(explain.lora_shapes_figure(name, d, k, r))

    # ------------------------------------------------------------------ trained adapters

    def _on_state(self, what: str) -> None:
        if what == "config" and self.state.config.model.name != self._shown_model:
            self._load_layers()
        elif what in ("run", "runs"):
            self.refresh_runs()

    def refresh_runs(self) -> None:
        found = runs_with_adapters(self.state.runs_dir)
        last = self.state.last_run
        keep = self.run.value if self.run.value in found else (last if last in found else None)
        with self._quiet():
            self.run.options = [(_rel(p, self.state.runs_dir), p) for p in found] or [(NO_ADAPTER, None)]
            self.run.value = keep or (found[0] if found else None)
        self.show_run()

    def show_run(self) -> None:
        run = self.run.value
        if run is None:
            self.spectra, self.adapter_source = [], None
            self.spectra_image.value = self.heatmap_image.value = b""
            self.trained_info.value = message(
                "info",
                f"No run with a saved adapter under {self.state.runs_dir.resolve()} yet: train LoRA or "
                "QLoRA in the Train tab (or `workbench compare`), then press Refresh runs.",
            )
            return
        saved = runs.Run(run)
        have = saved.trained_variants()
        with self._quiet():
            self.variant.options = [(VARIANTS[v].short, v) for v in have]
            if self.variant.value not in have:
                self.variant.value = have[0]
        self.show_adapter(saved.adapter_dir(self.variant.value), f"{run.name} · {VARIANTS[self.variant.value].title}")

    def show_adapter(self, source, title: str = "") -> bool:
        """Take apart an adapter folder or a loaded PeftModel. False, with the reason shown, when it cannot."""
        try:
            spectra = explain.adapter_spectra(source)
        except (ValueError, OSError) as exc:
            self.spectra = []
            self.spectra_image.value = self.heatmap_image.value = b""
            self.trained_info.value = error_html(exc)
            return False
        self.spectra, self.adapter_source = spectra, source
        modules = sorted({s.module for s in spectra}, key=explain.module_sort_key)
        layers = sorted({s.layer for s in spectra if s.layer is not None})
        options = [(f"{m} (every layer)", f"module:{m}") for m in modules]
        options += [(f"layer {i} (every module)", f"layer:{i}") for i in layers]
        with self._quiet():
            keep = self.spectra_of.value
            self.spectra_of.options = options
            self.spectra_of.value = keep if keep in dict((v, k) for k, v in options) else options[0][1]
        ranks = sorted({s.rank for s in spectra})
        scalings = sorted({round(s.scaling, 4) for s in spectra})
        eff = sorted(s.effective_rank for s in spectra)
        label = title or (str(source) if isinstance(source, (str, Path)) else type(source).__name__)
        dora = ""
        if isinstance(source, (str, Path)) and explain.uses_dora(source):
            dora = (
                " DoRA adapter: shown is its direction update B·A·scaling; the learned per-row "
                "magnitudes it also applies are not included."
            )
        self.trained_info.value = message(
            "ok",
            f"{label}: {len(spectra)} adapted layers, r = {', '.join(map(str, ranks))}, scaling "
            f"{', '.join(map(str, scalings))}. Effective rank (singular values holding 90% of ‖ΔW‖²_F): "
            f"median {eff[len(eff) // 2]}, range {eff[0]}–{eff[-1]}.{dora}",
        )
        self.draw_trained()
        return True

    def draw_trained(self) -> None:
        if not self.spectra or not self.spectra_of.value:
            return
        kind, _, what = self.spectra_of.value.partition(":")
        fig = (
            explain.spectra_figure(self.spectra, module=what)
            if kind == "module"
            else explain.spectra_figure(self.spectra, layer=int(what))
        )
        self.spectra_image.value = png(fig)
        self.heatmap_image.value = png(explain.heatmap_figure(self.spectra))
