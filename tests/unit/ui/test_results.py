"""The Results tab (ui.results): every run on disk with its chart and export, seeds and a class pooled, runs
paired only on the same examples, damaged folders listed beside the good ones, everything a run folder says
escaped, and a class's chart paged."""

from __future__ import annotations

import csv
import html
import io
import re
import shutil
import tempfile
from pathlib import Path

import ipywidgets as widgets
import pytest
from helpers import DAMAGES, OTHER_LAYOUTS, good_doc, tiny_config, write_class_folder, write_doc
from hypothesis import HealthCheck, given, settings
from PIL import Image

from workbench.analysis import plots
from workbench.records import runs, scan
from workbench.records.results import MESSAGE_LIMIT, TEXT_LIMIT
from workbench.ui import AppState, ResultsPanel, Workbench


@pytest.fixture
def counted(monkeypatch):
    """How many run folders the scan reads (a kept one is not read again)."""
    reads = []
    real = scan.rows_of
    monkeypatch.setattr(scan, "rows_of", lambda run, root: reads.append(run.name) or real(run, root))
    return reads


def test_the_results_table_pages_and_the_chart_marks_the_page(tmp_path, monkeypatch):
    root = write_class_folder(tmp_path / "runs", 35, people=5)  # 70 rows: three pages of 30
    drawn = []
    real = plots.accuracy_memory_figure
    monkeypatch.setattr(plots, "accuracy_memory_figure", lambda *a, **k: drawn.append(k) or real(*a, **k))
    panel = ResultsPanel(AppState(runs_dir=root))
    assert panel.page.layout.display is None
    assert [label for label, _ in panel.page.options] == ["1–30 of 70", "31–60 of 70", "61–70 of 70"]
    assert panel.table.value.count("</tr>") == 31  # the heading and one page
    assert "<th>#</th>" in panel.table.value
    assert [n for n in drawn[-1]["numbers"] if n is not None] == list(range(1, 31))
    panel.page.value = 60
    assert panel.table.value.count("</tr>") == 11 and "<td>61</td>" in panel.table.value
    assert [n for n in drawn[-1]["numbers"] if n is not None] == list(range(61, 71))
    panel.person.value = "student-01"  # 14 rows: one page, no pager
    assert panel.page.layout.display == "none" and "<th>#</th>" not in panel.table.value
    assert panel.table.value.count("</tr>") == 15


def test_the_pooled_chart_reads_settings_from_the_scan(tmp_path, counted):
    root = write_class_folder(tmp_path / "runs", 6, people=3)
    panel = ResultsPanel(AppState(runs_dir=root))
    counted.clear()
    reads = []
    real = runs.Run.read
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs.Run, "read", lambda self: reads.append(self.name) or real(self))
        panel.pool.value = True
    assert reads == [] and counted == []  # pooling groups by the settings the scan kept
    assert "each point is the mean of a setting" in panel.caption.value


def test_the_results_tab_exports_the_chosen_adapter(finished_run, tiny_model_dir, tiny_jsonl):

    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=finished_run.path.parent)
    panel = wb.results
    assert panel.export_run.value == finished_run.name and list(panel.export_variant.options) == [
        "lora",
        "lora8",
        "qlora",
    ]
    panel.export_variant.value = "qlora"
    panel.export_merge.value = True
    assert panel.export_model() is None
    assert wb.wait(120)
    assert "wrote" in panel.export_model_info.value and "merge gap" in panel.export_model_info.value
    out = finished_run.path.parent / "exports" / f"{finished_run.name}-qlora-merged"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    panel.refresh()
    assert {r.run for r in panel.rows} == {finished_run.name} and not panel.unreadable  # an export is not a run


FEW = settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MiB = 2**20


def test_a_string_where_a_number_belongs_no_longer_takes_the_tab_down(tmp_path):
    """The issue's case: a hand-edited accuracy. Opening Results raised TypeError from the table's sums."""
    doc = good_doc()
    doc["variants"][1]["peak_memory_bytes"] = "900"
    write_doc(tmp_path / "edited", doc)
    write_doc(tmp_path / "good", good_doc())
    panel = ResultsPanel(AppState(runs_dir=tmp_path))
    assert {r.run for r in panel.rows} == {"good"}
    assert "<code>edited</code>: results.json: written by another version of the workbench, or damaged: " in (
        panel.info.value
    )
    assert "peak_memory_bytes must be a number; got &#x27;900&#x27;" in panel.info.value


