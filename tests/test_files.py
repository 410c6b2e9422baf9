"""Files written whole or not at all: every failure leaves the old file and no temp file behind."""

import csv
import json

import pytest

from workbench import files


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_json_round_trip(tmp_path):
    path = files.write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5, None], "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None], "p": str(tmp_path)}
    assert _listing(path.parent) == ["r.json"]


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
    assert _listing(tmp_path) == ["results.json"]


def test_write_text_failure_at_replace_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "notes.md"
    files.write_text(path, "old")

    def boom(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        files.write_text(path, "new")
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["notes.md"]


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
    assert _listing(tmp_path) == ["results.csv"]


def test_save_figure(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = files.save_figure(fig, tmp_path / "plots" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _listing(path.parent) == ["f.png"]
