"""A class's runs folder at full size: each run read once and kept (in memory and on disk), a chart that stays a
screen's size with a legend of groups, and a table that pages with the chart marking the page's points. The
timings are bench/bench_scan.py's (1,000 runs); these tests check what is read and what is drawn."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image
from test_run_folders import good_doc, write_doc

from workbench.analysis import plots
from workbench.core.stats import accuracy_interval
from workbench.records import runs, scan
from workbench.records.results import VariantResult
from workbench.ui import AppState, ResultsPanel

MiB = 2**20


def class_folder(root, n: int, people: int = 30):
    """n runs from `people` people, each a finished cpu-demo run's results.json with its own scores."""
    for i in range(n):
        doc = good_doc(user=f"student-{i % people:02d}")
        lora = doc["variants"][1]
        right = 30 + i % 25
        ci = accuracy_interval(right, 60)
        lora.update(accuracy=right / 60, accuracy_low=ci.low, accuracy_high=ci.high)
        lora["peak_memory_bytes"] = (800 + 7 * i) * MiB
        write_doc(root / f"run-{i:04d}", doc)
    return root


@pytest.fixture
def counted(monkeypatch):
    """How many run folders the scan reads (a kept one is not read again)."""
    reads = []
    real = scan.rows_of
    monkeypatch.setattr(scan, "rows_of", lambda run, root: reads.append(run.name) or real(run, root))
    return reads


def forget_in_memory(root) -> None:
    """What a new kernel starts with: nothing in memory, the scan kept on disk."""
    scan.scanned.pop(str(root.resolve()), None)


def test_each_run_is_read_once_and_only_a_changed_one_again(tmp_path, counted):
    root = class_folder(tmp_path / "runs", 40)
    rows, bad = scan.scan(root)
    assert len(counted) == 40 and len(rows) == 80 and not bad
    counted.clear()
    assert scan.scan(root)[0] == rows and counted == []  # nothing changed: nothing read
    doc = good_doc(user="late")
    write_doc(root / "run-0003", doc)  # rewritten by its owner
    shutil.rmtree(root / "run-0007")  # removed
    write_doc(root / "run-new", good_doc(user="new"))
    rows, _ = scan.scan(root)
    assert sorted(counted) == ["run-0003", "run-new"]
    assert {r.run for r in rows} == {f"run-{i:04d}" for i in range(40) if i != 7} | {"run-new"}
    assert {r.user for r in rows if r.run == "run-0003"} == {"late"}


def test_a_new_kernel_reads_the_scan_kept_on_disk(tmp_path, counted):
    root = class_folder(tmp_path / "runs", 12)
    first, _ = scan.scan(root)
    forget_in_memory(root)
    counted.clear()
    again, _ = scan.scan(root)
    assert counted == [] and again == first and again[1].config == first[1].config


def test_an_unreadable_folder_is_kept_as_unreadable_until_it_changes(tmp_path, counted):
    root = class_folder(tmp_path / "runs", 3)
    write_doc(root / "broken", "{not json")
    _, bad = scan.scan(root)
    counted.clear()
    _, again = scan.scan(root)
    assert counted == [] and [u.run for u in again] == ["broken"] and again == bad
    write_doc(root / "broken", good_doc(user="fixed"))
    rows, bad = scan.scan(root)
    assert counted == ["broken"] and not bad and "fixed" in {r.user for r in rows}


@pytest.mark.parametrize("spoil", ["damaged", "group-writable", "another-version"])
def test_a_kept_scan_that_cannot_be_trusted_is_not_used(tmp_path, counted, spoil):
    import pickle

    root = class_folder(tmp_path / "runs", 5)
    scan.scan(root)
    kept = scan.scan_cache_file(root)
    assert kept.is_file() and kept.stat().st_mode & 0o077 == 0  # nobody else can read or change it
    if spoil == "damaged":
        kept.write_bytes(b"\x80\x05 not a pickle")
    elif spoil == "group-writable":
        kept.chmod(0o660)  # a pickle runs code as it loads: one someone else could change is not loaded
    else:
        doc = pickle.loads(kept.read_bytes())
        kept.write_bytes(pickle.dumps({**doc, "version": scan.SCAN_CACHE_VERSION + 1}))
    forget_in_memory(root)
    counted.clear()
    rows, bad = scan.scan(root)
    assert len(counted) == 5 and len(rows) == 10 and not bad


def test_a_home_that_cannot_be_written_still_scans(tmp_path, monkeypatch, counted):
    home = tmp_path / "home"
    home.mkdir()
    (home / "scan").write_text("a file where the folder would be")
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    root = class_folder(tmp_path / "runs", 4)
    rows, bad = scan.scan(root)
    assert len(rows) == 8 and not bad


def _png_size(fig) -> tuple[int, int]:
    from workbench.ui.common import png

    return Image.open(io.BytesIO(png(fig))).size


def test_a_class_chart_is_a_screen_sized_picture_with_a_legend_of_people(tmp_path):
    rows = scan.all_results(class_folder(tmp_path / "runs", 300))
    lora = [r for r in rows if r.result.name == "lora"]
    numbers = [i + 1 if i < 30 else None for i in range(len(lora))]  # the table's first page
    fig = plots.accuracy_memory_figure(
        [r.result for r in lora], people=[r.user for r in lora], runs=[r.run for r in lora], numbers=numbers
    )
    small = plots.accuracy_memory_figure([r.result for r in lora[:5]], people=[r.user for r in lora[:5]])
    assert tuple(fig.get_size_inches()) == (9.6, 5.4)  # 300 points: no taller than a screen
    assert fig.get_size_inches()[1] <= 9.0 and small.get_size_inches()[1] < 9.0
    w, h = _png_size(fig)
    assert w < 2000 and h < 1200
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # 30 people: the 11 with the most runs named with their count, the rest in one grey line, and the frontier
    assert len(labels) == plots.GROUPS_NAMED + 1
    assert labels[0].startswith("student-") and labels[0].endswith("(10)")
    assert any(t.startswith("19 more, in grey (190)") for t in labels) and "frontier" in labels
    marked = sorted(int(t.get_text()) for t in ax.texts)
    assert marked == list(range(1, 31))  # the page's rows, numbered as in the table


def test_a_planted_long_name_does_not_widen_the_chart(tmp_path):
    doc = good_doc(user="x" * 5000)
    write_doc(tmp_path / "runs" / ("y" * 200), doc)
    rows = scan.all_results(tmp_path / "runs")
    fig = plots.accuracy_memory_figure([r.result for r in rows], runs=[r.run for r in rows])
    w, _ = _png_size(fig)
    assert w < 1400
    crowd = [VariantResult("lora", 16, accuracy=0.8, peak_memory_bytes=(900 + i) * MiB) for i in range(40)]
    fig = plots.accuracy_memory_figure(crowd, people=["z" * 5000 if i % 2 else "w" for i in range(40)])
    assert _png_size(fig)[0] < 2000


def test_the_results_table_pages_and_the_chart_marks_the_page(tmp_path, monkeypatch):
    root = class_folder(tmp_path / "runs", 35, people=5)  # 70 rows: three pages of 30
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
    root = class_folder(tmp_path / "runs", 6, people=3)
    panel = ResultsPanel(AppState(runs_dir=root))
    counted.clear()
    reads = []
    real = runs.Run.read
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs.Run, "read", lambda self: reads.append(self.name) or real(self))
        panel.pool.value = True
    assert reads == [] and counted == []  # pooling groups by the settings the scan kept
    assert "each point is the mean of a setting" in panel.caption.value
