"""What the panels share (ui.state): settings changed through update (an invalid value refused with the config's
own message, the old settings kept, subscribers told only of a real change), one background job at a time with
its errors handed over, and the cache of model layouts."""

from __future__ import annotations

import threading

import pytest
from helpers import tiny_config

from workbench.ui import state
from workbench.ui.state import AppState, Jobs


def test_update_validates_keeps_the_old_settings_when_refused_and_tells_of_real_changes(
    tiny_model_dir, tiny_jsonl, tmp_path
):
    s = AppState(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path)
    heard = []
    s.subscribe(heard.append)
    s.update("lora", rank=8)
    assert s.config.lora.rank == 8 and heard == ["config"]
    s.update("lora", rank=8)  # nothing changed: nobody is told
    assert heard == ["config"]
    before = s.config
    with pytest.raises(ValueError, match="rank"):
        s.update("lora", rank=0)
    assert s.config == before and heard == ["config"]
    s.update(variants=["lora"])
    assert s.config.variants == ["lora"] and heard == ["config", "config"]


def test_the_runs_folder_comes_from_the_argument_then_workbench_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "class"))
    assert AppState().runs_dir == tmp_path / "class"
    assert AppState(runs_dir=tmp_path / "mine").runs_dir == tmp_path / "mine"


def test_one_job_at_a_time_and_its_error_is_handed_over():
    jobs, release, errors, done = Jobs(), threading.Event(), [], []
    assert (
        jobs.start("training", release.wait, on_error=lambda e, tb: errors.append(e), on_done=lambda: done.append(1))
        is None
    )
    assert jobs.busy
    refused = jobs.start("generating", lambda: None, on_error=errors.append)
    assert refused.startswith("training is still running") and "before starting generating" in refused
    release.set()
    assert jobs.join(10) and done == [1] and not errors

    def broken():
        raise RuntimeError("out of memory")

    assert jobs.start("evaluating", broken, on_error=lambda e, tb: errors.append((e, tb))) is None
    assert jobs.join(10)
    ((exc, tb),) = errors
    assert str(exc) == "out of memory" and "Traceback" in tb and "broken" in tb


def test_each_job_gets_a_fresh_stop():
    jobs = Jobs()
    jobs.start("one", lambda: None, on_error=print)
    jobs.join(10)
    first = jobs.stop
    first.set()
    jobs.start("two", lambda: None, on_error=print)
    assert jobs.join(10) and jobs.stop is not first and not jobs.stop.is_set()


def test_a_run_chosen_is_told_once(tiny_model_dir, tiny_jsonl, tmp_path):
    s = AppState(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path)
    heard = []
    s.subscribe(heard.append)
    s.use_run(tmp_path / "run-1")
    s.use_run(tmp_path / "run-1")
    assert s.last_run == tmp_path / "run-1" and heard == ["run"]


def test_model_layouts_are_cached_by_name_and_an_unknown_model_is_one_line(tiny_model_dir):
    first = state.model_layout(str(tiny_model_dir))
    assert state.model_layout(str(tiny_model_dir)) is first
    with pytest.raises(ValueError) as info:
        state.model_layout("nobody-here/no-such-model-xyz")
    assert "\n" not in str(info.value)
