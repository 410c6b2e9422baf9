"""Whatever a run folder holds, the teacher's view holds: in a class every student can write to the shared runs
folder, so any results.json that does not match this version's layout (wrong types, missing or extra fields,
non-finite or negative numbers, very long strings, another layout) is listed as unreadable with its reason, and
never raises in scan.scan or the Results panel; and everything a run folder says reaches the page escaped.
"""

from __future__ import annotations

import html
import io
import json
import math
import tempfile
from pathlib import Path

import ipywidgets as widgets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from workbench.core.config import preset_config
from workbench.records import runs, scan
from workbench.records.results import DOC_CHECKS, MESSAGE_LIMIT, ROW_CHECKS, TEXT_LIMIT, CompareResult, VariantResult
from workbench.ui import AppState, ResultsPanel

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="workbench-hypothesis-"))  # nothing written into the checkout
SOME = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MiB = 2**20


def good_doc(user: str = "ada") -> dict:
    """A results.json as a finished cpu-demo run writes it, every field filled."""
    cfg = preset_config("cpu-demo")
    result = CompareResult(
        config=cfg.to_dict(),
        device="cpu (float32)",
        device_type="cpu",
        model_path="/models/smollm2",
        task="sentiment",
        notes=["a note"],
        allocator="tcmalloc",
        command="workbench compare --preset cpu-demo",
        user=user,
    )
    base = VariantResult("base", 16, base_dtype="float32", weight_bytes=500 * MiB, peak_memory_bytes=600 * MiB)
    lora = VariantResult(
        "lora",
        16,
        rank=8,
        target_modules=["q_proj", "v_proj"],
        trainable_params=921_600,
        total_params=135_000_000,
        weight_bytes=520 * MiB,
        peak_memory_bytes=900 * MiB,
        estimated_peak_bytes=880 * MiB,
        train_seconds=41.0,
        tokens_per_second=250.0,
        final_train_loss=0.3,
        eval_loss=0.4,
        perplexity=1.49,
        accuracy=0.9,
        steps_done=20,
        base_dtype="float32",
        general_loss=3.1,
        forgetting=-0.02,
        eval_examples=60,
        accuracy_low=0.8,
        accuracy_high=0.95,
        eval_loss_low=0.3,
        eval_loss_high=0.5,
        perplexity_low=1.35,
        perplexity_high=1.65,
        forgetting_low=-0.05,
        forgetting_high=0.01,
        eval_seconds=9.0,
    )
    return {**result.to_json(), "variants": [base.to_dict(), lora.to_dict()]}


def write_doc(folder: Path, doc) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc)  # NaN and Infinity as Python's json writes them
    (folder / runs.RESULTS_FILE).write_text(text, encoding="utf-8")


def test_a_complete_run_reads_back_whole():
    with tempfile.TemporaryDirectory() as tmp:
        write_doc(Path(tmp) / "good", good_doc())
        rows, bad = scan.scan(Path(tmp))
    assert bad == [] and [r.result.name for r in rows] == ["base", "lora"]
    assert rows[1].result == VariantResult.from_dict(good_doc()["variants"][1]) and rows[1].user == "ada"


def test_the_layout_table_covers_what_every_writer_writes():
    """DOC_CHECKS is the one list of results.json's keys: CompareResult's and ExperimentResult's all in it."""
    from workbench.experiments.experiment import ExperimentResult

    made = ExperimentResult(config={}, device="cpu", device_type="cpu", model_path="m", task="t")
    assert set(made.to_json()) == set(DOC_CHECKS)
    assert set(ROW_CHECKS) == set(VariantResult.field_names())


# ---------------------------------------------------------------------------- damage, field by field

NUMBER_FIELDS = {
    name: kind
    for name, kind in {
        "trainable_params": "count",
        "total_params": "count",
        "steps_done": "count",
        "eval_examples": "count",
        "rank": "count",
        "weight_bytes": "amount",
        "peak_memory_bytes": "amount",
        "estimated_peak_bytes": "amount",
        "train_seconds": "amount",
        "tokens_per_second": "amount",
        "final_train_loss": "amount",
        "eval_loss": "amount",
        "perplexity": "amount",
        "general_loss": "amount",
        "eval_loss_low": "amount",
        "eval_loss_high": "amount",
        "perplexity_low": "amount",
        "perplexity_high": "amount",
        "eval_seconds": "amount",
        "accuracy": "share",
        "accuracy_low": "share",
        "accuracy_high": "share",
        "forgetting": "signed",
        "forgetting_low": "signed",
        "forgetting_high": "signed",
    }.items()
}
TEXT_FIELDS = {"base_dtype": TEXT_LIMIT, "error": MESSAGE_LIMIT}
DOC_TEXT_FIELDS = {"device": TEXT_LIMIT, "task": TEXT_LIMIT, "user": TEXT_LIMIT, "model_path": 4_096}

