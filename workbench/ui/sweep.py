"""Sweep: choose values for rank, targets, bits, the 4-bit settings, the adapter's init and how many seeds;
see the grid, each point's estimated peak, the time it will take and what its eval size can tell apart; then
train the points while the chart (each setting's mean with its 95% interval, each seed a faint dot) fills in. Or
search: N settings chosen by Optuna from the ticked values (the ranks as a range) and from alpha, learning rate and
dropout ranges. Either way the sweep is an Optuna study, worked on by one or more workers, whose trials
(running, finished, failed; which worker, which person) are listed with the optuna-dashboard command.

The plan and the runs are workbench.experiments.sweep's and workbench.experiments.study's (the CLI's
`workbench sweep` and notebook 03 call the same functions); this panel only holds the controls and shows
what they return.

Long because one set of controls drives both a grid (its plan table) and a search, and shows the study's trials.
"""

from __future__ import annotations

import html
import os
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from workbench.analysis import plots
from workbench.analysis.settings import Setting, settings_frame
from workbench.core.config import INIT_TABLE, INITS
from workbench.core.events import Hooks, Progress, clock
from workbench.core.stats import frontier_ties
from workbench.experiments.seeds import MAX_SEEDS
from workbench.experiments.study.reading import counts, finished_points, trials_frame, write_trials
from workbench.experiments.study.space import SearchSpace, StudyDef, open_study
from workbench.experiments.study.storage import STUDY_FILE, dashboard_command, default_storage
from workbench.experiments.study.workers import run_study, run_sweep
from workbench.experiments.sweep import (
    PointResult,
    SweepGrid,
    SweepPlan,
    plan,
    point_settings,
    sweep_frame,
    write_sweep,
)
from workbench.records.results import default_score, pareto_front
from workbench.ui.common import SEEDS_HELP, error_html, image, message, plan_html, png
from workbench.ui.state import AppState

TARGET_SETS = {
    "q_proj,v_proj": "q, v",
    "q_proj,k_proj,v_proj,o_proj": "attention (q, k, v, o)",
    "all-linear": "all linear",
}
RANKS = [1, 2, 4, 8, 16, 32, 64]


def setting_label(g: Setting) -> str:
    """A setting by its first seed's folder name: the point's settings (the later seeds add -seed<N>)."""
    return Path(g.runs[0]).name


def _checks(options: dict, chosen) -> dict[object, widgets.Checkbox]:
    return {
        value: widgets.Checkbox(value=value in chosen, description=label, indent=False, layout={"width": "auto"})
        for value, label in options.items()
    }


