"""One experiment in a YAML file (experiments.experiment): the file round trip, the command that launches it,
and what `workbench train` refuses or cleans up before it starts."""

from __future__ import annotations

import os
import time

import pytest
from helpers import ddp_config

from workbench.experiments import experiment, run_setup
from workbench.experiments.experiment import from_yaml, launch_command, to_yaml, write_config
from workbench.machine import memory
from workbench.machine.distributed import World


def test_yaml_round_trip_and_one_line_errors(tiny_model_dir, tiny_jsonl, tmp_path):
    cfg = ddp_config(tiny_model_dir, tiny_jsonl)
    path = write_config(cfg, tmp_path / "x.yaml")
    assert from_yaml(path) == cfg and to_yaml(cfg).startswith("# One workbench experiment")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"config: .*bad.yaml is not valid YAML at line \d"):
        from_yaml(bad)
    bad.write_text("train:\n  stpes: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="train: unknown setting 'stpes'"):
        from_yaml(bad)
    bad.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must hold settings"):
        from_yaml(bad)
    with pytest.raises(ValueError, match="is not a file"):
        from_yaml(tmp_path / "missing.yaml")


def test_launch_command():
    assert launch_command("runs/a b.yaml", 4) == (
        "accelerate launch --multi_gpu --num_processes 4 --main_process_port 0 -m workbench.cli train 'runs/a b.yaml'"
    )
    assert (
        launch_command("x.yaml", 1)
        == "accelerate launch --num_processes 1 --main_process_port 0 -m workbench.cli train x.yaml"
    )
    assert (
        launch_command("x.yaml", 2, "torchrun")
        == "torchrun --standalone --nproc_per_node 2 -m workbench.cli train x.yaml"
    )
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="processes must be"):
            launch_command("x.yaml", bad)
    with pytest.raises(ValueError, match="launcher must be one of accelerate, torchrun"):
        launch_command("x.yaml", 2, "mpirun")


def test_workbench_train_refuses_what_its_local_processes_could_not_all_load(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    """Two processes of one `workbench train` on one CPU: each checks the free memory before either loads."""
    cfg = ddp_config(tiny_model_dir, tiny_jsonl, variants=("lora",))
    alone = run_setup.setup(cfg).estimate("lora")
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: int(alone * 1.5))  # one fits, two do not
    monkeypatch.setattr(World, "current", classmethod(lambda cls: cls(0, 2, 0, 2)))
    monkeypatch.setattr(World, "main_first", lambda self, work: work())  # no process group in this test

    def no_loading(*a, **k):
        raise AssertionError("weights loaded although the run should have been refused first")

    monkeypatch.setattr(experiment, "load_group", no_loading)
    with pytest.raises(ValueError, match="memory: lora in 2 processes needs about"):
        experiment.run_experiment(cfg, tmp_path / "run")


def test_workbench_train_removes_what_a_killed_write_left_in_its_folder(tiny_model_dir, tiny_jsonl, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".results.json.abcd1234.tmp"  # files.write_json's temp name, as a kill leaves it
    stale.write_text("{")
    young = out / ".metrics.csv.efgh5678.tmp"  # another process's write in progress: left alone
    young.write_text("step")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))
    cfg = ddp_config(tiny_model_dir, tiny_jsonl, variants=("lora",), steps=1)
    experiment.run_experiment(cfg, out)
    assert not stale.exists() and young.exists() and (out / "results.json").is_file()
