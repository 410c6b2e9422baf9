"""Results: every run on disk in one table, accuracy against memory on one chart, CSV export."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import ipywidgets as widgets

from .. import plots, runs
from ..files import write_csv
from ..results import default_score, readable, shorten
from .common import error_html, image, message, png
from .state import AppState

# the result fields the table shows, beside its run's name, 4-bit type and steps (results.COLUMNS gives
# their headings and units)
SHOWN = [
    "name",
    "bits",
    "rank",
    "target_modules",
    "accuracy",
    "perplexity",
    "forgetting",
    "peak_memory_bytes",
    "estimated_peak_bytes",
    "weight_bytes",
    "train_seconds",
    "status",
]
RUN_WIDTH = 28  # characters of a run's name the table shows (the whole name on hover)


class ResultsPanel(widgets.VBox):
    """All runs (this session's and earlier ones found under the runs folder). Shown alone: ResultsPanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", tooltip="Read every run under the runs folder again"
        )
        self.memory_kind = widgets.ToggleButtons(
            options=[
                ("peak memory", "peak_memory_bytes"),
                ("weight memory", "weight_bytes"),
                ("time", "train_seconds"),
            ],
            value="peak_memory_bytes",
            description="x axis",
            tooltip="Peak memory while training, the weights alone, or the training time",
        )
        self.score_kind = widgets.ToggleButtons(
            options=[
                ("accuracy", "accuracy"),
                ("eval loss", "eval_loss"),
                ("perplexity", "perplexity"),
                ("forgetting", "forgetting"),
            ],
            value="accuracy",
            description="y axis",
            tooltip="What each point scored: held-out accuracy, loss or perplexity, or what it forgot elsewhere",
        )
        self.person = widgets.Dropdown(
            options=[("everyone", "")],
            value="",
            description="whose runs",
            tooltip="A class sharing one runs folder: show one person's runs, or everyone's coloured by person",
        )
        # runs side by side: any runs on disk, their curves on one plot and their settings in one table
        self.pick_runs = widgets.SelectMultiple(
            description="Runs", rows=6, layout=widgets.Layout(width="640px"), tooltip="Pick runs to overlay"
        )
        self.only_differences = widgets.Checkbox(value=True, description="only the settings that differ")
        self.overlay_loss = image()
        self.overlay_memory = image()
        for img in (self.overlay_loss, self.overlay_memory):
            img.layout.display = "none"
        self.settings = widgets.HTML()
        self.export_button = widgets.Button(
            description="Export CSV", icon="download", tooltip="Write every row to a CSV file in the runs folder"
        )
        # export: a run's adapter with a model card, or merged into its base (workbench.export)
        self.export_run = widgets.Dropdown(description="Run", layout=widgets.Layout(width="420px"))
        self.export_variant = widgets.Dropdown(description="Adapter", options=[], layout=widgets.Layout(width="220px"))
        self.export_merge = widgets.Checkbox(
            value=False, description="merge into the base (a model plain transformers loads)", indent=False
        )
        self.export_model_button = widgets.Button(
            description="Export", icon="box", tooltip="Write the adapter and a model card (or the merged model)"
        )
        self.export_model_info = widgets.HTML()
        self.info = widgets.HTML()
        self.table = widgets.HTML()
        self.chart = image(max_width="100%")  # drawn at the width it is shown: the legend stays readable
        self.export_info = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.refresh_button, self.export_button]),
                self.info,
                self.table,
                widgets.HBox(
                    [self.score_kind, self.memory_kind, self.person], layout=widgets.Layout(flex_flow="row wrap")
                ),
                self.chart,
                self.export_info,
                widgets.HTML("<b>Runs side by side</b>"),
                widgets.HBox([self.pick_runs, self.only_differences]),
                widgets.HBox([self.overlay_loss, self.overlay_memory], layout=widgets.Layout(flex_flow="row wrap")),
                self.settings,
                widgets.HTML("<b>Export an adapter</b>"),
                widgets.HBox([self.export_run, self.export_variant]),
                widgets.HBox([self.export_merge, self.export_model_button]),
                self.export_model_info,
            ]
        )
        self.add_class("wb-results")
        self.rows: list[runs.ResultRow] = []
        self.unreadable: list[runs.Unreadable] = []
        self.refresh_button.on_click(lambda _: self.refresh())
        self.export_button.on_click(lambda _: self.export())
        self.export_run.observe(lambda _: self._export_variants(), "value")
        self.export_model_button.on_click(lambda _: self.export_model())
        self.memory_kind.observe(lambda _: self._draw(), "value")
        self.score_kind.observe(lambda _: self._draw(), "value")
        self.person.observe(lambda _: self._show(), "value")
        self.pick_runs.observe(lambda _: self.side_by_side(), "value")
        self.only_differences.observe(lambda _: self.side_by_side(), "value")
        self.state.subscribe(lambda what: self.refresh() if what in ("runs", "run") else None)
        self.refresh()

    def frame(self):
        """The rows as a pandas DataFrame in readable units (what the table shows)."""
        import pandas as pd

        rows = [
            {
                "run": r.run,
                "who": r.user,
                **readable(r.result, SHOWN[:2]),
                "4-bit type": r.quant_type,
                **readable(r.result, SHOWN[2:4]),
                "steps": r.steps_text,  # done of asked, where a stop cut them short
                **readable(r.result, SHOWN[4:-1]),
                "status": r.status_text,
            }
            for r in self.shown
        ]
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        for key in ("rank", "bits"):
            df[key] = df[key].astype("Int64")  # whole numbers, blank where there is none (base has no rank)
        return df.astype(object).where(df.notna(), "")  # blank cells, not <NA>, NaN or None

    def table_html(self) -> str:
        """The frame as HTML that stays legible at JupyterLab's default width: one line per row, long run
        names cut in the middle with the whole name on hover, the table scrolling sideways when it must."""
        df = self.frame()
        cells = df.map(lambda v: html.escape(str(v)))
        cells["run"] = [
            f"<span title='{html.escape(r.run, quote=True)}'>{html.escape(shorten(r.run, RUN_WIDTH))}</span>"
            for r in self.shown
        ]
        table = cells.to_html(index=False, escape=False, classes="wb-results-table", border=0)
        return f"<div style='overflow-x:auto;white-space:nowrap'>{table}</div>"

    def unreadable_html(self) -> str:
        """The run folders that could not be read, each with its reason, folded away under one line."""
        if not self.unreadable:
            return ""
        items = "".join(f"<li><code>{html.escape(u.run)}</code>: {html.escape(u.reason)}</li>" for u in self.unreadable)
        n = len(self.unreadable)
        return (
            f"<details class='wb-unreadable'><summary>{n} run folder{'s' if n > 1 else ''} not shown: "
            f"unreadable or incomplete</summary><ul>{items}</ul></details>"
        )

    def refresh(self) -> None:
        try:
            self.rows, self.unreadable = runs.scan(self.state.runs_dir)
        except OSError as exc:
            self.info.value = error_html(exc)
            return
        n_runs = len({r.run for r in self.rows})
        where = self.state.runs_dir.resolve()
        if not self.rows:
            self.info.value = (
                message("info", f"No runs yet in {where}: train one in the Train tab.") + self.unreadable_html()
            )
            self.table.value = ""
            self.chart.layout.display = "none"  # no chart yet, rather than an empty image's broken icon
            return
        self.info.value = (
            message("info", f"{n_runs} runs, {len(self.rows)} variants, from {where}") + self.unreadable_html()
        )
        people = sorted({r.user for r in self.rows if r.user})
        chosen = self.person.value
        self.person.options = [("everyone", ""), *((name, name) for name in people)]
        self.person.value = chosen if chosen in people else ""
        self._show()

    @property
    def shown(self) -> list[runs.ResultRow]:
        """The rows the table and chart show: everyone's, or the chosen person's."""
        who = self.person.value
        return [r for r in self.rows if r.user == who] if who else self.rows

    def _show(self) -> None:
        self.table.value = self.table_html()
        self._draw()

    def _draw(self) -> None:
        rows = self.shown
        if rows:
            self.chart.layout.display = None
            results = [r.result for r in rows]
            if self.score_kind.value == "accuracy" and default_score(results) != "accuracy":
                self.score_kind.value = "perplexity"  # a task scored by perplexity has no accuracy to plot
                return
            self.chart.value = png(
                plots.accuracy_memory_figure(
                    results,
                    self.memory_kind.value,
                    runs=[r.run for r in rows],
                    metric=self.score_kind.value,
                    people=[r.user for r in rows],
                )
            )
        runs_now = list(dict.fromkeys(r.run for r in self.rows))
        keep = [r for r in self.pick_runs.value if r in runs_now]
        self.pick_runs.options = runs_now
        self.pick_runs.value = keep
        with_adapters = [r for r in runs_now if runs.Run(self.state.runs_dir / r).trained_variants()]
        chosen = self.export_run.value
        self.export_run.options = with_adapters
        self.export_run.value = chosen if chosen in with_adapters else (with_adapters[0] if with_adapters else None)
        self._export_variants()

    def _export_variants(self) -> None:
        run = self.export_run.value
        options = runs.Run(self.state.runs_dir / run).trained_variants() if run else []
        chosen = self.export_variant.value
        self.export_variant.options = options
        self.export_variant.value = chosen if chosen in options else (options[0] if options else None)

    def export_model(self) -> str | None:
        """Export the chosen run's adapter (merged when asked) into <runs>/exports/, in the background.
        Returns the reason when it cannot start (also shown)."""
        from ..export import export

        run, variant, merge = self.export_run.value, self.export_variant.value, self.export_merge.value
        if not run or not variant:
            self.export_model_info.value = message("warn", "No run with an adapter yet: train one first.")
            return "no adapter"
        name = f"{Path(run).name}-{variant}" + ("-merged" if merge else "")
        out = runs.claim_run_dir(self.state.runs_dir / "exports", name)  # a new folder, even with two kernels

        def work() -> None:
            def said(text: str) -> None:
                self.export_model_info.value = message("info", text)

            done = export(self.state.runs_dir / run, variant, out, merge=merge, status=said)
            gap = f"; merge gap {done.gap.describe()}" if done.gap else ""
            self.export_model_info.value = message("ok", f"wrote {done.out.resolve()}{gap}")

        def failed(exc: BaseException, details: str) -> None:
            runs.drop_if_empty(out)
            self.export_model_info.value = error_html(exc, details)

        self.export_model_info.value = message("info", f"exporting {variant} of {run} into {out}…")  # before it runs
        refused = self.state.jobs.start("exporting", work, on_error=failed)
        if refused:
            runs.drop_if_empty(out)
            self.export_model_info.value = message("warn", refused)
        return refused

    def side_by_side(self) -> None:
        """The picked runs' loss and memory curves on one plot each, and their settings in one table."""
        picked = [runs.Run(self.state.runs_dir / name) for name in self.pick_runs.value]
        if not picked:
            for img in (self.overlay_loss, self.overlay_memory):
                img.layout.display = "none"
            self.settings.value = ""
            return
        curves = {
            run.name if len(picked) < 2 else str(run.path.relative_to(self.state.runs_dir)): run.metrics()
            for run in picked
        }
        for img, what in ((self.overlay_loss, "loss"), (self.overlay_memory, "memory")):
            img.value = png(plots.overlay_figure(curves, what))
            img.layout.display = None
        table = runs.settings_table(picked, self.only_differences.value)
        self.settings.value = (
            "<div style='overflow-x:auto;white-space:nowrap'>"
            + table.to_html(classes="wb-settings", border=0)
            + "</div>"
            if len(table)
            else message("info", "These runs share every setting.")
        )

    def export(self) -> Path | None:
        """Every row to <runs>/all_results.csv (written whole), with a download link."""
        if not self.rows:
            self.export_info.value = message("warn", "Nothing to export yet: train a run first.")
            return None
        path = write_csv(
            self.state.runs_dir / "all_results.csv", [r.to_dict() for r in self.rows], runs.ResultRow.field_names()
        )
        data = base64.b64encode(path.read_bytes()).decode()
        self.export_info.value = (
            message("ok", f"wrote {len(self.rows)} rows to {path.resolve()}")
            + f"<a download='all_results.csv' href='data:text/csv;base64,{data}'>"
            "download all_results.csv</a>"
        )
        return path