@FEW
@given(damage=DAMAGES, text=OTHER_LAYOUTS)
def test_the_results_panel_opens_on_a_damaged_folder(damage, text):
    doc = good_doc()
    damage(doc)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_doc(root / "good", good_doc())
        write_doc(root / "damaged", doc)
        write_doc(root / "other", text)
        panel = ResultsPanel(AppState(runs_dir=root))
        assert {r.run for r in panel.rows} == {"good"} and bytes(panel.chart.value).startswith(b"\x89PNG")
        assert "2 run folders not shown" in panel.info.value
        panel.refresh()  # and again, as the Refresh button does


def test_a_name_matplotlib_would_read_as_a_formula_is_drawn_as_written(tmp_path):
    """A pair of $ in a folder, module or variant name is mathtext to matplotlib; "$\\foo{$" raised ValueError
    as the chart was drawn, and took the Results tab down with it."""
    from workbench.core.events import MetricEvent

    formula = "$\\foo{$"
    doc = good_doc()
    doc["variants"][1]["target_modules"] = [formula]
    folder = tmp_path / f"run{formula}"
    write_doc(folder, doc)
    metrics = runs.MetricsCSV(folder / "metrics.csv")
    metrics(MetricEvent(f"lora{formula}", 1, 1, 0.5, 1e-3, 100.0, MiB, MiB, 0.5))
    metrics.close()
    panel = ResultsPanel(AppState(runs_dir=tmp_path))
    assert len(panel.rows) == 2 and bytes(panel.chart.value).startswith(b"\x89PNG")
    panel.pick_runs.value = (f"run{formula}",)  # its curve, its legend naming the run and the variant
    assert bytes(panel.overlay_loss.value).startswith(b"\x89PNG")


PLANT = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def html_values(widget) -> list[str]:
    """Every HTML a panel shows: its HTML widgets' values, however deep."""
    out = [widget.value] if isinstance(widget, (widgets.HTML, widgets.HTMLMath)) else []
    for child in getattr(widget, "children", ()):
        out += html_values(child)
    return out


def planted_doc(where: str) -> dict:
    """A run whose every string a run folder can hold (that this version reads) carries HTML and a script."""
    doc = good_doc(user="mallory")
    for key in ("device", "model_path", "task", "scoring", "allocator", "command"):
        doc[key] = f"{key}{PLANT}"
    doc["notes"] = [f"note{PLANT}"]
    doc["config"]["task"] = f"task{PLANT}"
    doc["config"]["model"]["name"] = f"model{PLANT}"
    doc["config"]["columns"] = f"prompt={PLANT}"
    doc["config"]["lora"]["target_modules"] = [f"q_proj{PLANT}"]
    lora = doc["variants"][1]
    lora["target_modules"] = [f"q_proj{PLANT}", "v_proj"]
    lora["base_dtype"] = f"float32{PLANT}"
    lora["error"] = f"error{PLANT}"
    if where == "name":  # a variant name is one of four: a planted one is refused, and its reason shown escaped
        lora["name"] = f"lora{PLANT}"
    return doc


@pytest.mark.parametrize("user", ["mallory", f"m{PLANT}"])
def test_everything_a_run_folder_says_reaches_the_page_escaped(tmp_path, user):
    root = tmp_path / "runs"
    folder = f"run{PLANT.replace('/', '∕')}"  # a folder name can hold anything but a slash
    doc = planted_doc("fields")
    doc["user"] = user
    write_doc(root / folder, doc)
    write_doc(root / f"names{PLANT.replace('/', '∕')}", planted_doc("name"))
    write_doc(root / "sweep" / folder, planted_doc("fields"))  # one level deeper, as sweeps write them
    panel = ResultsPanel(AppState(runs_dir=root))
    assert len(panel.rows) == 4 and len(panel.unreadable) == 1
    # the folder with a planted variant name: its name and its reason (the name cut short) shown as text
    assert html.escape(f"names{PLANT.replace('/', '∕')}") in panel.info.value
    assert "got &#x27;lora&lt;script&gt;" in panel.info.value
    panel.pick_runs.value = tuple(panel.pick_runs.options)  # runs side by side: their settings table
    panel.only_differences.value = False
    assert html.escape(f"model{PLANT}") in panel.settings.value
    panel.person.value = panel.person.options[-1][1]
    panel.export()
    shown = html_values(panel)
    assert html.escape(folder) in panel.table.value and "q_proj&lt;script&gt;" in panel.table.value
    for value in shown:
        assert "<script" not in value.lower() and "<img" not in value.lower(), value


