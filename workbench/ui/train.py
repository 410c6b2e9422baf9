"""Train: Start and Stop, a progress bar with ETA, live loss and memory plots; Export run; Seeds (each setting
trained several times); the eval size's plan before Start and the paired verdicts after a run.

Training runs in a background thread (the notebook stays responsive); Stop sets a flag the loop
reads between steps, and the run folder keeps the metrics and the adapter trained so far. Export run
writes the settings as experiment files and shows the command that trains them on several GPUs.

Long because: Start, Stop and Continue, the worker's callbacks and the tables and verdicts shown when a run
ends all read and reset the same run state (its folders, its seeds' results, its events); split, that state
would be passed back and forth between modules.
"""

from __future__ import annotations

import html
import threading
import time
from datetime import datetime
from pathlib import Path

import ipywidgets as widgets
from matplotlib.figure import Figure

from workbench.analysis import plots
from workbench.analysis.eval_plan import check_eval_size, eval_plan, seed_spread
from workbench.analysis.settings import settings, settings_frame
from workbench.analysis.verdicts import across_seeds, short_titles, verdicts_what
from workbench.core.config import VARIANTS, TrainSettings
from workbench.core.events import Hooks, MetricEvent, Progress, clock
from workbench.experiments.comparison import continue_run, kept_metrics, saved_states
from workbench.experiments.experiment import for_variant, launch_command, write_config
from workbench.experiments.kept_scores import kept_sentence
from workbench.experiments.run_setup import VariantStart
from workbench.experiments.seeds import MAX_SEEDS, run_seeds, seed_dir, seed_values
from workbench.records.results import CompareResult, results_frame
from workbench.records.runs import Run, claim_run_dir, drop_if_empty, user_slug
from workbench.ui.common import SEEDS_HELP, Quiet, error_html, helped, image, message, plan_html, png, verdicts_html
from workbench.ui.state import AppState

REDRAW_SECONDS = 0.5  # live plots redraw at most this often
# and at most this share of the time: a redraw (two figures to PNG, ~0.1-0.2 s on a laptop core) runs in the
# training thread between steps, so it is time training waits for (bench/bench_overhead.py)
REDRAW_SHARE = 0.02


def run_name(cfg, user: str | None = None) -> str:
    """A new run's folder name: when, who (in a shared folder), what."""
    targets = cfg.lora.target_modules
    targets = "all-linear" if targets == "all-linear" else "+".join(targets)
    trained = "+".join(v for v in cfg.variants if VARIANTS[v].trained) or "base"
    who = f"-{user_slug(user)}" if user else ""
    return f"{datetime.now():%Y%m%d-%H%M%S}{who}-{trained}-r{cfg.lora.rank}-{targets}"