class SweepPanel(widgets.VBox):
    """A grid of settings trained in the background, one run folder a point. Shown alone: SweepPanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        self.ranks = _checks({r: str(r) for r in RANKS}, {2, 8, 32})
        self.targets = _checks(TARGET_SETS, {"q_proj,v_proj", "all-linear"})
        self.bits = _checks({16: "16 (LoRA)", 8: "8 (LLM.int8)", 4: "4 (QLoRA)"}, {16, 4})
        self.quant_types = _checks({"nf4": "NF4", "fp4": "FP4"}, {"nf4"})
        self.double_quants = _checks({True: "on", False: "off"}, {True})
        # each init only at the bits it works on: the plan says which combinations it leaves out
        self.inits = _checks({i.name: i.name for i in INIT_TABLE}, {self.state.config.lora.init})
        for name, box in self.inits.items():
            box.tooltip = INITS[name].help
        rows = [
            ("Ranks", self.ranks),
            ("Targets", self.targets),
            ("Base bits", self.bits),
            ("4-bit type", self.quant_types),
            ("Double quant.", self.double_quants),
            ("Init", self.inits),
        ]
        for _, boxes in rows:
            for box in boxes.values():
                box.observe(lambda _: self.refresh_plan(), "value")
        self.seeds = widgets.BoundedIntText(value=1, min=1, max=MAX_SEEDS, description="Seeds", tooltip=SEEDS_HELP)
        self.seeds.style.description_width = "110px"
        self.seeds.observe(lambda _: self.refresh_plan(), "value")
        self.search = widgets.BoundedIntText(
            value=0,
            min=0,
            max=1000,
            description="Search",
            tooltip="0: train every point of the grid. N: try N settings Optuna chooses from the ticked values (the "
            "ranks as a range) and from alpha, learning rate and dropout, pushing the score up and memory down",
        )
        self.search.style.description_width = "110px"
        self.search.observe(lambda _: self.refresh_plan(), "value")
        self.workers = widgets.BoundedIntText(
            value=1,
            min=1,
            max=max(1, os.cpu_count() or 1),
            description="Workers",
            tooltip="Processes working on the sweep at once on this machine: one a GPU, or on a CPU the cores split",
        )
        self.workers.style.description_width = "110px"
        self.start_button = widgets.Button(
            description="Start sweep", icon="play", button_style="success", tooltip="Train every point not on disk"
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Start no new point (the running ones finish); press again to stop them after their step",
        )
        self.plan_info = widgets.HTML()
        self.plan_table = widgets.HTML()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="360px"))
        self.progress_text = widgets.Label()
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.pooled = widgets.HTML()  # with seeds: each setting's mean, spread and interval
        self.chart = image(max_width="100%")
        self.chart.layout.display = "none"  # until the first point is in: no empty image's broken icon
        self.study_info = widgets.HTML()  # the study's name, storage, trial counts and the dashboard command
        self.trials = widgets.HTML()  # its trial log: state, worker, person
        super().__init__(
            [
                *(
                    widgets.HBox([widgets.Label(title, layout={"width": "110px"}), *boxes.values()])
                    for title, boxes in rows
                ),
                widgets.HBox([self.seeds, self.search, self.workers], layout={"flex_flow": "row wrap"}),
                self.plan_info,
                self.plan_table,
                widgets.HBox([self.start_button, self.stop_button]),
                widgets.HBox([self.progress, self.progress_text]),
                self.status,
                self.table,
                self.pooled,
                self.chart,
                self.study_info,
                self.trials,
            ]
        )
        self.add_class("wb-sweep")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.state.subscribe(lambda what: self.refresh_plan() if what == "config" else None)
        self.plan: SweepPlan | None = None
        self.definition: StudyDef | None = None
        self.points: list[PointResult] = []
        self._started = 0.0
        self._finish = threading.Event()
        self.refresh_plan()

    @property
    def out_dir(self):
        return (self.state.runs_dir / ("search" if self.search.value else "sweep")).resolve()

    @property
    def storage(self) -> str:
        return default_storage(self.out_dir)

    def space(self) -> SearchSpace:
        """The search's ranges from the ticked values: the ranks as a range, the rest as choices."""
        grid = self.grid()
        return SearchSpace(
            trials=self.search.value,
            ranks=(min(grid.ranks), max(grid.ranks)),
            targets=grid.targets,
            bits=grid.bits,
            quant_types=grid.quant_types,
            double_quants=grid.double_quants,
            inits=grid.inits,
        )

    def grid(self) -> SweepGrid:
        def chosen(boxes):
            return [value for value, box in boxes.items() if box.value]

        return SweepGrid(
            ranks=chosen(self.ranks),
            targets=chosen(self.targets),
            bits=chosen(self.bits),
            quant_types=chosen(self.quant_types),
            double_quants=chosen(self.double_quants),
            # gaussian alone is no axis: a sweep saved before the init row keeps its study and its names
            inits=None if chosen(self.inits) == ["gaussian"] else chosen(self.inits),
        )

    def refresh_plan(self) -> SweepPlan | None:
        """The grid's size, each point's estimated peak and the time to train what is not on disk yet (a search:
        its ranges and its budget)."""
        try:
            if self.search.value:
                self.plan = None
                self.definition = StudyDef(self.state.config, self.seeds.value, space=self.space())
            else:
                self.plan = plan(
                    self.grid(), self.state.config, self.out_dir, runs_root=self.state.runs_dir, seeds=self.seeds.value
                )
                self.definition = StudyDef(self.state.config, self.seeds.value, grid=self.plan.grid)
        except ValueError as exc:
            self.plan = self.definition = None
            self.plan_info.value = error_html(exc)
            self.plan_table.value = ""
            self.start_button.disabled = True
            return None
        self.start_button.disabled = self.state.jobs.busy
        self.study_info.value = self._study_line()
        self.show_trials()  # this setting's study, if it was started before
        if self.plan is None:
            self.plan_info.value = message("info", self._describe_search())
            self.plan_table.value = ""
            return None
        described = self.plan.describe()
        if self.plan.eval_line:  # on a line of its own: what the eval size can tell apart
            described = described.removesuffix(f"\n{self.plan.eval_line}")
        self.plan_info.value = message("info", described) + plan_html(self.plan.eval_line)
        cells = "".join(
            f"<tr><td>{html.escape(p.label)}</td><td>{p.estimated_peak_bytes / 2**20:,.0f}</td>"
            f"<td class='wb-fit-{p.fit.replace(' ', '-')}'>{p.fit}</td>"
            f"<td>{'on disk' if p.cached else clock(p.estimated_seconds)}</td></tr>"
            for p in self.plan.points
        )
        self.plan_table.value = (
            "<div style='max-height:200px;overflow:auto'><table class='wb-sweep-plan' style='white-space:nowrap'>"
            f"<tr><th>point</th><th>estimated peak MiB</th><th>memory</th><th>time</th></tr>{cells}</table></div>"
        )
        return self.plan

    # ------------------------------------------------------------------ running

    def _describe_search(self) -> str:
        s, seeds = self.definition.space, self.seeds.value
        repeats = f" × {seeds} seeds" if seeds > 1 else ""
        return (
            f"search: {s.trials} settings{repeats} chosen by Optuna (score up, {s.minimize} down): rank "
            f"{s.ranks[0]}–{s.ranks[1]} on a log scale, the ticked targets, bits and 4-bit settings, alpha "
            f"{s.alpha[0]:g}–{s.alpha[1]:g}, learning rate {s.lr[0]:g}–{s.lr[1]:g}, dropout "
            f"{s.dropout[0]:g}–{s.dropout[1]:g}; a setting whose estimate will not fit is never loaded"
        )

    def _study_line(self) -> str:
        name = self.definition.default_name() if self.definition else ""
        command = html.escape(dashboard_command(self.storage))
        return (
            f"<div class='wb-study'>study <code>{html.escape(name)}</code> in <code>{html.escape(self.storage)}</code>"
            f" · to watch it in a browser: <code>{command}</code></div>"
        )

    def start(self) -> str | None:
        self.refresh_plan()
        definition, sweep = self.definition, self.plan
        if definition is None:
            return "the grid is not valid"
        self.points = []
        self.pooled.value = ""
        self._finish = threading.Event()
        hooks = Hooks(
            stop=self.state.jobs.stop,
            on_progress=self._on_progress,
            on_status=lambda text: setattr(self.status, "value", message("info", text)),
        )
        common = dict(finish=self._finish, workers=self.workers.value, on_point=self._on_point)

        def work() -> None:
            # the rows as they end: every planned point (those read back included), or every finished trial
            if sweep is None:
                st, _ = run_study(definition, self.out_dir, hooks, **common)
                self.points = finished_points(st)
            else:
                self.points = run_sweep(sweep, hooks, **common)
            self._show_points()

        refused = self.state.jobs.start("the sweep", work, on_error=self._on_error, on_done=self._on_done)
        if refused:
            self.status.value = message("warn", refused)
            return refused
        self._started = time.monotonic()
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.table.value = ""
        self.state.drop_session()  # training needs the memory of any model loaded for answering
        return None

    def stop(self) -> None:
        """First press: no new point starts and the running ones finish. Second: they stop after their step."""
        if not (self.state.jobs.busy and self.state.jobs.name == "the sweep"):
            return
        if not self._finish.is_set():
            self._finish.set()
            self.status.value = message(
                "warn",
                "no new point will start; the running ones finish (press Stop again to end them after their step)",
            )
            return
        self.state.jobs.stop.set()
        self.stop_button.disabled = True
        self.status.value = message("warn", "stopping after the current step; finished points are kept…")

    def wait(self, timeout: float | None = None) -> bool:
        return self.state.jobs.join(timeout)

    def _on_progress(self, p: Progress) -> None:
        n = len(self.points) + 1
        total = len(self.plan.points) if self.plan else self.search.value * self.seeds.value
        self.progress.max, self.progress.value = max(1, p.total), min(p.done, max(1, p.total))
        self.progress_text.value = (
            f"point {n} of {total} · {p.describe()} · sweep {clock(time.monotonic() - self._started)}"
        )

    def _on_point(self, point: PointResult) -> None:
        self.points.append(point)
        self._show_points()
        self.show_trials()
        self.state.notify("runs")

    def _show_points(self) -> None:
        if not self.points:
            return
        self.table.value = sweep_frame(self.points).to_html(index=False, na_rep="", border=0, classes="wb-sweep-table")
        if (self.plan.seeds if self.plan is not None else self.seeds.value) > 1:
            groups = point_settings(self.points)
            self.pooled.value = (
                "<p><b>over the seeds</b> (mean, spread across seeds, 95% interval of the mean)</p>"
                + settings_frame(groups, label=setting_label).to_html(
                    index=False, na_rep="", border=0, classes="wb-sweep-pooled"
                )
                if groups
                else ""
            )
        self.draw()

    def study(self):
        """The sweep's study as it stands (None before the first Start of these settings)."""
        if self.definition is None or not (self.out_dir / STUDY_FILE).exists():  # not made by looking
            return None
        try:
            return open_study(self.definition, self.storage, create=False)
        except ValueError:
            return None

    def show_trials(self) -> None:
        """The study's trials by state, and its log: which worker and which person ran what."""
        st = self.study()
        if st is None:
            self.trials.value = ""
            return
        tally = ", ".join(f"{n} {state}" for state, n in sorted(counts(st).items()))
        self.study_info.value = self._study_line() + f"<div class='wb-study-counts'>trials: {html.escape(tally)}</div>"
        log = trials_frame(st)
        keep = ["trial", "state", "run", "seed", "worker", "person", "status", "score", "cost", "seconds"]
        self.trials.value = (
            "<div style='max-height:240px;overflow:auto'>"
            + log[keep].to_html(index=False, na_rep="", border=0, classes="wb-study-trials")
            + "</div>"
            if len(log)
            else ""
        )

    def draw(self) -> None:
        groups = point_settings(self.points)
        if not groups:
            return
        self.chart.layout.display = None
        self.chart.value = png(plots.settings_figure(groups, label=setting_label))

    def frontier(self, ties: bool = False) -> list[str]:
        """The settings no other beats on accuracy (or perplexity) and peak memory, by memory, drawn through
        each setting's mean over its seeds; with ties=True, the settings off it whose interval reaches it
        instead (the frontier does not beat them on the evidence)."""
        groups = point_settings(self.points)
        means = [g.mean_result() for g in groups]
        score = default_score(means)
        scored = [(g, m) for g, m in zip(groups, means) if getattr(m, score) is not None]
        xy = [(m.peak_memory_bytes, getattr(m, score)) for _, m in scored]
        better_up = score == "accuracy"
        front = pareto_front(xy, higher_is_better=better_up)
        if not ties:
            return [setting_label(scored[i][0]) for i in front]
        costs, values = [x for x, _ in xy], [y for _, y in xy]
        tied = frontier_ties(costs, values, [m.interval(score) for _, m in scored], front, better_up)
        return [setting_label(scored[i][0]) for i in tied]

    def _on_error(self, exc: BaseException, details: str) -> None:
        self.status.value = error_html(exc, details)

    def _on_done(self) -> None:
        self.start_button.disabled, self.stop_button.disabled = False, True
        elapsed = clock(time.monotonic() - self._started)
        counts = {s: sum(p.status == s for p in self.points) for s in ("trained", "loaded", "failed", "not run")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        stopped = counts["not run"] > 0 or any(p.status == "stopped" for p in self.points)
        self.progress_text.value = f"{'stopped' if stopped else 'done'} · {elapsed} elapsed · {summary}"
        if self.points:
            write_sweep(self.out_dir, self.points)  # sweep.csv and sweep.png beside the points' folders
        st = self.study()
        if st is not None:
            write_trials(self.out_dir, st)  # the study's trial log, trials.csv
            self.show_trials()
        front = self.frontier()
        if front:
            tied = self.frontier(ties=True)
            means = " (each setting's mean over its seeds)" if self.plan is not None and self.plan.seeds > 1 else ""
            text = f"frontier{means}, nothing beats these on both: {', '.join(front)}"
            if tied:
                text += f"; not told apart from it (their 95% intervals reach it): {', '.join(tied)}"
            self.status.value = message("ok", text)
        self.refresh_plan()
