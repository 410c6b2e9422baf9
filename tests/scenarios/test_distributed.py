"""One experiment in several processes: `workbench train CONFIG.yaml` under accelerate launch and torchrun on the
CPU (gloo), against the same global batch in one process, the Train tab's exported command among them (the YAML
file itself is tests/unit/experiments/test_experiment.py's).

Why the tolerance is 1e-5 (relative, per step): the two-process step is the one-process step on the same
global batch (train._Shares), so the losses differ only by float32 rounding (each process's matmuls see half
the rows, and the summed loss is added in another order). Measured here: at most 1.2e-7 on the tiny model
(16, 8 and 4 bits, 6 steps) and 6.8e-7 on the embedded model (3 steps). 1e-5 leaves a margin of 15 and
still fails on a real difference: with the gradients left unsynced the tiny model's curve moved by 3e-3 at
step 2, with each process's loss a mean over its own share (not the global batch's) by 5e-4 at step 3.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ddp_config

from workbench import cli
from workbench.core.config import RunConfig
from workbench.experiments.experiment import from_yaml, launch_command, write_config

REL_TOL = 1e-5  # see the module docstring
VENV_BIN = Path(sys.executable).parent  # accelerate and torchrun, as the README's setup installs them


@pytest.fixture
def uneven_jsonl(tmp_path) -> Path:
    """The tiny task with answers of 1 and 4 tokens, so the processes' shares hold different counts of labelled
    tokens: a mean per share, averaged over processes, is then not the global batch's mean."""
    from helpers import tiny_examples

    rows = [(r.prompt, r.answer if r.answer == "positive" else "negative red green blue") for r in tiny_examples()]
    path = tmp_path / "uneven.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in rows), encoding="utf-8")
    return path


def launched_env() -> dict:
    # one thread per process: two processes on two busy cores spin-wait badly with more
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def assert_same_curve(many: list[float], one: list[float]) -> None:
    assert len(many) == len(one) and many, (many, one)
    print("largest relative gap per step:", max(abs(a - b) / abs(b) for a, b in zip(many, one)))
    for step, (a, b) in enumerate(zip(many, one), 1):
        assert abs(a - b) <= REL_TOL * abs(b), f"step {step}: {a} in several processes, {b} in one"


def files_of(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


# ---------------------------------------------------------------------------- two processes against one
def test_the_exported_command_trains_in_two_processes_as_one_does(tiny_model_dir, uneven_jsonl, tmp_path, capsys):
    """The Train tab's Export run at 4 bits (bitsandbytes' QLoRA under DDP on the CPU), its accelerate command
    run as shown: two gloo processes with 2 examples each and accumulation 2, against one process with 4."""
    from workbench.ui import AppState, TrainPanel

    cfg = ddp_config(tiny_model_dir, uneven_jsonl, batch_size=2, grad_accum=2)
    panel = TrainPanel(AppState(cfg, runs_dir=tmp_path / "runs"))
    panel.processes.value = 2
    [(path, command)] = panel.export_run()
    assert command == launch_command(path, 2) and command in panel.export_out.value
    assert from_yaml(path) == cfg
    done = subprocess.run(
        command, shell=True, cwd=tmp_path, env=launched_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    many = path.with_suffix("")  # the run folder: beside the config, named after it
    assert (
        done.stdout.count("wrote ") == 1 and done.stderr.count("[workbench] training qlora") == 1
    )  # rank 0 alone speaks
    assert "global batch 8 = 2 per device × 2 processes × 2 accumulation (gloo)" in done.stdout

    one = RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "batch_size": 4}})
    single = write_config(one, tmp_path / "one.yaml")
    assert cli.main(["train", str(single), "--out", str(tmp_path / "one")]) == 0
    assert "global batch 8 = 4 per device × 1 process × 2 accumulation" in capsys.readouterr().out

    assert_same_curve(losses(many), losses(tmp_path / "one"))
    doc = json.loads((many / "results.json").read_text(encoding="utf-8"))
    assert (doc["world_size"], doc["per_device_batch"], doc["grad_accum"], doc["global_batch"]) == (2, 2, 2, 8)
    assert doc["backend"] == "gloo" and [v["name"] for v in doc["variants"]] == ["qlora"]
    # rank 0 alone wrote: one row per step, the same files as one process writes, one adapter, nothing else
    assert [r["step"] for r in csv.DictReader(open(many / "metrics.csv", encoding="utf-8"))] == list("12345")
    assert files_of(many) == files_of(tmp_path / "one")
    assert sorted(p.name for p in (many / "adapters").iterdir()) == ["qlora"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([path.name, many.name])


@pytest.mark.e2e
def test_the_embedded_model_in_two_processes_matches_one(embedded_dir, tmp_path, capsys):
    """The real default model at 16 bits through torchrun, 3 steps of 2 examples per process, against one
    process with 4: the same loss curve, the same adapter and eval loss within float32 rounding."""
    from safetensors.torch import load_file

    from workbench.core.config import preset_config

    base = {
        "model": {"device": "cpu"},
        "lora": {"dropout": 0.0},
        "train": {"steps": 3, "batch_size": 2, "seq_len": 64, "eval_examples": 4, "warmup_steps": 1},
        "variants": ["lora"],
    }
    cfg = preset_config("cpu-demo", base)
    path = write_config(cfg, tmp_path / "two.yaml")
    command = launch_command(path, 2, "torchrun")
    done = subprocess.run(
        command, shell=True, cwd=tmp_path, env=launched_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = preset_config("cpu-demo", {**base, "train": {**base["train"], "batch_size": 4}})
    assert cli.main(["train", str(write_config(one, tmp_path / "one.yaml"))]) == 0
    capsys.readouterr()
    assert_same_curve(losses(tmp_path / "two"), losses(tmp_path / "one"))
    a = load_file(tmp_path / "two/adapters/lora/adapter_model.safetensors")
    b = load_file(tmp_path / "one/adapters/lora/adapter_model.safetensors")
    assert a.keys() == b.keys()
    # the adapters as a whole: AdamW turns a gradient at rounding level into a full step of either sign, so a few
    # single weights differ by up to the learning rate; measured here 6e-6 of the adapter's norm overall
    gap = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5 / sum(float((b[k] ** 2).sum()) for k in b) ** 0.5
    assert gap < 1e-4, gap
    [two] = json.loads((tmp_path / "two/results.json").read_text(encoding="utf-8"))["variants"]
    [one] = json.loads((tmp_path / "one/results.json").read_text(encoding="utf-8"))["variants"]
    assert abs(two["eval_loss"] - one["eval_loss"]) <= 1e-4 * one["eval_loss"]  # measured 7e-6 relative