def test_a_run_with_every_text_at_its_limit_still_draws_a_chart(tmp_path):
    """The longest texts the layout accepts: the chart's legend writes them out, and a figure past 65,536
    pixels is one matplotlib refuses to draw."""
    doc = good_doc(user="u" * TEXT_LIMIT)
    lora = doc["variants"][1]
    lora["target_modules"] = ["m" * 99] * 20  # 1,999 characters joined
    lora["base_dtype"] = "d" * TEXT_LIMIT
    lora["error"] = "e" * MESSAGE_LIMIT
    write_doc(tmp_path / ("r" * 200), doc)
    write_doc(tmp_path / "other", good_doc())  # a second person: the legend names people too
    lora["target_modules"] = ["m" * 100] * 20  # 2,019: one past the limit
    write_doc(tmp_path / "over", doc)
    panel = ResultsPanel(AppState(runs_dir=tmp_path))
    assert len(panel.rows) == 4 and [u.run for u in panel.unreadable] == ["over"]
    assert "target_modules must be at most 2,000 characters; got 2,019" in panel.info.value

    width, height = Image.open(io.BytesIO(bytes(panel.chart.value))).size
    assert width < 2**16 and height < 2**16


def test_results_show_every_run_on_disk_with_chart_and_export(trained, tiny_model_dir, tiny_jsonl):
    from workbench.experiments.comparison import run_compare

    root = trained.state.runs_dir
    earlier = tiny_config(tiny_model_dir, tiny_jsonl, steps=2, warmup_steps=1, lr=5e-3)
    earlier.variants = ["lora"]
    run_compare(earlier, root / "sweep" / "earlier")  # a run from before this session, one level deeper
    panel = ResultsPanel(trained.state)
    runs_seen = {r.run for r in panel.rows}
    assert str(Path("sweep") / "earlier") in runs_seen and trained.state.last_run.name in runs_seen
    df = panel.frame()
    assert len(df) == len(panel.rows) >= 4
    assert {"accuracy % (95% CI)", "peak MiB", "rank", "targets"} <= set(df.columns)
    # each score with its interval: "80.0 (69.1–88.0)", as the run's result gives it
    first = panel.shown[0].result
    assert df["accuracy % (95% CI)"].iloc[0] == first.with_text("accuracy", 100, 1)
    assert re.fullmatch(r"\d+\.\d \(\d+\.\d–\d+\.\d\)", df["accuracy % (95% CI)"].iloc[0])
    assert "<table" in panel.table.value and "earlier" in panel.table.value
    # long run names shortened to one line, the whole name on hover
    long_name = trained.state.last_run.name
    assert len(long_name) > 28 and f"title='{long_name}'" in panel.table.value
    assert f">{long_name}<" not in panel.table.value and "white-space:nowrap" in panel.table.value
    assert panel.chart.layout.max_width == "100%"
    assert bytes(panel.chart.value).startswith(b"\x89PNG")
    chart = panel.chart.value
    panel.memory_kind.value = "weight_bytes"
    assert panel.chart.value != chart
    # any score against any cost
    for score in ("eval_loss", "forgetting"):
        panel.score_kind.value = score
        assert bytes(panel.chart.value).startswith(b"\x89PNG")
    # runs side by side: their curves on one plot, and the settings that differ
    this = trained.state.last_run.name
    assert set(panel.pick_runs.options) >= {this, str(Path("sweep") / "earlier")}
    panel.pick_runs.value = (this, str(Path("sweep") / "earlier"))
    assert bytes(panel.overlay_loss.value).startswith(b"\x89PNG") and panel.overlay_memory.layout.display is None
    assert "train.steps" in panel.settings.value and "variants" in panel.settings.value
    assert "lora.rank" not in panel.settings.value  # the same in both: left out
    panel.only_differences.value = False
    assert "lora.rank" in panel.settings.value
    path = panel.export()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(panel.rows) and rows[0]["run"] and "accuracy" in rows[0]
    # the CSV keeps the numbers, the interval's ends in columns of their own
    assert float(rows[0]["accuracy_low"]) <= float(rows[0]["accuracy"]) <= float(rows[0]["accuracy_high"])
    assert "download" in panel.export_info.value and "base64," in panel.export_info.value


