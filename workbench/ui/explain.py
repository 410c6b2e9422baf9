"""Explainers for teaching: LoRA's low-rank update drawn to scale (and a trained one taken apart), and
what 4- and 8-bit storage does to one layer's weights. The numbers and figures are workbench.explain's.

    from workbench.ui.explain import LoraExplainer, QuantExplainer
    LoraExplainer()      # the shapes need only the model's config; trained adapters are read from runs/
    QuantExplainer()     # loads the 16-bit model on first use, in the background
"""

from __future__ import annotations

import html
import threading
from pathlib import Path

import ipywidgets as widgets

from .. import explain, models, runs
from ..config import VARIANTS, LoraSettings, QuantSettings
from ..layout import Linear, block_index
from ..resolve import resolve_model
from .adapter import RANKS
from .common import WIDE, Quiet, error_html, helped, image, message, png
from .state import AppState, model_layout

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
    return [r.path for r in runs.find_runs(root) if r.trained_variants()]


def quant_table_html(results: list[explain.QuantResult], highlight: str | None = None) -> str:
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
        self.layer = widgets.Dropdown(description="Layer", layout=WIDE,
                                      tooltip="One of the model's linear layers (W is out × in: d rows, k columns)")
        self.layer.style.description_width = "150px"
        self.rank = helped(widgets.SelectionSlider(options=sorted(set(RANKS) | {cfg.lora.rank}), value=cfg.lora.rank,
                                                   description="Rank r", continuous_update=False),
                           LoraSettings, "rank")
        self.counts = widgets.HTML()
        self.shape_image = image()
        self.run = widgets.Dropdown(description="Run", layout=widgets.Layout(width="520px"),
                                    tooltip="A finished run whose adapters to take apart (newest first)")
        self.run.style.description_width = "150px"
        self.variant = widgets.ToggleButtons(options=[("LoRA", "lora"), ("QLoRA", "qlora")], value="lora",
                                             description="Adapter",
                                             tooltip="Which of the run's adapters: trained on the 16-bit or "
                                                     "the 4-bit base")
        self.variant.style.description_width = "150px"
        self.spectra_of = widgets.Dropdown(description="Spectra of", layout=WIDE,
                                           tooltip="One module type in every layer, or every module of one layer")
        self.spectra_of.style.description_width = "150px"
        self.refresh_button = widgets.Button(description="Refresh runs", icon="refresh",
                                             tooltip="Look for runs with adapters under the runs folder again")
        self.trained_info = widgets.HTML()
        self.spectra_image = image()
        self.heatmap_image = image()
        super().__init__([
            widgets.HTML("<b>LoRA, to scale</b>: a layer's frozen W (d×k) and the two factors LoRA trains, "
                         "B (d×r) and A (r×k); ΔW = B·A·alpha/r has rank at most r"),
            self.model_info, self.layer, self.rank, self.counts, self.shape_image,
            widgets.HTML("<b>A trained adapter</b>: the singular values of each layer's ΔW (how many "
                         "directions it really uses) and its size ‖ΔW‖_F per layer and module"),
            widgets.HBox([self.run, self.refresh_button]), self.variant, self.spectra_of, self.trained_info,
            widgets.HBox([self.spectra_image, self.heatmap_image], layout=widgets.Layout(flex_flow="row wrap")),
        ])
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
            + (" (more than W: at this rank LoRA saves nothing here)" if c["fraction"] > 1 else "") + "</div>")
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
                "info", f"No run with a saved adapter under {self.state.runs_dir.resolve()} yet: train LoRA or "
                        "QLoRA in the Train tab (or `workbench compare`), then press Refresh runs.")
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
            dora = (" DoRA adapter: shown is its direction update B·A·scaling; the learned per-row "
                        "magnitudes it also applies are not included.")
        self.trained_info.value = message(
            "ok", f"{label}: {len(spectra)} adapted layers, r = {', '.join(map(str, ranks))}, scaling "
                  f"{', '.join(map(str, scalings))}. Effective rank (singular values holding 90% of ‖ΔW‖²_F): "
                  f"median {eff[len(eff) // 2]}, range {eff[0]}–{eff[-1]}.{dora}")
        self.draw_trained()
        return True

    def draw_trained(self) -> None:
        if not self.spectra or not self.spectra_of.value:
            return
        kind, _, what = self.spectra_of.value.partition(":")
        fig = (explain.spectra_figure(self.spectra, module=what) if kind == "module"
               else explain.spectra_figure(self.spectra, layer=int(what)))
        self.spectra_image.value = png(fig)
        self.heatmap_image.value = png(explain.heatmap_figure(self.spectra))


# =========================================================================== quantization