def allocator_note() -> str:
    """A warning when this kernel runs on glibc's allocator although a faster one is installed (a kernel not
    started by `make lab`): slower steps, and peaks well above those of the allocator the workbench preloads."""
    from workbench.machine import allocator

    if allocator.in_use() != "glibc" or allocator.fast_path() is None or allocator.choice() != "auto":
        return ""
    return message(
        "warn",
        "This kernel runs on glibc's allocator, which keeps freed activations: steps are slower and peaks higher "
        "than with the allocator `make lab` preloads (docs/benchmarks.md). Start JupyterLab with `make lab`.",
    )


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
        self.seeds = widgets.BoundedIntText(value=1, min=1, max=MAX_SEEDS, description="Seeds", tooltip=SEEDS_HELP)
        self.seeds.style.description_width = "150px"
        self.seeds.observe(lambda _: self.show_plan(), "value")
        self.plan = widgets.HTML()  # what the eval size can tell apart, and what scoring costs
        self.start_button = widgets.Button(
            description="Start",
            icon="play",
            button_style="success",
            tooltip="Train every chosen variant, then evaluate and compare them",
        )
        self.continue_button = widgets.Button(
            description="Continue",
            icon="forward",
            tooltip="Continue the last run (stopped or finished) up to Steps steps, from its saved adapters and "
            "optimizer state; its loss curve goes on",
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop after the current step; what was trained is kept on disk",
        )
        self.export_button = widgets.Button(
            description="Export run",
            icon="download",
            tooltip="Write these settings as a config file per trained variant into the runs folder and show the "
            "command that trains it in several processes (accelerate launch or torchrun; docs/scale.md)",
        )
        self.processes = widgets.BoundedIntText(
            value=2,
            min=1,
            max=4096,
            description="Processes",
            tooltip="Processes for the exported command: one per GPU (on a CPU, each takes a share of the cores)",
        )
        self.export_out = widgets.HTML()
        self.progress = widgets.IntProgress(
            value=0, min=0, max=1, description="Progress", layout=widgets.Layout(width="420px")
        )
        self.progress_text = widgets.Label()
        self.status = widgets.HTML()
        self.error = widgets.HTML()
        self.loss_image = image(plots.loss_figure([]))  # empty axes until the first step, not a broken image
        self.memory_image = image(plots.live_memory_figure([], {}, "cpu"))
        self.results = widgets.HTML()
        self.verdicts = widgets.HTML()
        c = self.controls
        super().__init__(
            [
                widgets.HBox(
                    [
                        widgets.VBox([c["steps"], c["lr"], c["batch_size"], c["seq_len"], c["eval_examples"]]),
                        widgets.VBox(
                            [c["grad_accum"], c["warmup_steps"], c["seed"], self.seeds, c["gradient_checkpointing"]]
                        ),
                    ]
                ),
                self.plan,
                widgets.HBox([self.start_button, self.continue_button, self.stop_button]),
                widgets.HBox([self.export_button, self.processes]),
                self.export_out,
                widgets.HBox([self.progress, self.progress_text]),
                self.status,
                self.error,
                widgets.HBox([self.loss_image, self.memory_image], layout=widgets.Layout(flex_flow="row wrap")),
                self.results,
                self.verdicts,
            ]
        )
        self.add_class("wb-train")
        self.start_button.on_click(lambda _: self.start())
        self.continue_button.on_click(lambda _: self.continue_last())
        self.stop_button.on_click(lambda _: self.stop())
        self.export_button.on_click(lambda _: self.export_run())
        self.events: list[MetricEvent] = []
        self.estimates: dict[str, int] = {}
        self.result: CompareResult | None = None
        self.run_dir: Path | None = None
        self.redraws = 0
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._draw_cost = 0.0  # seconds the last redraw took
        self._started = 0.0
        self.last_progress: Progress | None = None
        self.device_type = "cpu"  # where the running variants run: the run tells, the setting may say "auto"
        self.seed_results: list[CompareResult] = []  # every seed's result, with Seeds above 1
        self.folders: list[Path] = []  # the run folder of each of them
        self._plan_key = None
        self._init_html = ""  # the init's line under the plan, kept when the plan's sentence grows
        self.state.subscribe(lambda what: self.show_plan(what == "runs") if what in ("config", "runs") else None)
        self.show_plan()

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

    def show_plan(self, runs_changed: bool = False) -> str:
        """The eval size's plan (what it can tell apart, what scoring it costs here), or why that size cannot run;
        redone only when what it reads changes (the task, the eval size, the device, Seeds, the runs on disk),
        not at every rank or alpha move."""
        from workbench.engine.models import pick_device

        cfg = self.state.config
        try:
            device_type = pick_device(cfg.model.device, cfg.model.dtype).type
        except ValueError:
            device_type = "cpu"  # no such device here: the Setup tab says so; plan at the CPU's pace
        d = cfg.to_dict()
        key = repr([d["task"], d["data"], d.get("eval_data"), d.get("columns"), d["train"], d["model"], device_type])
        key += repr(cfg.variants) + repr(d["lora"])  # the init's line reads the adapter's settings
        key += f"|{self.seeds.value}"
        if key == self._plan_key and not runs_changed:
            return self.plan.value
        self._plan_key = key
        try:
            cut = check_eval_size(cfg)  # a preset's size over a smaller split: what is scored instead
            line = eval_plan(cfg, self.state.runs_dir, device_type, runs=self.seeds.value)
        except (ValueError, OSError) as exc:  # bad data is the Setup tab's to say; the eval size is said here
            self.plan.value = error_html(exc) if "eval_examples" in str(exc) else ""
            return self.plan.value
        if line and self.seeds.value > 1:
            line += f"; × {self.seeds.value} seeds (the verdicts count the seeds' spread and the examples')"
        line = f"{cut}. {line}" if cut and line else cut or line
        self._init_html = self._init_plan(cfg, device_type)
        self.plan.value = plan_html(line) + self._init_html
        if line:
            self._say_if_kept(cfg, line, key)
        return self.plan.value

    def _init_plan(self, cfg, device_type: str) -> str:
        """What the adapter's init costs before the first step, one line under the plan ("" for gaussian)."""
        from workbench.engine.estimator import init_plan_line

        try:
            line = init_plan_line(cfg, device_type)
        except ValueError:  # a model whose config cannot be read: the Setup tab says why
            return ""
        return f"<div class='wb-init-plan'>{message('info', line)}</div>" if line else ""

    def _say_if_kept(self, cfg, line: str, key: str) -> None:
        """Add to the plan, once known, that the base's scores come from the score cache. Known off the kernel's
        thread: the first look reads the tokenizer (about 1.7 s), which the tab should not wait for."""

        def look() -> None:
            kept = kept_sentence(cfg)
            if kept and self._plan_key == key:  # still the plan on show
                self.plan.value = plan_html(f"{line}; {kept}") + self._init_html

        self._kept_look = threading.Thread(target=look, name="plan-kept", daemon=True)
        self._kept_look.start()

    # ------------------------------------------------------------------ running

    def start(self, continue_from: Path | None = None) -> str | None:
        """Start training in the background (a new run, or `continue_from` a run folder up to Steps steps).
        Returns the reason when it cannot start (also shown)."""
        cfg = self.state.config
        refused = self.state.jobs.refusal("training")  # before a folder is claimed or the panel is reset
        if refused:
            self.status.value = message("warn", refused)
            return refused
        n = 1 if continue_from is not None else self.seeds.value
        try:  # an eval size or seeds out of range: one line before a folder is claimed
            seed_values(cfg, n)
            task = self._task(cfg)
            if task is not None:
                check_eval_size(cfg, task)
        except ValueError as exc:
            self.error.value = error_html(exc)
            self.status.value = message("error", "nothing ran: change what the message says and press Start again")
            return str(exc)
        # a new run claims its folder now: a class's kernels share one runs folder, and two may start in one second
        out = continue_from or claim_run_dir(self.state.runs_dir, run_name(cfg, self.state.user)).resolve()
        user = self.state.user

        # each seed's own folder (out/seed-<seed>) with Seeds above 1; else out itself
        folders = [out] if n == 1 else [seed_dir(out, s) for s in seed_values(cfg, n)]

        def work() -> None:
            hooks = Hooks(
                sinks=(self._on_event,),
                stop=self.state.jobs.stop,  # the job's own flag: Jobs.start makes a new one for each job
                on_status=self._on_status,
                on_progress=self._on_progress,
                on_variant=self._on_variant,
            )
            if continue_from is None:  # a stop ends the running seed and starts no more
                self.seed_results = run_seeds(cfg, out, n, hooks, user=user)
                self.result = self.seed_results[-1] if self.seed_results else None
            else:
                self.result = continue_run(out, cfg.train.steps, hooks=hooks, user=user)
                self.seed_results = [self.result]

        # the panel is reset before the worker starts: a run refused at once (will not fit) shows its message
        with self._lock:  # a continued run's curve goes on from the steps it keeps
            self.events = kept_metrics(Run(out)) if continue_from is not None else []
            self.estimates, self.result = {}, None
        self.run_dir, self.folders, self.seed_results = out, folders if continue_from is None else [out], []
        self.error.value = self.results.value = self.verdicts.value = ""
        self.progress.max, self.progress.value = 1, 0
        self.progress.bar_style = ""
        self.progress_text.value = "preparing the data and the model…"
        self.last_progress = None
        self._started = time.monotonic()
        self.start_button.disabled = self.continue_button.disabled = True
        self.stop_button.disabled = False
        seeds = f" × {n} seeds" if n > 1 else ""
        what = (
            f"continuing {out} up to {cfg.train.steps} steps"
            if continue_from
            else f"starting: {', '.join(cfg.variants)}{seeds} into {out}"
        )
        self.status.value = message("info", what) + allocator_note()
        self.state.drop_session()  # free models loaded for answering: training needs the memory
        self.state.jobs.start("training", work, on_error=self._on_error, on_done=self._on_done)
        return None

    @staticmethod
    def _task(cfg):
        """The run's task, or None where its data cannot be read: the run itself then says why, traceback and all."""
        from workbench.data import task_for

        try:
            return task_for(cfg)
        except (ValueError, OSError):
            return None

    def continue_last(self) -> str | None:
        """Continue the run the other tabs use (the last one) up to the Steps setting."""
        run = self.state.last_run
        if run is None or not Run(run).finished:
            self.status.value = message("warn", "No run to continue yet: press Start first.")
            return "no run"
        done = max((st.step for st in saved_states(Run(run)).values()), default=0)
        if done >= self.state.config.train.steps:
            text = f"The run has done {done} steps already: raise Steps above {done} to continue it."
            self.status.value = message("warn", text)
            return text
        return self.start(continue_from=Path(run).resolve())

    def export_run(self) -> list[tuple[Path, str]]:
        """Write the settings as one experiment file per trained variant (runs/<name>.yaml) and show the commands
        that train each (experiment.launch_command: the very line a test runs). Returns (file, command) pairs."""
        cfg = self.state.config
        trained = [v for v in cfg.variants if VARIANTS[v].trained]
        if not trained:
            self.export_out.value = message("warn", "Nothing to export: choose a trained variant (LoRA or QLoRA).")
            return []
        n = self.processes.value
        out, lines = [], []
        try:
            for name in trained:
                one = for_variant(cfg, name)
                path = write_config(one, self.state.runs_dir / f"{run_name(one)}.yaml")
                out.append((path, launch_command(path, n)))
                lines += [f"# {name}", out[-1][1], launch_command(path, n, "torchrun"), ""]
        except (OSError, ValueError) as exc:  # a runs folder that cannot be written: said here, not raised
            self.export_out.value = error_html(exc)
            return []
        self.export_out.value = (
            message(
                "ok", f"wrote {', '.join(str(p) for p, _ in out)}; train with (one process per GPU; docs/scale.md):"
            )
            + "<pre>"
            + html.escape("\n".join(lines).rstrip())
            + "</pre>"
        )
        return out

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

    def _on_progress(self, p: Progress) -> None:
        """Every phase (loading, evaluating, training, answering) moves the bar: its count of its total."""
        self.last_progress = p
        self.progress.max = max(1, p.total)
        self.progress.value = min(p.done, self.progress.max)
        loss = ""
        if p.phase == "train" and self.events and self.events[-1].variant == p.variant:
            loss = f" · loss {self.events[-1].loss:.3f}"
        self.progress_text.value = f"{p.describe()}{loss} · run {clock(time.monotonic() - self._started)}"

    def _on_event(self, event: MetricEvent) -> None:
        with self._lock:
            self.events.append(event)
        now = time.monotonic()
        wait = max(REDRAW_SECONDS, self._draw_cost / REDRAW_SHARE)
        if now - self._last_draw >= wait or event.step == event.total_steps:
            self.redraw()

    def memory_figure(self) -> Figure:
        """The live memory plot: measured per step, each variant's estimate dashed beside it."""
        with self._lock:
            events, estimates = list(self.events), dict(self.estimates)
        return plots.live_memory_figure(events, estimates, self.device_type)

    def redraw(self) -> None:
        start = time.monotonic()
        with self._lock:
            events = list(self.events)
        self.loss_image.value = png(plots.loss_figure(events))
        self.memory_image.value = png(self.memory_figure())
        self._last_draw = time.monotonic()
        self._draw_cost = self._last_draw - start
        self.redraws += 1

    def _on_error(self, exc: BaseException, details: str) -> None:
        self.error.value = error_html(exc, details)
        if self.run_dir is not None:
            drop_if_empty(self.run_dir)  # refused before it began (bad data, will not fit): no empty folder left
        if self.run_dir is not None and self.run_dir.exists():
            text = f"training failed; anything finished before the error is in {self.run_dir}"
        else:
            text = "nothing ran: change what the message says and press Start again"
        self.status.value = message("error", text)
        self.progress.bar_style = "danger"
        self.progress_text.value = f"failed after {clock(time.monotonic() - self._started)}"

    def _on_done(self) -> None:
        self.start_button.disabled = self.continue_button.disabled = False
        self.stop_button.disabled = True
        self.redraw()
        out = self.run_dir
        finished = [f for f in self.folders[: max(len(self.seed_results), 1)] if Run(f).finished]
        if finished:
            self.state.use_run(finished[-1])  # the last seed's adapters answer in the Compare tab
            self.state.notify("runs")
        if self.result is None:
            return
        if self.result.stopped and not any(r.variants for r in [*self.seed_results, self.result]):
            for folder in [*self.folders, out]:  # stopped in line, before its turn: nothing was made, no folder left
                if folder is not None:
                    drop_if_empty(folder)
            self.progress.bar_style = "warning"
            self.status.value = message("warn", "stopped while it waited for its turn: nothing was trained or kept")
            return
        stopped = any(r.stopped for r in self.seed_results) or self.result.stopped
        self.progress.bar_style = "warning" if stopped else "success"
        self.progress_text.value = self.end_line(self.result, time.monotonic() - self._started)
        self.results.value = self.results_html()
        self.verdicts.value = verdicts_html(self.verdict_sentences(), self.verdicts_what())
        what = (
            "stopped: the metrics and the adapter trained so far are saved in "
            if stopped
            else "done: results, plots and adapters are in "
        )
        self.status.value = message("warn" if stopped else "ok", what + str(out))

    def results_html(self) -> str:
        """The run's table, each score with its 95% interval; over several seeds, each setting's mean, spread
        and interval first, then every seed's table folded beneath."""
        tables = [
            results_frame(r.variants).to_html(classes="wb-results", border=0, na_rep="") for r in self.seed_results
        ]
        if len(self.seed_results) < 2:
            return tables[0] if tables else ""
        rows = [
            (r.config, v, str(f), r.user)
            for r, f in zip(self.seed_results, self.folders)
            for v in r.variants
            if v.error is None
        ]
        pooled = settings_frame(settings(rows), label=lambda g: g.first.name)
        seeds = "".join(
            f"<p>seed {r.config['train']['seed']}</p>{t}" for r, t in zip(self.seed_results, tables, strict=True)
        )
        return (
            f"<p><b>over {len(self.seed_results)} seeds</b> (mean, spread across seeds, 95% interval of the mean)</p>"
            + pooled.to_html(index=False, classes="wb-results wb-seeds-table", border=0, na_rep="")
            + f"<details><summary>each seed</summary>{seeds}</details>"
        )

    def verdict_sentences(self) -> list[str]:
        """The run's paired comparisons (base against each adapter, LoRA against QLoRA), pooled over its seeds."""
        if self.result is None:
            return []
        folders = [f for f in self.folders[: len(self.seed_results)] if Run(f).finished]
        names = [v.name for v in self.result.variants]
        spread = seed_spread(self.result.config, self.state.runs_dir) if len(folders) == 1 else None
        scores = [Run(f).scores() for f in folders]
        pairings = across_seeds(scores, names, short_titles(names), spread) if folders else []
        return [s for p in pairings for s in p.sentences()]

    def verdicts_what(self) -> str:
        return verdicts_what(len(self.seed_results))

    @staticmethod
    def end_line(result: CompareResult, elapsed_s: float) -> str:
        """The progress line once a run ends: done or stopped, the whole run's time, and what a stop left."""
        if not result.stopped:
            return f"done · {clock(elapsed_s)} elapsed"
        ran = {v.name: v for v in result.variants}
        parts = [
            f"{v.name} {v.steps_done} of {result.config['train']['steps']} steps"
            for v in result.variants
            if v.steps_done is not None
        ]
        left = [n for n in result.config["variants"] if n not in ran]
        if left:
            parts.append(f"{', '.join(left)} not run")
        return f"stopped · {clock(elapsed_s)} elapsed · " + "; ".join(parts)
