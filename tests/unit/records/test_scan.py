"""Every run under a folder (records.scan): a complete run read back whole; a damaged or foreign results.json
(any value in any field, hypothesis) listed as unreadable with its reason, never raised; each run read once and
kept, in memory and on disk, and only a changed one read again."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import DAMAGES, NOT_A_NUMBER, OTHER_LAYOUTS, good_doc, write_class_folder, write_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.core.files import write_json
from workbench.records import runs, scan
from workbench.records.results import ROW_CHECKS, VariantResult

SOME = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_complete_run_reads_back_whole():
    with tempfile.TemporaryDirectory() as tmp:
        write_doc(Path(tmp) / "good", good_doc())
        rows, bad = scan.scan(Path(tmp))
    assert bad == [] and [r.result.name for r in rows] == ["base", "lora"]
    assert rows[1].result == VariantResult.from_dict(good_doc()["variants"][1]) and rows[1].user == "ada"


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
    root = write_class_folder(tmp_path / "runs", 40)
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
    root = write_class_folder(tmp_path / "runs", 12)
    first, _ = scan.scan(root)
    forget_in_memory(root)
    counted.clear()
    again, _ = scan.scan(root)
    assert counted == [] and again == first and again[1].config == first[1].config


def test_an_unreadable_folder_is_kept_as_unreadable_until_it_changes(tmp_path, counted):
    root = write_class_folder(tmp_path / "runs", 3)
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

    root = write_class_folder(tmp_path / "runs", 5)
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
    root = write_class_folder(tmp_path / "runs", 4)
    rows, bad = scan.scan(root)
    assert len(rows) == 8 and not bad


def test_an_older_run_without_new_fields_still_reads(tmp_path):
    write_json(
        tmp_path / "old" / "results.json",
        {"config": {}, "device": "cuda (A100, bfloat16)", "variants": [{"name": "lora", "bits": 16}]},
    )
    run = runs.Run(tmp_path / "old")
    assert run.device_type == "cuda"  # told by the description, as older runs wrote it
    (res,) = run.results()
    assert res.name == "lora" and res.status == "done" and res.accuracy is None
    (row,) = scan.all_results(tmp_path)
    assert row.run == "old" and row.result == res
    # a field this version does not know is another version's layout: listed with its name, not dropped
    write_json(tmp_path / "newer" / "results.json", {"config": {}, "variants": [{"name": "lora", "bits": 16, "x": 1}]})
    assert [(u.run, u.reason) for u in scan.scan(tmp_path)[1]] == [
        (
            "newer",
            "results.json: written by another version of the workbench, or damaged: variants[0]: unknown field 'x'",
        )
    ]
