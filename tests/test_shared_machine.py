"""One machine shared: login names that go into folder names, DDP processes that load onto one device at once,
and what a killed `workbench train` left in its run folder."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from test_distributed import tiny_config

from workbench.experiments import experiment, run_setup
from workbench.machine import memory
from workbench.machine.distributed import World
from workbench.records import runs

MiB = 2**20


# ---------------------------------------------------------------------------- the login name


@pytest.mark.parametrize(
    "login, user",
    [
        ("ada", "ada"),
        ("ann/../etc", "ann_.._etc"),  # a slash would make the run folder two folders (or escape the runs folder)
        ("x" * 60, "x" * 40),  # check_user's limit
        ("jo@example.com", "jo_example.com"),
        ("  spaced   name ", "spaced name"),
        ("", "someone"),
        ("///", "___"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_the_login_name_default_is_a_name_check_user_accepts(monkeypatch, login, user):
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: login)
    assert runs.default_user() == user and runs.check_user(user) == user
    assert "/" not in runs.user_slug(runs.default_user())


def test_workbench_user_is_mended_the_same_way(monkeypatch):
    monkeypatch.setenv("WORKBENCH_USER", "Ms <b>Jones</b>")
    assert runs.default_user() == "Ms _b_Jones__b_"
    monkeypatch.setenv("WORKBENCH_USER", "Grace Hopper")
    assert runs.default_user() == "Grace Hopper"


# ---------------------------------------------------------------------------- DDP processes on one machine


def test_a_world_says_how_many_processes_share_its_device(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two machines of two processes
    world = World.from_env()
    assert world.local_world_size == 2 and world.sharing("cpu") == 2
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert world.sharing("cuda") == 1  # a GPU each
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    assert world.sharing("cuda") == 2  # both on the one GPU
    assert World().sharing("cpu") == 1 and World(0, 2, 0).sharing("cpu") == 1  # alone; a launcher that did not say


def _setup(estimate: int) -> SimpleNamespace:
    return SimpleNamespace(
        choice=SimpleNamespace(type="cpu", device="cpu"),
        cfg=SimpleNamespace(variants=["lora"]),
        estimate=lambda n: estimate,
    )


def test_check_fit_counts_every_process_that_loads_at_once(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1000 * MiB)
    assert run_setup.check_fit(_setup(600 * MiB)) == []  # one process: 600 of 1,000 MiB
    with pytest.raises(ValueError) as caught:
        run_setup.check_fit(_setup(600 * MiB), sharing=2)
    assert str(caught.value).startswith(
        "memory: lora in 2 processes needs about 1,200 MiB and 1,000 MiB are free, so it will not fit: choose"
    )


def test_workbench_train_refuses_what_its_local_processes_could_not_all_load(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    """Two processes of one `workbench train` on one CPU: each checks the free memory before either loads."""
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants=("lora",))
    alone = run_setup.setup(cfg).estimate("lora")
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: int(alone * 1.5))  # one fits, two do not
    monkeypatch.setattr(World, "current", classmethod(lambda cls: cls(0, 2, 0, 2)))
    monkeypatch.setattr(World, "main_first", lambda self, work: work())  # no process group in this test

    def no_loading(*a, **k):
        raise AssertionError("weights loaded although the run should have been refused first")

    monkeypatch.setattr(experiment, "load_group", no_loading)
    with pytest.raises(ValueError, match="memory: lora in 2 processes needs about"):
        experiment.run_experiment(cfg, tmp_path / "run")


# ---------------------------------------------------------------------------- a train run's stale temp files


def test_workbench_train_removes_what_a_killed_write_left_in_its_folder(tiny_model_dir, tiny_jsonl, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".results.json.abcd1234.tmp"  # files.write_json's temp name, as a kill leaves it
    stale.write_text("{")
    young = out / ".metrics.csv.efgh5678.tmp"  # another process's write in progress: left alone
    young.write_text("step")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants=("lora",), steps=1)
    experiment.run_experiment(cfg, out)
    assert not stale.exists() and young.exists() and (out / "results.json").is_file()
