"""Results: every run on disk in one table, accuracy against memory on one chart (each score with its 95%
interval; runs of one setting pooled like seeds on request), runs side by side with their paired verdicts, CSV
export.

Long because: the table, the chart (one point a run, or one a setting), the runs side by side and the two
exports all read the same scanned rows and the same person filter; split, each part would rescan them.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import ipywidgets as widgets

from workbench.analysis import plots
from workbench.analysis.eval_plan import seed_spread
from workbench.analysis.settings import Setting, settings, settings_frame
from workbench.analysis.verdicts import pair, short_titles, trained_count, within_run
from workbench.core.config import VARIANTS
from workbench.core.files import write_csv
from workbench.experiments.study.reading import studies_in
from workbench.records import runs, scan
from workbench.records.results import default_score, readable, shorten
from workbench.ui.common import error_html, image, message, png, verdicts_html
from workbench.ui.state import AppState

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
# a class's folder: the table pages where the chart turns into a class's, and the chart marks the page's rows
PAGE_ROWS = plots.CLASS_POINTS


def chart_caption(groups: list[Setting], metric: str, pooled: bool) -> str:
    """What the chart's marks are, counted from the points drawn: a browser or a reader sees what the bars mean
    and how many points have one (a run from before intervals were kept has none)."""
    drawn = [g for g in groups if g.mean(metric) is not None]
    with_bar = sum(g.interval(metric) is not None for g in drawn)
    what = "each point is one run's variant"
    if pooled:
        repeated = sum(g.n > 1 for g in drawn)
        what = (
            f"each point is the mean of a setting's runs ({repeated} of {len(drawn)} settings repeated; "
            "each run a faint dot)"
        )
    return (
        f"<div class='wb-chart-caption' style='font-size:90%;color:#555'>{html.escape(what)}; error bars: 95% "
        f"intervals ({with_bar} of {len(drawn)} points have one); hollow: not told apart from the frontier</div>"
    )


def run_title(variant: str, run: str) -> str:
    """What a sentence calls one variant of one run: "LoRA of 20261201-1…-r8-all-linear"."""
    return f"{VARIANTS[variant].short if variant in VARIANTS else variant} of {shorten(run, RUN_WIDTH)}"


def run_pairs(a: runs.Run, a_name: str, b: runs.Run, b_name: str, runs_root: Path | None = None) -> list[str]:
    """The paired verdicts of two runs: each variant both ran against itself (or, two sweep points of one
    variant each, the one against the other), or why they cannot be paired, with each one's intervals then."""
    ra, rb = {r.name: r for r in a.results()}, {r.name: r for r in b.results()}
    common = [v for v in ra if v in rb]
    pairs = [(v, v) for v in common] or ([(next(iter(ra)), next(iter(rb)))] if ra and rb else [])
    sa, sb = a.scores(), b.scores()
    out = []
    for va, vb in pairs:
        ta, tb = run_title(va, a_name), run_title(vb, b_name)
        spread = seed_spread(a.read()["config"], runs_root)
        found = pair(ta, sa.get(va), tb, sb.get(vb), spread, trained_count(va, vb))
        out += found.sentences()
        if found.unpaired:  # then the intervals alone, side by side
            out += [
                f"{t}: accuracy {r.with_text('accuracy', 100, 1)} %"
                if r.accuracy is not None
                else f"{t}: eval loss {r.with_text('eval_loss', 1, 4)}"
                for t, r in ((ta, ra[va]), (tb, rb[vb]))
            ]
    return out


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
        self.pool = widgets.Checkbox(
            value=False,
            description="pool seeds",
            indent=False,
            layout=widgets.Layout(width="auto"),
            tooltip="Runs of the same settings but the seed (a repeated run's seeds, a class's runs of one "
            "setting) drawn as one point: their mean with its 95% interval, each run a faint dot, and a table "
            "of each setting's mean, spread and interval",
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
        self.pair_verdicts = widgets.HTML()  # the picked runs' paired comparisons
        self.export_button = widgets.Button(
            description="Export CSV", icon="download", tooltip="Write every row to a CSV file in the runs folder"
        )
        # export: a run's adapter with a model card, or merged into its base (workbench.engine.export)
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
        self.page = widgets.Dropdown(
            description="rows",
            options=[("all", 0)],
            value=0,
            layout=widgets.Layout(width="260px", display="none"),
            tooltip="A page of the table; the chart marks these rows' points with their numbers (the # column)",
        )
        self.table = widgets.HTML()
        self.chart = image(max_width="100%")  # drawn at the width it is shown: the legend stays readable
        self.caption = widgets.HTML()  # what the chart's bars and dots are
        self.pooled_table = widgets.HTML()  # with "pool seeds": a row per setting
        self.export_info = widgets.HTML()
        self.studies = widgets.HTML()  # the sweeps' Optuna studies in the runs folder: trials by state
        super().__init__(
            [
                widgets.HBox([self.refresh_button, self.export_button]),
                self.info,
                self.studies,
                self.page,
                self.table,
                widgets.HBox(
                    [self.score_kind, self.memory_kind, self.person, self.pool],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                self.chart,
                self.caption,
                self.pooled_table,
                self.export_info,
                widgets.HTML("<b>Runs side by side</b>"),
                widgets.HBox([self.pick_runs, self.only_differences]),
                widgets.HBox([self.overlay_loss, self.overlay_memory], layout=widgets.Layout(flex_flow="row wrap")),
                self.pair_verdicts,
                self.settings,
                widgets.HTML("<b>Export an adapter</b>"),
                widgets.HBox([self.export_run, self.export_variant]),
                widgets.HBox([self.export_merge, self.export_model_button]),
                self.export_model_info,
            ]
        )
        self.add_class("wb-results")
        self.rows: list[scan.ResultRow] = []
        self.unreadable: list[scan.Unreadable] = []
        self.refresh_button.on_click(lambda _: self.refresh())
        self.export_button.on_click(lambda _: self.export())
        self.export_run.observe(lambda _: self._export_variants(), "value")
        self.export_model_button.on_click(lambda _: self.export_model())
        self.memory_kind.observe(lambda _: self._draw(), "value")
        self.score_kind.observe(lambda _: self._draw(), "value")
        self.person.observe(lambda _: self._show(), "value")
        self.page.observe(lambda _: None if self._paging else self._show(), "value")
        self._paging = False  # the page choices are being set: no redraw for each
        self.pool.observe(lambda _: self._draw(), "value")
        self.pick_runs.observe(lambda _: self.side_by_side(), "value")
        self.only_differences.observe(lambda _: self.side_by_side(), "value")
        self.state.subscribe(lambda what: self.refresh() if what in ("runs", "run") else None)
        self.refresh()

    def frame(self, rows: list[scan.ResultRow] | None = None):
        """The rows (all shown, by default) as a pandas DataFrame in readable units (what the table shows)."""
        import pandas as pd

        rows = self.shown if rows is None else rows

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
            for r in rows
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
        start, rows = self.page_rows()
        df = self.frame(rows)
        cells = df.map(lambda v: html.escape(str(v)))
        cells["run"] = [
            f"<span title='{html.escape(r.run, quote=True)}'>{html.escape(shorten(r.run, RUN_WIDTH))}</span>"
            for r in rows
        ]
        if len(rows) < len(self.shown):  # paged: the number the chart writes beside each of these rows' points
            cells.insert(0, "#", [str(start + i + 1) for i in range(len(rows))])
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
            self.rows, self.unreadable = scan.scan(self.state.runs_dir)
        except OSError as exc:
            self.info.value = error_html(exc)
            return
        n_runs = len({r.run for r in self.rows})
        where = self.state.runs_dir.resolve()
        self.studies.value = studies_html(studies_in(self.state.runs_dir))
        if not self.rows:
            self.info.value = (
                message("info", f"No runs yet in {where}: train one in the Train tab.") + self.unreadable_html()
            )
            self.table.value = self.caption.value = self.pooled_table.value = ""
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
    def shown(self) -> list[scan.ResultRow]:
        """The rows the table and chart show: everyone's, or the chosen person's."""
        who = self.person.value
        return [r for r in self.rows if r.user == who] if who else self.rows

    def page_rows(self) -> tuple[int, list[scan.ResultRow]]:
        """The table's page: where it starts among the rows shown, and its rows (all of them, up to PAGE_ROWS)."""
        shown = self.shown
        if len(shown) <= PAGE_ROWS:
            return 0, shown
        start = self.page.value if self.page.value < len(shown) else 0
        return start, shown[start : start + PAGE_ROWS]

    def _pages(self) -> None:
        """The page choices for the rows shown: one page a PAGE_ROWS rows, hidden when they fit on one."""
        n = len(self.shown)
        starts = list(range(0, n, PAGE_ROWS)) if n > PAGE_ROWS else [0]
        chosen = self.page.value
        self._paging = True
        try:
            self.page.options = (
                [(f"{i + 1}–{min(i + PAGE_ROWS, n)} of {n}", i) for i in starts] if n > PAGE_ROWS else [("all", 0)]
            )
            self.page.value = chosen if chosen in starts else 0
        finally:
            self._paging = False
        self.page.layout.display = None if n > PAGE_ROWS else "none"

    def _show(self) -> None:
        self._pages()
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
            metric = self.score_kind.value
            start, page = self.page_rows()
            paged = not self.pool.value and len(page) < len(rows)  # then the chart marks the table's page
            if self.pool.value:
                groups = self.settings_groups(rows)
                label = self.setting_labels(groups)
                fig = plots.settings_figure(groups, self.memory_kind.value, metric, label=lambda g: label[g.key])
                frame = settings_frame(groups, label=lambda g: label[g.key])
                self.pooled_table.value = (
                    "<div style='overflow-x:auto;white-space:nowrap'>"
                    + frame.to_html(index=False, na_rep="", border=0, classes="wb-pooled-table")
                    + "</div>"
                )
            else:
                groups = [Setting(str(i), [r.result]) for i, r in enumerate(rows)]  # one point a row
                fig = plots.accuracy_memory_figure(
                    results,
                    self.memory_kind.value,
                    runs=[r.run for r in rows],
                    metric=metric,
                    people=[r.user for r in rows],
                    numbers=[i + 1 if paged and start <= i < start + len(page) else None for i in range(len(rows))],
                )
                self.pooled_table.value = ""
            self.chart.value = png(fig)
            self.caption.value = chart_caption(groups, metric, self.pool.value)
            if paged:
                self.caption.value += (
                    "<div class='wb-chart-caption' style='font-size:90%;color:#555'>circled and numbered: the rows "
                    "of the table's page (its # column); pick another page above the table to find other runs</div>"
                )
        runs_now = list(dict.fromkeys(r.run for r in self.rows))
        if list(self.pick_runs.options) != runs_now:  # a thousand choices sent again for nothing take a while
            keep = [r for r in self.pick_runs.value if r in runs_now]
            self.pick_runs.options = runs_now
            self.pick_runs.value = keep
        saved = {r.run for r in self.rows if r.adapters}
        with_adapters = [r for r in runs_now if r in saved]
        if list(self.export_run.options) != with_adapters:
            chosen = self.export_run.value
            self.export_run.options = with_adapters
            self.export_run.value = chosen if chosen in with_adapters else (with_adapters[0] if with_adapters else None)
        self._export_variants()  # the chosen run's adapters may have changed though the list did not

    def config_of(self, row: scan.ResultRow) -> dict:
        """The settings of a row's run (results.json's config), what tells repeats of one setting apart."""
        return row.config or {"run": row.run}  # a row made by hand (tests): a setting of its own

    def settings_groups(self, rows: list[scan.ResultRow] | None = None) -> list[Setting]:
        """The rows grouped by setting (the same settings but the seed, the same variant): seeds and a class's
        runs of one setting pooled."""
        rows = self.shown if rows is None else rows
        return settings([(self.config_of(r), r.result, r.run, r.user) for r in rows])

    @staticmethod
    def setting_labels(groups: list[Setting]) -> dict[str, str]:
        """A name per setting: its variant, base, rank and targets, with its first run's name where two settings
        share those (they differ in steps, say)."""
        plain = [g.first.label() for g in groups]
        return {
            g.key: text if plain.count(text) == 1 else f"{text} · {shorten(g.runs[0], RUN_WIDTH)}"
            for g, text in zip(groups, plain)
        }

    def _export_variants(self) -> None:
        run = self.export_run.value
        options = runs.Run(self.state.runs_dir / run).trained_variants() if run else []
        chosen = self.export_variant.value
        self.export_variant.options = options
        self.export_variant.value = chosen if chosen in options else (options[0] if options else None)

    def export_model(self) -> str | None:
        """Export the chosen run's adapter (merged when asked) into <runs>/exports/, in the background.
        Returns the reason when it cannot start (also shown)."""
        from workbench.engine.export import export

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
            self.settings.value = self.pair_verdicts.value = ""
            return
        self.pair_verdicts.value = self.verdicts_html(picked)
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

    def pair_sentences(self, picked: list[runs.Run]) -> list[str]:
        """One picked run: its variants against each other; two: each variant against its namesake in the other."""
        try:
            if len(picked) == 1:
                run = picked[0]
                names = [r.name for r in run.results()]
                spread = seed_spread(run.read()["config"], self.state.runs_dir)
                pairings = within_run(run.scores(), names, short_titles(names), spread)
                return [s for p in pairings for s in p.sentences()]
            a, b = picked
            root = self.state.runs_dir
            return run_pairs(a, str(a.path.relative_to(root)), b, str(b.path.relative_to(root)), root)
        except (OSError, ValueError, KeyError, TypeError):  # a run damaged since the scan: its verdicts left out
            return []

    def verdicts_html(self, picked: list[runs.Run]) -> str:
        if len(picked) > 2:
            return message(
                "info",
                "Pick one run (its variants against each other) or two to see whether a "
                "difference between them is real.",
            )
        return verdicts_html(self.pair_sentences(picked))

    def export(self) -> Path | None:
        """Every row to <runs>/all_results.csv (written whole), with a download link."""
        if not self.rows:
            self.export_info.value = message("warn", "Nothing to export yet: train a run first.")
            return None
        path = write_csv(
            self.state.runs_dir / "all_results.csv", [r.to_dict() for r in self.rows], scan.ResultRow.field_names()
        )
        data = base64.b64encode(path.read_bytes()).decode()
        self.export_info.value = (
            message("ok", f"wrote {len(self.rows)} rows to {path.resolve()}")
            + f"<a download='all_results.csv' href='data:text/csv;base64,{data}'>"
            "download all_results.csv</a>"
        )
        return path


def studies_html(found: list[dict]) -> str:
    """The sweeps' studies, one line each: folder, study, trials by state and the command that shows it."""
    if not found:
        return ""
    lines = []
    for s in found:
        if s.get("error"):
            lines.append(f"<li>{html.escape(s['folder'])}: not a readable study ({html.escape(s['error'])})</li>")
            continue
        tally = ", ".join(f"{n} {state}" for state, n in sorted(s["trials"].items())) or "no trials yet"
        lines.append(
            f"<li>{html.escape(s['folder'])} · study <code>{html.escape(s['study'])}</code>: {html.escape(tally)}"
            f" · <code>{html.escape(s['command'])}</code></li>"
        )
    summary = f"<summary>sweeps as studies ({len(found)})</summary>"
    return f"<details class='wb-studies'>{summary}<ul>{''.join(lines)}</ul></details>"
