"""A sweep run as a study (experiments.study.workers, run_sweep and run_study) on the tiny model: each point
trained once and read back after, a failing point reported while the sweep goes on, Stop, an old sweep folder
read into a new study, a search that never loads a setting over its budget, the progress lines a worker logs."""

from __future__ import annotations

import threading
from collections import Counter

import optuna
import pytest
from helpers import base_config
from optuna.trial import TrialState

from workbench.core.events import Hooks
from workbench.experiments import comparison as compare
from workbench.experiments.study.reading import trials_frame
from workbench.experiments.study.space import StudyDef
from workbench.experiments.study.storage import default_storage
from workbench.experiments.study.workers import run_sweep, settled_line
from workbench.experiments.sweep import SweepGrid, plan, sweep_frame


def runs_finished(study) -> Counter:
    """How many finished trials each run has: 1 each when nothing was trained twice."""
    return Counter(t.user_attrs["run"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_a_grid_is_a_study_each_run_once_and_read_back_after(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    grid = SweepGrid(ranks=[2, 4], targets=["q_proj,v_proj"], bits=[16])
    base = base_config(tiny_model_dir, tiny_jsonl)
    seen = []
    first = run_sweep(plan(grid, base, tmp_path / "sweep", seeds=2), on_point=seen.append)
    assert [p.label for p in first] == [
        "16bit-r2-q_proj+v_proj",
        "16bit-r2-q_proj+v_proj-seed1",
        "16bit-r4-q_proj+v_proj",
        "16bit-r4-q_proj+v_proj-seed1",
    ]  # plan order, whatever order the grid sampler took them in
    assert [p.status for p in first] == ["trained"] * 4 and sorted(p.label for p in seen) == sorted(
        p.label for p in first
    )
    assert (tmp_path / "sweep" / "study.sqlite3").is_file()  # the default storage: in the sweep's folder

    study = optuna.load_study(
        study_name=StudyDef(base, 2, grid=grid).default_name(), storage=default_storage(tmp_path / "sweep")
    )
    assert runs_finished(study) == Counter({p.label: 1 for p in first})
    log = trials_frame(study)
    assert set(log["state"]) == {"complete"} and set(log["person"]) == {log["person"][0]} and log["worker"].all()
    assert sorted(log["seed"]) == [0, 0, 1, 1] and (log["cost"] > 0).all()  # peak MiB, the second objective
    assert {tuple(t.values) for t in study.trials} == {
        (p.result.accuracy, p.result.peak_memory_bytes / 2**20) for p in first
    }

    # the same grid again: its study has every run, so nothing trains and every row is read back
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("a finished run was retrained"))
    back = run_sweep(plan(grid, base, tmp_path / "sweep", seeds=2))
    assert [p.status for p in back] == ["loaded"] * 4 and len(study.trials) == 4
    assert [p.result.eval_loss for p in back] == [p.result.eval_loss for p in first]


def test_an_old_sweep_folder_is_read_back_into_a_new_study(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    grid = SweepGrid(ranks=[2], targets=["q_proj"], bits=[16])
    base = base_config(tiny_model_dir, tiny_jsonl)
    run_sweep(plan(grid, base, tmp_path / "sweep"))
    (tmp_path / "sweep" / "study.sqlite3").unlink()  # a sweep from before studies: run folders only
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("an old point was retrained"))
    again = run_sweep(plan(grid, base, tmp_path / "sweep"))
    assert [p.status for p in again] == ["loaded"] and again[0].result.accuracy is not None


def test_a_workers_progress_bars_reach_the_log_once_settled_not_every_redraw():
    import io

    from tqdm import tqdm

    out = io.StringIO()
    for _ in tqdm(range(50), desc="training lora", file=out, mininterval=0, miniters=1):
        pass
    print("[workbench] trial 3: finished", file=out)
    # read the way the relay reads a worker's pipe: bytes, split at newlines only
    lines = [settled_line(raw.decode()) for raw in io.BytesIO(out.getvalue().encode())]
    # tqdm drew the bar 51 times on one line; the log gets its last state and the plain line after it
    assert out.getvalue().count("\r") > 40
    assert len(lines) == 2 and lines[0].startswith("training lora: 100%") and "50/50" in lines[0]
    assert lines[1] == "[workbench] trial 3: finished"


def test_a_sweep_trains_each_point_once_and_reads_it_back_after(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    grid = SweepGrid(ranks=[2, 4], targets=["q_proj,v_proj"], bits=[16, 4])
    base = base_config(tiny_model_dir, tiny_jsonl)
    seen = []
    first = run_sweep(plan(grid, base, tmp_path / "sweep"), on_point=seen.append)
    # rows in plan order; on_point as each point finished, in the order the grid sampler took them
    assert [p.status for p in first] == ["trained"] * 4 and sorted(seen, key=str) == sorted(first, key=str)
    assert all(p.result is not None and p.result.rank == p.point.rank for p in first)
    assert {p.result.name for p in first} == {"lora", "qlora"}
    frame = sweep_frame(first)
    assert list(frame["point"]) == [p.label for p in first] and frame["peak MiB"].notna().all()

    # the same grid again: every point is on disk with the same settings, so nothing trains
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("a cached point was retrained"))
    again = plan(grid, base, tmp_path / "sweep", runs_root=tmp_path)
    assert all(p.cached for p in again.points) and again.estimated_seconds == 0
    assert all(again.measured.values())  # the speed now comes from this machine's runs
    back = run_sweep(again)
    assert [p.status for p in back] == ["loaded"] * 4
    assert [p.result.eval_loss for p in back] == [p.result.eval_loss for p in first]


def test_a_failing_point_is_reported_and_the_sweep_goes_on(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    real = compare.run_compare

    def flaky(cfg, out, **kw):
        if cfg.lora.rank == 2:
            raise RuntimeError("out of memory: tried to allocate 9 GiB\nmore lines")
        return real(cfg, out, **kw)

    monkeypatch.setattr(compare, "run_compare", flaky)
    points = run_sweep(
        plan(SweepGrid(ranks=[2, 4], targets=["q_proj"], bits=[16]), base_config(tiny_model_dir, tiny_jsonl), tmp_path)
    )
    assert [p.status for p in points] == ["failed", "trained"]
    assert points[0].error == "out of memory: tried to allocate 9 GiB" and points[0].result is None
    assert "failed: out of memory" in sweep_frame(points)["status"][0]


def test_stop_ends_the_sweep_after_the_current_point_and_keeps_it(tiny_model_dir, tiny_jsonl, tmp_path):
    stop = threading.Event()
    points = run_sweep(
        plan(
            SweepGrid(ranks=[2, 4, 8], targets=["q_proj"], bits=[16]), base_config(tiny_model_dir, tiny_jsonl), tmp_path
        ),
        Hooks(stop=stop),
        on_point=lambda p: stop.set(),
    )
    assert sorted(p.status for p in points) == ["not run", "not run", "trained"]
    trained = next(p for p in points if p.status == "trained")
    assert (trained.out / "results.json").is_file()
    assert not any(p.out.exists() for p in points if p.status == "not run")
