"""A class sharing one machine and one runs folder: three students writing runs at once (each run says who made
it; Results colours and filters by person), and runs started together taking turns for memory, first come first
served, all finishing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import TESTS, tiny_config

from workbench.records import runs, scan
from workbench.ui import Workbench

STUDENT = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
from helpers import tiny_config
from workbench.experiments.comparison import run_compare
from workbench.core.config import RunConfig
from workbench.records.runs import claim_run_dir
model, data, root, _, start, rank = sys.argv[1:7]
while time.time() < float(start):
    time.sleep(0.005)
out = claim_run_dir(Path(root), "20261201-120000-lora-r4-all-linear")  # all three ask for one name at once
d = tiny_config(model, data, variants="lora", steps=2).to_dict()
d["lora"]["rank"] = int(rank)
run_compare(RunConfig.from_dict(d), out)
"""


@pytest.fixture(scope="module")
def class_folder(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    """Three students (three processes, three names) writing runs into one folder at the same time."""
    root = tmp_path_factory.mktemp("class-runs")
    start = time.time() + 4
    tests = str(TESTS)
    procs = []
    for name, rank in (("ana", 2), ("bo", 4), ("chen li", 8)):
        env = {**os.environ, "WORKBENCH_USER": name, "OMP_NUM_THREADS": "1"}
        args = [str(tiny_model_dir), str(tiny_jsonl), str(root), tests, str(start), str(rank)]
        procs.append(subprocess.Popen([sys.executable, "-c", STUDENT, *args], env=env, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    return root


def test_three_writers_at_once_each_get_a_run_that_records_who_made_it(class_folder):
    folders = sorted(p.name for p in class_folder.iterdir())
    assert len(folders) == 3  # one name asked for, three folders given
    users = {json.loads((class_folder / f / "results.json").read_text())["user"] for f in folders}
    assert users == {"ana", "bo", "chen li"}
    rows, bad = scan.scan(class_folder)
    assert not bad and {r.user for r in rows} == users


def test_results_colours_and_filters_the_class_by_person(class_folder, tiny_model_dir, tiny_jsonl, monkeypatch):
    from workbench.analysis import plots

    monkeypatch.setenv("WORKBENCH_RUNS", str(class_folder))
    drawn = []
    real = plots.accuracy_memory_figure
    monkeypatch.setattr(plots, "accuracy_memory_figure", lambda *a, **k: drawn.append(k) or real(*a, **k))
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl))  # the runs folder from WORKBENCH_RUNS
    panel = wb.results
    assert wb.state.runs_dir == class_folder
    assert [v for _, v in panel.person.options] == ["", "ana", "bo", "chen li"]
    assert sorted(drawn[-1]["people"]) == ["ana", "bo", "chen li"]
    assert "<td>ana</td>" in panel.table.value and "<td>bo</td>" in panel.table.value
    panel.person.value = "bo"
    assert {r.user for r in panel.shown} == {"bo"} and drawn[-1]["people"] == ["bo"]
    assert "<td>ana</td>" not in panel.table.value


def test_the_chart_colours_points_by_person_and_names_them(class_folder):
    from workbench.analysis import plots

    rows = scan.all_results(class_folder)
    fig = plots.accuracy_memory_figure([r.result for r in rows], people=[r.user for r in rows], metric="eval_loss")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(": lora" in label and "ana" in label for label in labels)
    from matplotlib.collections import PathCollection

    # the points (not their error bars): a hollow one keeps its person's colour on its edge
    colours = {tuple(c.get_edgecolor()[0]) for c in ax.collections if isinstance(c, PathCollection)}
    assert len(colours) == 3  # one colour a person


def test_the_setup_tab_name_is_recorded_with_the_run_and_checked(tiny_model_dir, tiny_jsonl, tmp_path):
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl, steps=1), runs_dir=tmp_path / "runs")
    wb.state.config = wb.state.config.__class__.from_dict({**wb.state.config.to_dict(), "variants": ["lora"]})
    wb.setup.user.value = "a/b"  # would be a folder separator
    assert "name:" in wb.setup.user_info.value and wb.state.user != "a/b"
    wb.setup.user.value = "Dana K"
    assert wb.state.user == "Dana K" and wb.setup.user_info.value == ""
    assert wb.train.start() is None
    assert wb.wait(120)
    run = runs.Run(wb.train.run_dir)
    assert "-Dana_K-" in run.name and run.read()["user"] == "Dana K"


RUN = """
import json, sys
from workbench.experiments.comparison import run_compare
from workbench.core.config import RunConfig
from workbench.core.events import Hooks
cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
run_compare(cfg, sys.argv[2], Hooks(on_status=lambda m: print(m, file=sys.stderr, flush=True)), user=sys.argv[3])
"""


def test_runs_started_together_take_turns_first_come_first_served_and_all_finish(tmp_path, tiny_model_dir, tiny_jsonl):
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=1, eval_examples=0)
    home = tmp_path / "home"
    # one run at a time, whatever the cores: every run after the first waits in line
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_RUNS_AT_ONCE": "1", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, json.dumps(cfg.to_dict()), str(tmp_path / "runs" / f"s{i}"), f"student {i}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    said = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [s[-800:] for s in said]
    assert all((tmp_path / "runs" / f"s{i}" / "results.json").is_file() for i in range(3))
    assert sum("waiting for its turn: " in s for s in said) >= 2  # the line, as the Train tab and the CLI say it
    with sqlite3.connect(home / "admission.sqlite") as db:
        rows = db.execute("SELECT id, admitted, released FROM runs ORDER BY id").fetchall()
    assert len(rows) == 3 and all(adm and rel for _, adm, rel in rows)  # every turn given back
    by_admission = [i for i, *_ in sorted(rows, key=lambda r: r[1])]
    assert by_admission == [i for i, *_ in rows]  # admitted in the order they queued
    for (_, _, released), (_, admitted, _) in zip(rows, rows[1:]):
        assert admitted >= released  # one at a time: each started after the one before ended
