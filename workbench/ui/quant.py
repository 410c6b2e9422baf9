"""The quantization explainer: one layer's weights against the NF4/FP4 code points, and every storage
format's error and real size, computed with bitsandbytes itself (workbench.engine.explain.quant); below it
the whole model's gap before training, each format really loaded (workbench.engine.explain.gap).

    from workbench.ui.quant import QuantExplainer
    QuantExplainer()     # loads the 16-bit model on first use, in the background
"""

from __future__ import annotations

import html
import threading
from pathlib import Path

import ipywidgets as widgets

from workbench.core.events import Hooks
from workbench.engine import explain, models
from workbench.engine.resolve import resolve_model
from workbench.ui.common import Quiet, error_html, image, layer_dropdown, message, png, quant_controls
from workbench.ui.explain import default_layer, layer_options
from workbench.ui.state import AppState, model_layout


def quant_table_html(results: list[explain.QuantResult], highlight: str | None = None) -> str:
    """The table the Quantization explainer shows: one row per format; `highlight` is a label to bold."""
    head = (
        "<tr><th>format</th><th>bytes stored</th><th>bits/param</th><th>estimator</th>"
        "<th>mean |error|</th><th>max |error|</th><th>mean / σ</th><th>max / σ</th></tr>"
    )
    rows = []
    for r in results:
        style = " style='font-weight:bold;background:#fff3e0'" if r.label == highlight else ""
        parts = "; ".join(f"{k}: {v:,} B" for k, v in r.parts.items())
        rows.append(
            f"<tr{style} title='{parts}'><td>{r.label}</td><td>{r.stored_bytes:,}</td>"
            f"<td>{r.bits_per_param:.3f}</td><td>{r.formula_bits:.3f}</td>"
            f"<td>{r.mean_abs_error:.3g}</td><td>{r.max_abs_error:.3g}</td>"
            f"<td>{r.rel_mean_error:.2%}</td><td>{r.rel_max_error:.2%}</td></tr>"
        )
    return f"<table class='wb-quant-table'>{head}{''.join(rows)}</table>"


def _ci(ci, digits: int = 3) -> str:
    return f" <small>[{ci.low:.{digits}f}, {ci.high:.{digits}f}]</small>" if ci is not None else ""


def gap_table_html(report: explain.GapReport) -> str:
    """The whole model's gap: one row per format (and per format with the init's start), intervals beside."""
    head = (
        "<tr><th>format</th><th>weight error</th><th>eval loss [95%]</th>"
        "<th>vs 16-bit, paired [95%]</th><th>KL from 16-bit [95%]</th></tr>"
    )
    rows = []
    for r in report.rows:
        ref = r.fmt == "16-bit"
        style = " style='background:#e8f5e9'" if r.init else ""
        rows.append(
            f"<tr{style}><td>{html.escape(r.label)}</td>"
            f"<td>{'&ndash;' if ref else f'{r.total_rel_error:.2%}'}</td>"
            f"<td>{r.loss:.3f}{_ci(r.loss_ci)}</td>"
            f"<td>{'&ndash;' if ref else f'{r.loss_diff:+.3f}{_ci(r.loss_diff_ci)}'}</td>"
            f"<td>{'&ndash;' if ref else f'{r.kl:.4f}{_ci(r.kl_ci, 4)}'}</td></tr>"
        )
    return f"<table class='wb-gap-table'>{head}{''.join(rows)}</table>"


def gap_notes_html(report: explain.GapReport) -> str:
    lines = [
        f"{report.examples} eval examples of the task, teacher-forced on prompt + answer, in "
        f"{report.seconds:.0f} s. Weight error: ||W &minus; dequant(Q(W))|| / ||W|| over every quantized layer; "
        "eval loss in nats per answer token; KL of the next-token distribution at the answer tokens, in nats. "
        "The difference is paired (the same examples), so it is surer than the two losses' own intervals suggest."
    ]
    lines += [html.escape(n) for n in report.notes]
    lines += [f"{html.escape(r.key)}: {html.escape(n)}" for r in report.rows for n in r.notes]
    return "<div class='wb-gap-notes'>" + "<br>".join(lines) + "</div>"


