"""Train: Start and Stop, a progress bar with ETA, live loss and memory plots.

Training runs in a background thread (the notebook stays responsive); Stop sets a flag the loop
reads between steps, and the run folder keeps the metrics and the adapter trained so far.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import ipywidgets as widgets
from matplotlib.figure import Figure

from .. import plots
from ..compare import CompareResult, VariantStart, results_table, run_compare
from ..config import VARIANTS, TrainSettings
from ..events import MetricEvent
from ..runs import Run
from .common import Quiet, error_html, helped, image, message, png
from .state import AppState

REDRAW_SECONDS = 0.5  # live plots redraw at most this often (each redraw costs ~0.1 s of CPU)


def run_name(cfg) -> str:
    targets = cfg.lora.target_modules
    targets = "all-linear" if targets == "all-linear" else "+".join(targets)
    trained = "+".join(v for v in cfg.variants if VARIANTS[v].trained) or "base"
    return f"{datetime.now():%Y%m%d-%H%M%S}-{trained}-r{cfg.lora.rank}-{targets}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class TrainPanel(widgets.VBox):
    """Training settings, Start/Stop, progress and live plots. Shown alone: TrainPanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        t = self.state.config.train
        self.controls = {
            "steps": widgets.BoundedIntText(value=t.steps, min=1, max=1_000_000, description="Steps"),
            "lr": widgets.FloatText(value=t.lr, description="Learning rate"),
            "batch_size": widgets.BoundedIntText(value=t.batch_size, min=1, max=4096, description="Batch size"),
            "seq_len": widgets.BoundedIntText(value=t.seq_len, min=8, max=131072, description="Sequence length"),
            "grad_accum": widgets.BoundedIntText(value=t.grad_accum, min=1, max=4096, description="Grad. accumulation"),
            "warmup_steps": widgets.BoundedIntText(
                value=t.warmup_steps, min=0, max=1_000_000, description="Warmup steps"
            ),
            "seed": widgets.BoundedIntText(value=t.seed, min=0, max=2**31 - 1, description="Seed"),
            "eval_examples": widgets.BoundedIntText(
                value=t.eval_examples, min=0, max=1_000_000, description="Eval examples"
            ),
            "gradient_checkpointing": widgets.Checkbox(
                value=t.gradient_checkpointing, description="Gradient checkpointing"
            ),
        }
        self._quiet = Quiet()
        for name, w in self.controls.items():
            helped(w, TrainSettings, name)
            w.observe(self._on_change, "value")
        self.start_button = widgets.Button(
            description="Start",
            icon="play",
            button_style="success",
            tooltip="Train every chosen variant, then evaluate and compare them",
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop after the current step; what was trained is kept on disk",
        )
        self.progress = widgets.IntProgress(
            value=0, min=0, max=1, description="Progress", layout=widgets.Layout(width="420px")
        )
        self.progress_text = widgets.Label()
        self.status = widgets.HTML()
        self.error = widgets.HTML()
        self.loss_image = image()
        self.memory_image = image()
        self.results = widgets.HTML()
        c = self.controls
        super().__init__(
            [
                widgets.HBox(
                    [
                        widgets.VBox([c["steps"], c["lr"], c["batch_size"], c["seq_len"], c["eval_examples"]]),
                        widgets.VBox([c["grad_accum"], c["warmup_steps"], c["seed"], c["gradient_checkpointing"]]),
                    ]
                ),
                widgets.HBox([self.start_button, self.stop_button]),
                widgets.HBox([self.progress, self.progress_text]),
                self.status,
                self.error,
                widgets.HBox([self.loss_image, self.memory_image], layout=widgets.Layout(flex_flow="row wrap")),
                self.results,
            ]
        )
        self.add_class("wb-train")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.events: list[MetricEvent] = []
        self.estimates: dict[str, int] = {}
        self.result: CompareResult | None = None
        self.run_dir: Path | None = None
        self.redraws = 0
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._started = 0.0
        self._done_steps = 0  # steps of the variants already finished in this run
        self.device_type = "cpu"  # where the running variants run: the run tells, the setting may say "auto"

    # ------------------------------------------------------------------ settings

    def _on_change(self, change) -> None:
        values = {name: w.value for name, w in self.controls.items()}
        if self._quiet:
            return
        try:
            self.state.update("train", **values)
        except ValueError as exc:
            with self._quiet():  # put the controls back to the settings in force; the message says why
                for name, w in self.controls.items():
                    w.value = getattr(self.state.config.train, name)
            self.error.value = error_html(exc)
            return
        self.error.value = ""

    # ------------------------------------------------------------------ running

    def start(self) -> str | None:
        """Start training in the background. Returns the reason when it cannot start (also shown)."""
        cfg = self.state.config
        out = self.state.runs_dir / run_name(cfg)
        n_trained = sum(1 for v in cfg.variants if VARIANTS[v].trained)

        def work() -> None:
            self.result = run_compare(
                cfg,
                out,
                sinks=[self._on_event],
                stop=self.state.jobs.stop,
                on_status=self._on_status,
                on_variant=self._on_variant,
            )

        refused = self.state.jobs.start("training", work, on_error=self._on_error, on_done=self._on_done)
        if refused:
            self.status.value = message("warn", refused)
            return refused
        with self._lock:
            self.events, self.estimates, self.result = [], {}, None
        self.run_dir = out
        self.error.value = self.results.value = ""
        self.progress.max = max(1, cfg.train.steps * n_trained)
        self.progress.value = 0
        self.progress.bar_style = ""
        self._done_steps = 0
        self._started = time.monotonic()
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self.status.value = message("info", f"starting: {', '.join(cfg.variants)} into {out}")
        self.state.drop_session()  # free models loaded for answering: training needs the memory
        return None

    def stop(self) -> None:
        if self.state.jobs.busy and self.state.jobs.name == "training":
            self.state.jobs.stop.set()
            self.stop_button.disabled = True
            self.status.value = message("warn", "stopping after the current step…")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training ends (for scripts and tests; the notebook never needs this)."""
        return self.state.jobs.join(timeout)

    # ------------------------------------------------------------------ events from the worker thread

    def _on_status(self, text: str) -> None:
        self.status.value = message("info", text)

    def _on_variant(self, start: VariantStart) -> None:
        with self._lock:
            self.estimates[start.name] = start.estimated_peak_bytes
            self.device_type = start.device_type

    def _on_event(self, event: MetricEvent) -> None:
        with self._lock:
            if self.events and self.events[-1].variant != event.variant:
                self._done_steps += self.events[-1].step
            self.events.append(event)
        done = self._done_steps + event.step
        self.progress.value = min(done, self.progress.max)
        per_step = event.elapsed_s / max(event.step, 1)
        remaining = (self.progress.max - done) * per_step
        self.progress_text.value = (
            f"step {done}/{self.progress.max} ({event.variant} {event.step}/"
            f"{event.total_steps}) · {_clock(time.monotonic() - self._started)} elapsed · "
            f"ETA {_clock(remaining)} · loss {event.loss:.3f}"
        )
        now = time.monotonic()
        if now - self._last_draw >= REDRAW_SECONDS or event.step == event.total_steps:
            self.redraw()

    def memory_figure(self) -> Figure:
        """The live memory plot: measured per step, each variant's estimate dashed beside it."""
        with self._lock:
            events, estimates = list(self.events), dict(self.estimates)
        return plots.live_memory_figure(events, estimates, self.device_type)

    def redraw(self) -> None:
        with self._lock:
            events = list(self.events)
        self.loss_image.value = png(plots.loss_figure(events))
        self.memory_image.value = png(self.memory_figure())
        self._last_draw = time.monotonic()
        self.redraws += 1

    def _on_error(self, exc: BaseException, details: str) -> None:
        self.error.value = error_html(exc, details)
        self.status.value = message(
            "error", f"training failed; anything finished before the error is in {self.run_dir}"
        )
        self.progress.bar_style = "danger"

    def _on_done(self) -> None:
        self.start_button.disabled = False
        self.stop_button.disabled = True
        self.redraw()
        out = self.run_dir
        if out is not None and Run(out).finished:
            self.state.use_run(out)
            self.state.notify("runs")
        if self.result is None:
            return
        stopped = self.result.stopped
        self.progress.bar_style = "warning" if stopped else "success"
        table = results_table(self.result).to_html(classes="wb-results", border=0, na_rep="")
        self.results.value = table
        what = (
            "stopped: the metrics and the adapter trained so far are saved in "
            if stopped
            else "done: results, plots and adapters are in "
        )
        self.status.value = message("warn" if stopped else "ok", what + str(out))
