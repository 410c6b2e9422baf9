"""Files written whole or not at all: every failure leaves the old file and no temp file behind."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from helpers import listing

from workbench.core import files


def test_write_json_round_trip(tmp_path):
    path = files.write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5, None], "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None], "p": str(tmp_path)}
    assert listing(path.parent) == ["r.json"]


@pytest.mark.parametrize(
    "bad",
    [
        {("tuple", "key"): 1},  # json cannot write non-string keys, default=str or not
        "circular",
    ],
)
def test_write_json_failure_leaves_old_file(tmp_path, bad):
    if bad == "circular":
        bad = []
        bad.append(bad)
    path = tmp_path / "results.json"
    files.write_json(path, {"old": True})
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        files.write_json(path, {"new": bad})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["results.json"]


def test_write_text_failure_at_replace_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "notes.md"
    files.write_text(path, "old")

    def boom(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        files.write_text(path, "new")
    assert path.read_text() == "old"
    assert listing(tmp_path) == ["notes.md"]


def test_write_csv(tmp_path):
    path = files.write_csv(
        tmp_path / "t.csv",
        [{"a": 1, "b": ["q_proj", "v_proj"], "c": None, "extra": 9}, {"a": 2.5, "b": "all-linear"}],
        ["a", "b", "c"],
    )
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "1", "b": "q_proj,v_proj", "c": ""}, {"a": "2.5", "b": "all-linear", "c": ""}]


def test_write_csv_failure_midway_leaves_old_file(tmp_path):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot format (simulated)")

    path = tmp_path / "results.csv"
    files.write_csv(path, [{"a": 1}], ["a"])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="simulated"):
        files.write_csv(path, [{"a": 2}, {"a": 3}, {"a": Unprintable()}], ["a"])  # two rows already written
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["results.csv"]


def test_save_figure(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = files.save_figure(fig, tmp_path / "plots" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert listing(path.parent) == ["f.png"]


def test_written_files_and_folders_follow_the_umask(tmp_path):
    """Temp files are made 0600 and temp folders 0700; what they become must be readable as the umask says (a
    class sharing one runs folder reads each other's runs)."""
    import os
    import stat

    from workbench.core.files import atomic_dir, write_json, write_text

    old = os.umask(0o022)
    try:
        text = write_text(tmp_path / "a.txt", "x")
        doc = write_json(tmp_path / "b.json", {"a": 1})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("y")
        os.umask(0o077)
        private = write_text(tmp_path / "c.txt", "z")
    finally:
        os.umask(old)
    assert stat.S_IMODE(text.stat().st_mode) == 0o644 and stat.S_IMODE(doc.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_check_writable_dir_leaves_nothing_behind(tmp_path):
    out = files.check_writable_dir(tmp_path / "a" / "b" / "run")
    assert out == tmp_path / "a" / "b" / "run"
    assert listing(tmp_path) == []  # the probe's folders and file are gone again


def test_check_writable_dir_refuses_a_read_only_filesystem(tmp_path, monkeypatch):
    import errno
    import tempfile

    # no read-only mount can be made in a test: the error making a folder raises on one, as on a full disk or in /sys
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(ValueError, match=r"out: .*/made/run cannot be made or written there \(Read-only file system\)"):
        files.check_writable_dir(tmp_path / "made" / "run")
    assert listing(tmp_path) == []  # nothing made, nothing left


def test_check_writable_dir_from_several_processes_at_once(tmp_path):
    """A launcher's ranks check one run folder at the same moment: none may make or remove the others' folders
    (the probe once made and removed the run folder itself, and a rank found it gone or already there)."""
    from concurrent.futures import ThreadPoolExecutor

    def check(i: int) -> Path:
        return files.check_writable_dir(tmp_path / f"run{i // 8}" / "deep")

    with ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(check, range(160)))) == 160
    assert listing(tmp_path) == []


def test_check_writable_dir_refuses_a_folder_it_cannot_write_in(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # root passes access() and chmod; the write is what fails
    with pytest.raises(ValueError, match=r"cannot be made or written there \(Permission denied\)"):
        files.check_writable_dir(tmp_path / "run", "--runs")
    assert listing(tmp_path) == []


def test_remove_stale_temps_removes_only_old_temps_and_restores_an_orphaned_old_copy(tmp_path):
    import tempfile

    run = tmp_path / "runs" / "r"
    (run / "adapters" / "lora").mkdir(parents=True)
    files.write_json(run / "results.json", {"a": 1})
    stale = [
        files.tmp_beside(run / "results.json"),
        files.tmp_beside(run / "loss.png", suffix=".png"),
        Path(tempfile.mkdtemp(prefix=".lora.", dir=run / "adapters")),  # a save cut short
        Path(tempfile.mkdtemp(prefix=".lora.old.", dir=run / "adapters")),  # replaced, the new one in place
    ]
    (stale[2] / "adapter_config.json").write_text("{")
    orphan = Path(tempfile.mkdtemp(prefix=".qlora.old.", dir=run / "adapters"))  # killed between the renames
    (orphan / "qlora").mkdir()
    (orphan / "qlora" / "adapter_config.json").write_text("{}")
    kept = [run / ".ipynb_checkpoints", tmp_path / "runs" / ".git", run / "notes.tmp"]
    kept[0].mkdir()
    kept[1].mkdir()
    kept[2].write_text("mine")
    for path in [*stale, orphan, *kept]:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    young = files.tmp_beside(run / "metrics.json")  # another process's write in progress

    removed = files.remove_stale_temps(tmp_path / "runs", older_than_s=3600)

    assert sorted(removed) == sorted([*stale, orphan])
    assert not any(p.exists() for p in [*stale, orphan])
    assert all(p.exists() for p in [*kept, young, run / "results.json", run / "adapters" / "lora"])
    assert (run / "adapters" / "qlora" / "adapter_config.json").read_text() == "{}"  # moved back under its name