class QuantExplainer(widgets.VBox):
    """One layer's weights against the NF4/FP4 code points, and every storage format's error and real size.

    The 16-bit model loads once, on first use, in the background (a few seconds for the embedded model);
    after that a layer is analysed in well under a second."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        cfg = self.state.config
        self.model_info = widgets.HTML()
        self.layer = widgets.Dropdown(description="Layer", layout=WIDE,
                                      tooltip="One of the model's linear layers: the ones 4- and 8-bit loading "
                                              "quantizes")
        self.layer.style.description_width = "150px"
        self.quant_type = helped(widgets.ToggleButtons(options=[("NF4", "nf4"), ("FP4", "fp4")],
                                                       value=cfg.quant.quant_type, description="4-bit type"),
                                 QuantSettings, "quant_type")
        self.double_quant = helped(widgets.Checkbox(value=cfg.quant.double_quant, description="Double quantization"),
                                   QuantSettings, "double_quant")
        self.analyse_button = widgets.Button(description="Analyse", icon="search", button_style="primary",
                                             tooltip="Quantize this layer in every format and compare (loads the "
                                                     "16-bit model the first time)")
        self.status = widgets.HTML(message("info", "The 16-bit model loads on first use (press Analyse or pick "
                                                   "a layer); it runs in the background."))
        self.figure = image()
        self.figure.layout.max_width = "900px"
        self.table = widgets.HTML()
        self.parts = widgets.HTML()
        super().__init__([
            widgets.HTML("<b>Quantization, one layer</b>: what 4-bit (NF4/FP4, blocks of 64) and 8-bit "
                         "(LLM.int8, per row) storage keep of the weights, and what it costs"),
            self.model_info, self.layer, self.quant_type, self.double_quant, self.analyse_button, self.status,
            self.figure, self.table, self.parts,
        ])
        self.add_class("wb-explain-quant")
        self.model = None
        self.results: dict[str, list[explain.QuantResult]] = {}  # layer -> every format (cached)
        self._shown_model: str | None = None
        self._loading = False
        self._lock = threading.Lock()
        self._quiet = Quiet()
        for w in (self.layer, self.quant_type, self.double_quant):
            w.observe(self._on_change, "value")
        self.analyse_button.on_click(lambda _: self.analyse())
        self.state.subscribe(self._on_state)
        self._load_layers()

    def _load_layers(self) -> None:
        name = self.state.config.model.name
        self._shown_model = name
        self.release()
        try:
            layout = model_layout(name)
        except ValueError as exc:
            self.model_info.value = error_html(exc)
            with self._quiet():
                self.layer.options = []
            return
        self.model_info.value = message("info", f"{Path(name).name}: {layout.describe()}.")
        with self._quiet():
            self.layer.options = layer_options(layout.linears)
            self.layer.value = default_layer([lin.name for lin in layout.linears])

    def _on_state(self, what: str) -> None:
        if what == "config" and self.state.config.model.name != self._shown_model:
            self._load_layers()
            self.figure.value = b""
            self.table.value = self.parts.value = ""
            self.status.value = message("info", "Model changed: press Analyse to load it.")

    def _on_change(self, change) -> None:
        if not self._quiet:
            self.analyse()

    # ------------------------------------------------------------------ work

    def analyse(self) -> str | None:
        """Show the chosen layer; loads the model first (in the background) when it is not loaded yet.
        Returns the reason when it cannot start (also shown)."""
        if self.layer.value is None:
            return None
        if self.model is not None:
            try:
                self._show()
            except Exception as exc:  # noqa: BLE001 - shown, never lost
                import traceback

                self.status.value = error_html(exc, traceback.format_exc())
            return None
        if self._loading:
            return None  # the loading job shows whatever is chosen when it finishes

        def work() -> None:
            self._load_model()
            self._show()

        def failed(exc: BaseException, details: str) -> None:
            self.status.value = error_html(exc, details)

        def done() -> None:
            self._loading = False

        self._loading = True
        refused = self.state.jobs.start("loading the 16-bit model", work, on_error=failed, on_done=done)
        if refused:
            self._loading = False
            self.status.value = message("warn", refused)
            return refused
        return None

    def _load_model(self) -> None:
        import psutil

        name = self.state.config.model.name
        need = model_layout(name).total_params * 4  # float32 on the CPU
        free = psutil.virtual_memory().available
        if need > 0.8 * free:
            raise ValueError(f"model: {Path(name).name} needs about {need / 1024**3:.1f} GiB as float32 and only "
                             f"{free / 1024**3:.1f} GiB is free; pick a smaller model for this explainer")
        self.status.value = message("info", f"loading {Path(name).name} unquantized on the CPU (once; float32 "
                                            "there)…")
        model, _ = models.load_model(resolve_model(name), bits=16, device="cpu")
        model.requires_grad_(False)
        self.model = model
        self.status.value = message("ok", f"{Path(name).name} loaded.")

    def release(self) -> None:
        """Drop the loaded model and the cached results (it loads again on the next use)."""
        with self._lock:
            self.model, self.results = None, {}

    def weight(self, layer: str):
        return self.model.get_submodule(layer).weight.detach()

    def _show(self) -> None:
        with self._lock:  # the loading job and a widget change may both get here; the values read are current
            layer, qt, dq = self.layer.value, self.quant_type.value, self.double_quant.value
            w = self.weight(layer)
            if layer not in self.results:
                self.results[layer] = explain.quant_table(w)
            results = self.results[layer]
            chosen = explain.format_label(qt, dq)
            self.figure.value = png(explain.quant_histogram_figure(w, qt, layer))
            self.table.value = quant_table_html(results, highlight=chosen)
            sel = next(r for r in results if r.label == chosen)
            self.parts.value = (f"<div class='wb-quant-parts'><b>{html.escape(chosen)}</b> stores: "
                                + " · ".join(f"{html.escape(k)} {v:,} B" for k, v in sel.parts.items())
                                + f" = {sel.stored_bytes:,} B for {sel.numel:,} weights = "
                                  f"{sel.bits_per_param:.3f} bits each; the memory estimator charges "
                                  f"{sel.formula_bits:.3f} (it leaves out the code tables, about 1 KiB per layer "
                                  "with double quantization, and counts LLM.int8's row scales separately)."
                                  "</div>")
            self.status.value = message("ok", f"{layer}: {tuple(w.shape)[0]}×{tuple(w.shape)[1]}, "
                                              f"quantized with bitsandbytes on the CPU and dequantized back.")
