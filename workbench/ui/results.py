"""Results: every run on disk in one table, accuracy against memory on one chart, CSV export."""

from __future__ import annotations

import base64
from pathlib import Path

import ipywidgets as widgets

from .. import plots, runs
from ..files import write_csv
from ..results import readable
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
    "peak_memory_bytes",
    "estimated_peak_bytes",
    "weight_bytes",
    "train_seconds",
    "status",
]


class ResultsPanel(widgets.VBox):
    """All runs (this session's and earlier ones found under the runs folder). Shown alone: ResultsPanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", tooltip="Read every run under the runs folder again"
        )
        self.memory_kind = widgets.ToggleButtons(
            options=[("peak memory", "peak_memory_bytes"), ("weight memory", "weight_bytes")],
            value="peak_memory_bytes",
            description="x axis",
            tooltip="Peak memory while training, or the weights alone",
        )
        self.export_button = widgets.Button(
            description="Export CSV", icon="download", tooltip="Write every row to a CSV file in the runs folder"
        )
        self.info = widgets.HTML()
        self.table = widgets.HTML()
        self.chart = image()
        self.export_info = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.refresh_button, self.export_button]),
                self.info,
                self.table,
                self.memory_kind,
                self.chart,
                self.export_info,
            ]
        )
        self.add_class("wb-results")
        self.rows: list[runs.ResultRow] = []
        self.refresh_button.on_click(lambda _: self.refresh())
        self.export_button.on_click(lambda _: self.export())
        self.memory_kind.observe(lambda _: self._draw(), "value")
        self.state.subscribe(lambda what: self.refresh() if what in ("runs", "run") else None)
        self.refresh()

    def frame(self):
        """The rows as a pandas DataFrame in readable units (what the table shows)."""
        import pandas as pd

        rows = [
            {
                "run": r.run,
                **readable(r.result, SHOWN[:2]),
                "4-bit type": r.quant_type,
                **readable(r.result, SHOWN[2:4]),
                "steps": r.steps,
                **readable(r.result, SHOWN[4:]),
            }
            for r in self.rows
        ]
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        for key in ("rank", "bits", "steps"):
            df[key] = df[key].astype("Int64")  # whole numbers, blank where there is none (base has no rank)
        return df.astype(object).where(df.notna(), "")  # blank cells, not <NA>, NaN or None

    def refresh(self) -> None:
        try:
            self.rows = runs.all_results(self.state.runs_dir)
        except OSError as exc:
            self.info.value = error_html(exc)
            return
        n_runs = len({r.run for r in self.rows})
        where = self.state.runs_dir.resolve()
        if not self.rows:
            self.info.value = message("info", f"No runs yet in {where}: train one in the Train tab.")
            self.table.value = ""
            self.chart.value = b""
            return
        self.info.value = message("info", f"{n_runs} runs, {len(self.rows)} variants, from {where}")
        self.table.value = self.frame().to_html(index=False, na_rep="", classes="wb-results-table", border=0)
        self._draw()

    def _draw(self) -> None:
        if self.rows:
            self.chart.value = png(
                plots.accuracy_memory_figure(
                    [r.result for r in self.rows], self.memory_kind.value, runs=[r.run for r in self.rows]
                )
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
