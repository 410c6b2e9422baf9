"""Sweep: choose values for rank, targets, bits, the 4-bit settings and how many seeds; see the grid, each
point's estimated peak, the time it will take and what its eval size can tell apart; then train the points one
after another while the chart (each setting's mean with its 95% interval, each seed a faint dot) fills in.

The plan and the runs are workbench.sweep's (the CLI's `workbench sweep` and notebook 03 call the same
functions); this panel only holds the controls and shows what they return.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import ipywidgets as widgets

from .. import plots
from ..events import Progress, clock
from ..repeats import MAX_SEEDS, Setting, settings_frame
from ..results import default_score, pareto_front
from ..stats import frontier_ties
from ..sweep import PointResult, SweepGrid, SweepPlan, plan, point_settings, run_sweep, sweep_frame, write_sweep
from .common import SEEDS_HELP, error_html, image, message, plan_html, png
from .state import AppState

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
        rows = [
            ("Ranks", self.ranks),
            ("Targets", self.targets),
            ("Base bits", self.bits),
            ("4-bit type", self.quant_types),
            ("Double quant.", self.double_quants),
        ]
        for _, boxes in rows:
            for box in boxes.values():
                box.observe(lambda _: self.refresh_plan(), "value")
        self.seeds = widgets.BoundedIntText(value=1, min=1, max=MAX_SEEDS, description="Seeds", tooltip=SEEDS_HELP)
        self.seeds.style.description_width = "110px"
        self.seeds.observe(lambda _: self.refresh_plan(), "value")
        self.start_button = widgets.Button(
            description="Start sweep", icon="play", button_style="success", tooltip="Train every point not on disk"
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="End the sweep after the current point's step; every finished point is kept",
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
        super().__init__(
            [
                *(
                    widgets.HBox([widgets.Label(title, layout={"width": "110px"}), *boxes.values()])
                    for title, boxes in rows
                ),
                self.seeds,
                self.plan_info,
                self.plan_table,
                widgets.HBox([self.start_button, self.stop_button]),
                widgets.HBox([self.progress, self.progress_text]),
                self.status,
                self.table,
                self.pooled,
                self.chart,
            ]
        )
        self.add_class("wb-sweep")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.state.subscribe(lambda what: self.refresh_plan() if what == "config" else None)
        self.plan: SweepPlan | None = None
        self.points: list[PointResult] = []
        self._started = 0.0
        self.refresh_plan()

    @property
    def out_dir(self):
        return (self.state.runs_dir / "sweep").resolve()

    def grid(self) -> SweepGrid:
        def chosen(boxes):
            return [value for value, box in boxes.items() if box.value]

        return SweepGrid(
            ranks=chosen(self.ranks),
            targets=chosen(self.targets),
            bits=chosen(self.bits),
            quant_types=chosen(self.quant_types),
            double_quants=chosen(self.double_quants),
        )

    def refresh_plan(self) -> SweepPlan | None:
        """The grid's size, each point's estimated peak and the time to train what is not on disk yet."""
        try:
            self.plan = plan(
                self.grid(), self.state.config, self.out_dir, runs_root=self.state.runs_dir, seeds=self.seeds.value
            )
        except ValueError as exc:
            self.plan = None
            self.plan_info.value = error_html(exc)
            self.plan_table.value = ""
            self.start_button.disabled = True
            return None
        self.start_button.disabled = self.state.jobs.busy
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

    def start(self) -> str | None:
        sweep = self.refresh_plan()
        if sweep is None:
            return "the grid is not valid"
        self.points = []
        self.pooled.value = ""

        def work() -> None:
            run_sweep(
                sweep,
                stop=self.state.jobs.stop,
                on_point=self._on_point,
                on_progress=self._on_progress,
                on_status=lambda text: setattr(self.status, "value", message("info", text)),
            )

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
        if self.state.jobs.busy and self.state.jobs.name == "the sweep":
            self.state.jobs.stop.set()
            self.stop_button.disabled = True
            self.status.value = message("warn", "stopping after the current step; finished points are kept…")

    def wait(self, timeout: float | None = None) -> bool:
        return self.state.jobs.join(timeout)

    def _on_progress(self, p: Progress) -> None:
        n, total = len(self.points) + 1, len(self.plan.points) if self.plan else 0
        self.progress.max, self.progress.value = max(1, p.total), min(p.done, max(1, p.total))
        self.progress_text.value = (
            f"point {n} of {total} · {p.describe()} · sweep {clock(time.monotonic() - self._started)}"
        )

    def _on_point(self, point: PointResult) -> None:
        self.points.append(point)
        self.table.value = sweep_frame(self.points).to_html(index=False, na_rep="", border=0, classes="wb-sweep-table")
        if self.plan is not None and self.plan.seeds > 1:
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
        self.state.notify("runs")

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
        front = self.frontier()
        if front:
            tied = self.frontier(ties=True)
            means = " (each setting's mean over its seeds)" if self.plan is not None and self.plan.seeds > 1 else ""
            text = f"frontier{means}, nothing beats these on both: {', '.join(front)}"
            if tied:
                text += f"; not told apart from it (their 95% intervals reach it): {', '.join(tied)}"
            self.status.value = message("ok", text)
        self.refresh_plan()