class QuantExplainer(widgets.VBox):
    """One layer's weights against the NF4/FP4 code points, and every storage format's error and real size.

    The 16-bit model loads once, on first use, in the background (a few seconds for the embedded model);
    after that a layer is analysed in well under a second."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        cfg = self.state.config
        self.model_info = widgets.HTML()
        self.layer = layer_dropdown("One of the model's linear layers: the ones 4- and 8-bit loading quantizes")
        self.quant_type, self.double_quant = quant_controls(cfg.quant)
        self.analyse_button = widgets.Button(
            description="Analyse",
            icon="search",
            button_style="primary",
            tooltip="Quantize this layer in every format and compare (loads the 16-bit model the first time)",
        )
        self.status = widgets.HTML(
            message(
                "info",
                "The 16-bit model loads on first use (press Analyse or pick a layer); it runs in the background.",
            )
        )
        self.figure = image()
        self.figure.layout.max_width = "900px"
        self.table = widgets.HTML()
        self.parts = widgets.HTML()
        self.gap_box = self._gap_section()
        super().__init__(
            [
                widgets.HTML(
                    "<b>Quantization, one layer</b>: what 4-bit (NF4/FP4, blocks of 64) and 8-bit "
                    "(LLM.int8, per row) storage keep of the weights, and what it costs"
                ),
                self.model_info,
                self.layer,
                self.quant_type,
                self.double_quant,
                self.analyse_button,
                self.status,
                self.figure,
                self.table,
                self.parts,
                self.gap_box,
            ]
        )
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
        self.gap_button.on_click(lambda _: self.measure_gap())
        self.gap_report: explain.GapReport | None = None
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
            self._clear_gap()

    def _on_change(self, change) -> None:
        if not self._quiet:
            self.analyse()

    def _gap_section(self) -> widgets.VBox:
        self.gap_examples = widgets.BoundedIntText(
            value=explain.DEFAULT_EXAMPLES,
            min=1,
            max=10_000,
            description="examples",
            tooltip="Eval examples of the task to score: more narrows the intervals and costs time",
        )
        self.gap_button = widgets.Button(
            description="Measure the gap",
            icon="balance-scale",
            button_style="primary",
            tooltip="Load the model at 8 bits and at 4 bits (NF4, FP4, with and without double quantization), one "
            "at a time, and compare each with the 16-bit model on the task's eval examples (in the background)",
        )
        self.gap_status = widgets.HTML()
        self.gap_table = widgets.HTML()
        self.gap_figure = image()
        self.gap_figure.layout.max_width = "900px"
        self.gap_notes = widgets.HTML()
        box = widgets.VBox(
            [
                widgets.HTML(
                    "<b>Quantization, the whole model</b>: what each format costs before any training: every "
                    "quantized layer's weight error, the starting eval loss and how far the next-token distribution "
                    "moves from the 16-bit model's (with the Adapter tab's init, if not gaussian, at step 0)"
                ),
                widgets.HBox([self.gap_examples, self.gap_button]),
                self.gap_status,
                self.gap_table,
                self.gap_figure,
                self.gap_notes,
            ]
        )
        box.add_class("wb-quant-gap")
        return box

    def _clear_gap(self) -> None:
        self.gap_report = None
        self.gap_table.value = self.gap_notes.value = self.gap_status.value = ""
        self.gap_figure.value = b""

    def measure_gap(self) -> str | None:
        """Measure the gap of every format (and the init's step 0) in the background; show it when done.
        Returns the reason when it cannot start (also shown)."""
        cfg = self.state.config
        asked = self.gap_examples.value
        examples = None if asked == explain.DEFAULT_EXAMPLES else asked  # the default: up to 32, fewer if fewer
        init = cfg.lora.init

        def say(text: str) -> None:
            self.gap_status.value = message("info", html.escape(text) + "…")

        def work() -> None:
            report = explain.gap_for_config(cfg, examples, hooks=Hooks(on_status=say))
            self.gap_report = report
            self.gap_table.value = gap_table_html(report)
            self.gap_figure.value = png(explain.gap_figure(report))
            self.gap_notes.value = gap_notes_html(report)
            with_init = f", with {init} at step 0" if init != "gaussian" else ""
            self.gap_status.value = message(
                "ok", f"{Path(cfg.model.name).name}: {len(report.rows) - 1} formats measured{with_init}."
            )

        def failed(exc: BaseException, details: str) -> None:
            self.gap_status.value = error_html(exc, details)

        self._clear_gap()
        self.gap_status.value = message("info", "measuring the gap in the background…")
        refused = self.state.jobs.start("measuring the gap", work, on_error=failed)
        if refused:
            self.gap_status.value = message("warn", refused)
        return refused

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
            raise ValueError(
                f"model: {Path(name).name} needs about {need / 1024**3:.1f} GiB as float32 and only "
                f"{free / 1024**3:.1f} GiB is free; pick a smaller model for this explainer"
            )
        self.status.value = message("info", f"loading {Path(name).name} unquantized on the CPU (once; float32 there)…")
        # float32: the weights as the checkpoint stores them (the embedded one's), before any rounding
        model, _ = models.load_model(resolve_model(name), bits=16, device="cpu", dtype="float32")
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
            self.parts.value = (
                f"<div class='wb-quant-parts'><b>{html.escape(chosen)}</b> stores: "
                + " · ".join(f"{html.escape(k)} {v:,} B" for k, v in sel.parts.items())
                + f" = {sel.stored_bytes:,} B for {sel.numel:,} weights = "
                f"{sel.bits_per_param:.3f} bits each; the memory estimator charges "
                f"{sel.formula_bits:.3f} (it leaves out the code tables, about 1 KiB per layer "
                "with double quantization, and counts LLM.int8's row scales separately)."
                "</div>"
            )
            self.status.value = message(
                "ok",
                f"{layer}: {tuple(w.shape)[0]}×{tuple(w.shape)[1]}, "
                f"quantized with bitsandbytes on the CPU and dequantized back.",
            )
