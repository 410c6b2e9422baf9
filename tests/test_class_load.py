"""Everyone presses Start at once, small: three runs of the tiny model in three processes started together, one
machine's admission ledger between them (bench/bench_class_load.py is the full size: twelve quickstart runs)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from test_compare_cli import tiny_config

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