def test_results_pool_seeds_and_a_class_and_pair_runs_only_on_the_same_examples(tiny_model_dir, tiny_jsonl, tmp_path):
    from workbench.experiments.comparison import run_compare
    from workbench.experiments.seeds import run_seeds

    root = tmp_path / "runs"
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=2, warmup_steps=1, lr=5e-3)
    cfg.variants = ["lora"]
    run_seeds(cfg, root / "rep", 2, user="ana")  # rep/seed-0 and rep/seed-1
    run_compare(cfg, root / "ben-run", user="ben")  # a classmate's run of the same setting
    fewer = tiny_config(tiny_model_dir, tiny_jsonl, steps=2, warmup_steps=1, lr=5e-3, eval_examples=2)
    fewer.variants = ["lora"]
    run_compare(fewer, root / "fewer", user="ana")  # scored on 2 examples, not 3
    panel = ResultsPanel(AppState(runs_dir=root))
    assert len(panel.rows) == 4
    # one point a run: every one has its bars, and the caption says so
    assert "error bars: 95% intervals (4 of 4 points have one)" in panel.caption.value
    assert panel.pooled_table.value == ""
    before = panel.chart.value
    panel.pool.value = True
    # the two seeds and Ben's run are one setting (3 runs), the 2-example run another
    groups = panel.settings_groups()
    assert sorted(g.n for g in groups) == [1, 3] and panel.chart.value != before
    assert "each point is the mean of a setting&#x27;s runs (1 of 2 settings repeated" in panel.caption.value
    assert "(2 of 2 points have one)" in panel.caption.value
    assert panel.pooled_table.value.count("</tr>") == 3 and "<td>3</td>" in panel.pooled_table.value
    three = next(g for g in groups if g.n == 3)
    ci = three.interval("accuracy")
    assert f"{100 * ci.low:.1f}–{100 * ci.high:.1f}" in panel.pooled_table.value
    assert sorted(three.people) == ["ana", "ana", "ben"]
    panel.person.value = "ben"  # one person's runs pool alone
    assert "(0 of 1 settings repeated" in panel.caption.value
    panel.person.value = ""
    # runs side by side: two runs scored on the same examples pair example by example
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), "ben-run")
    sentences = panel.pair_sentences([runs.Run(root / n) for n in panel.pick_runs.value])
    assert len(sentences) == 3 and all("3 examples" in s for s in sentences[:2]), sentences
    assert "forgetting (general-text loss)" in sentences[2]  # paired on the general text's blocks
    assert sentences[0].startswith("LoRA of rep/seed-0 ") and "LoRA of ben-run" in sentences[0]
    assert (
        "Is the difference real?" in panel.pair_verdicts.value and "cannot be paired" not in panel.pair_verdicts.value
    )
    # the seeds of a data file keep the first seed's held-out split, so they pair too
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), str(Path("rep") / "seed-1"))
    assert (
        "Is the difference real?" in panel.pair_verdicts.value and "cannot be paired" not in panel.pair_verdicts.value
    )
    # runs scored on different examples are never paired: the statement, then each one's interval alone
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), "fewer")
    text = panel.pair_verdicts.value
    assert "were not scored on the same examples, so they cannot be paired" in text
    assert "(3 eval examples)" in text and "(2)" in text and "chance" not in text
    fewer_result = runs.Run(root / "fewer").results()[0]
    assert html.escape(f"LoRA of fewer: accuracy {fewer_result.with_text('accuracy', 100, 1)} %") in text
    panel.pick_runs.value = tuple(panel.pick_runs.options[:3])
    assert "Pick one run" in panel.pair_verdicts.value
    # a run removed between the scan and pooling (a shared folder tidied): a setting of its own, no error
    later = ResultsPanel(AppState(runs_dir=root))
    shutil.rmtree(root / "fewer")
    later.pool.value = True
    assert sorted(g.n for g in later.settings_groups()) == [1, 3] and "(2 of 2 points have one)" in later.caption.value


def test_results_panel_with_no_runs_says_so(tmp_path):
    panel = ResultsPanel(AppState(runs_dir=tmp_path / "none"))
    assert panel.rows == [] and "No runs yet" in panel.info.value
    assert panel.export() is None and "Nothing to export" in panel.export_info.value


def test_a_finished_training_refreshes_results_and_compare(trained):
    assert trained.state.last_run.name in {r.run for r in trained.results.rows}
    assert trained.compare.run.value == trained.state.last_run