NOT_A_NUMBER = st.one_of(
    st.text(max_size=8),  # "0.9": the hand edit that took the tab down
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


def bad_number(kind: str) -> st.SearchStrategy:
    """A value the field must refuse: not a number, not finite, negative where it cannot be, or out of range."""
    out = [NOT_A_NUMBER, st.integers(min_value=2**63, max_value=10**400)]
    if kind != "signed":
        out.append(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
    if kind == "count":
        out.append(st.floats(min_value=0.5, max_value=1e6).filter(lambda v: not v.is_integer()))
    if kind == "share":
        out.append(st.floats(min_value=1.0001, max_value=1e9))
    return st.one_of(out)


def bad_text(limit: int) -> st.SearchStrategy:
    too_long = st.integers(min_value=limit + 1, max_value=limit * 3).map(lambda n: "<b>x</b>" * (n // 8 + 1))
    return st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=3), max_size=2), too_long)


def _set_row(field: str, value):
    def damage(doc: dict) -> None:
        doc["variants"][1][field] = value

    return damage


def _set_doc(field: str, value):
    def damage(doc: dict) -> None:
        doc[field] = value

    return damage


def _drop(where: str, field: str):
    def damage(doc: dict) -> None:
        (doc["variants"][1] if where == "row" else doc).pop(field)

    return damage


DAMAGES = st.one_of(
    st.sampled_from(sorted(NUMBER_FIELDS)).flatmap(
        lambda f: bad_number(NUMBER_FIELDS[f]).map(lambda v: _set_row(f, v))
    ),
    st.sampled_from(sorted(TEXT_FIELDS)).flatmap(lambda f: bad_text(TEXT_FIELDS[f]).map(lambda v: _set_row(f, v))),
    st.sampled_from(sorted(DOC_TEXT_FIELDS)).flatmap(
        lambda f: bad_text(DOC_TEXT_FIELDS[f]).map(lambda v: _set_doc(f, v))
    ),
    st.sampled_from(["name", "bits"]).flatmap(
        lambda f: st.one_of(NOT_A_NUMBER, st.just("lora-9"), st.just(32)).map(lambda v: _set_row(f, v))
    ),
    st.sampled_from(["name", "bits"]).map(lambda f: _drop("row", f)),
    st.sampled_from(["config", "variants"]).map(lambda f: _drop("doc", f)),
    st.text(min_size=1, max_size=12).filter(lambda k: k not in ROW_CHECKS).map(lambda k: _set_row(k, 1)),
    st.text(min_size=1, max_size=12)
    .filter(lambda k: k not in DOC_CHECKS and k != "variants")
    .map(lambda k: _set_doc(k, 1)),
    st.sampled_from(["status", "stopped", "notes", "target_modules"]).flatmap(
        lambda f: NOT_A_NUMBER.filter(lambda v: not isinstance(v, (bool, list, str)) or f == "status").map(
            lambda v: _set_doc(f, v) if f in DOC_CHECKS else _set_row(f, v)
        )
    ),
)
# whole files of another layout: an older workbench's, another program's, or not JSON at all
OTHER_LAYOUTS = st.one_of(
    st.sampled_from(['{"variants": [{"name": "lora"}]}', "[1, 2]", "null", '"results"', "{", "[" * 50_000]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5), lambda x: st.lists(x, max_size=3)
    ).map(json.dumps),
)


def _scanned(doc) -> tuple[list, list]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_doc(root / "good", good_doc())
        write_doc(root / "damaged", doc)
        return scan.scan(root)


@SOME
@given(damage=DAMAGES)
def test_a_damaged_results_json_is_listed_unreadable_with_its_reason(damage):
    doc = good_doc()
    damage(doc)
    rows, bad = _scanned(doc)
    assert {r.run for r in rows} == {"good"} and len(rows) == 2  # the good run beside it is untouched
    ((run, reason),) = [(u.run, u.reason) for u in bad]
    assert run == "damaged" and reason.startswith("results.json") and "\n" not in reason
    assert len(reason) < 400  # a value planted in it is cut short: one line under the table


@SOME
@given(text=OTHER_LAYOUTS)
def test_another_layout_is_listed_unreadable(text):
    rows, bad = _scanned(text)
    assert {r.run for r in rows} == {"good"}
    assert [u.run for u in bad] == ["damaged"] and bad[0].reason.startswith("results.json")


@SOME
@given(field=st.sampled_from(sorted(ROW_CHECKS)), value=NOT_A_NUMBER | st.integers() | st.floats() | st.none())
def test_any_value_in_any_field_is_read_or_refused_never_raised(field, value):
    """Values that may be right: the run is a row or listed unreadable, exactly one of them, and the readers
    that do sums with the numbers (the CLI's table, a plan's speeds) take the row."""
    from workbench.analysis.eval_plan import eval_pace
    from workbench.experiments.sweep import measured_speeds
    from workbench.records.results import results_frame

    doc = good_doc()
    doc["variants"][1][field] = value
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_doc(root / "run", doc)
        rows, bad = scan.scan(root)
        assert len(bad) + (len(rows) == 2) == 1
        results_frame([r.result for r in rows])
        eval_pace(root, "cpu")
        measured_speeds(root, "cpu")


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


# ---------------------------------------------------------------------------- everything reaches the page escaped

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
    from PIL import Image

    width, height = Image.open(io.BytesIO(bytes(panel.chart.value))).size
    assert width < 2**16 and height < 2**16
