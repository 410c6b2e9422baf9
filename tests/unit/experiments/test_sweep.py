"""Sweeps on the tiny model: the plan before anything loads, points read back instead of retrained, a
failing point reported while the sweep goes on, a stop that keeps what finished; the Pareto frontier."""

from __future__ import annotations

import threading

import pytest

from workbench.core.config import preset_config
from workbench.core.events import Hooks
from workbench.experiments import comparison as compare
from workbench.experiments import sweep
from workbench.experiments.study.workers import run_sweep
from workbench.experiments.sweep import SweepGrid, plan, sweep_frame
from workbench.records import runs
from workbench.records.results import pareto_front


def base_config(model_dir, data):
    return preset_config(
        None,
        {
            "model": {"name": str(model_dir), "device": "cpu"},
            "task": None,
            "data": str(data),
            "lora": {"alpha": 8.0},
            "train": {"steps": 2, "batch_size": 4, "seq_len": 32, "warmup_steps": 0, "lr": 1e-2},
        },
    )


def test_the_grid_is_every_combination_and_bad_values_are_refused():
    grid = SweepGrid(ranks=[2, 8], targets=["q_proj,v_proj", "all-linear"], bits=[16, 4], quant_types=["nf4", "fp4"])
    points = grid.points()
    # 16 bits: 2 ranks x 2 target sets; 4 bits: the same x 2 types
    assert len(points) == 4 + 8 and len({p.label for p in points}) == 12
    assert {p.label for p in points if p.bits == 16} == {
        "16bit-r2-q_proj+v_proj",
        "16bit-r8-q_proj+v_proj",
        "16bit-r2-all-linear",
        "16bit-r8-all-linear",
    }
    assert "4bit-fp4-r8-all-linear" in {p.label for p in points}
    for bad, field in (
        ({"ranks": [0]}, "ranks"),
        ({"ranks": [2.5]}, "ranks"),
        ({"bits": [3]}, "bits"),
        ({"targets": []}, "targets"),
        ({"quant_types": ["int4"]}, "quant_types"),
        ({"double_quants": ["yes"]}, "double_quants"),
    ):
        with pytest.raises(ValueError, match=field):
            SweepGrid(**bad)


def test_plan_estimates_each_point_before_anything_loads(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("plan must not train"))
    grid = SweepGrid(ranks=[2, 16], targets=["all-linear"], bits=[16, 4])
    p = plan(grid, base_config(tiny_model_dir, tiny_jsonl), tmp_path / "sweep")
    assert len(p.points) == 4 and not any(x.cached for x in p.points)
    peaks = {x.point.label: x.estimated_peak_bytes for x in p.points}
    assert peaks["16bit-r16-all-linear"] > peaks["16bit-r2-all-linear"]  # more rank, more memory
    assert peaks["4bit-nf4-r2-all-linear"] < peaks["16bit-r2-all-linear"]  # fewer bits, less memory
    assert all(x.estimated_seconds > 0 for x in p.points) and "4 points: 0 already on disk, 4 to train" in p.describe()
    assert "first guess" in p.describe()  # no run on this machine yet to measure the speed from
    with pytest.raises(ValueError, match="rank"):
        plan(SweepGrid(ranks=[10_000]), base_config(tiny_model_dir, tiny_jsonl), tmp_path / "x")


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


def test_pareto_front():
    # (memory, accuracy): 1 beats 2 (less memory, more accuracy); 3 costs more but scores higher
    pts = [(100, 50), (90, 60), (120, 55), (200, 90), (200, 80), (150, 60)]
    assert pareto_front(pts) == [1, 3]
    assert pareto_front([(1, 5.0), (2, 4.0), (3, 4.5)], higher_is_better=False) == [0, 1]
    assert pareto_front([]) == [] and pareto_front([(1, 1)]) == [0]
    assert pareto_front([(1, 1), (1, 1)]) == [0]  # a tie is not a second point on the frontier
    assert sweep.targets_label(["q_proj", "v_proj"]) == "q_proj+v_proj"


def test_cli_sweep_plans_trains_and_writes_its_table_and_chart(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    shape = ["--steps", "1", "--batch-size", "4", "--seq-len", "32", "--target-sets", "q_proj", "--out", str(out)]
    assert cli.main([*common, *shape, "--ranks", "2,4", "--bits", "16", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "2 points: 0 already on disk, 2 to train" in said and "16bit-r4-q_proj" in said and not out.exists()
    assert cli.main([*common, *shape, "--ranks", "2,4", "--bits", "16"]) == 0
    said = capsys.readouterr().out
    assert (out / "sweep.csv").is_file() and (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "sweep.csv, sweep.png" in said and said.count("trained") >= 2
    for bad, field in ((["--ranks", "two"], "--ranks"), (["--double-quant", "maybe"], "--double-quant")):
        assert cli.main([*common, *shape, *bad]) == 2
        assert field in capsys.readouterr().err


def test_a_sweep_with_seeds_repeats_each_point_and_pools_them(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    shape = ["--steps", "1", "--batch-size", "4", "--seq-len", "32", "--target-sets", "q_proj", "--out", str(out)]
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "2", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "2 points (1 settings × 2 seeds): 0 already on disk, 2 to train" in said
    assert "16bit-r2-q_proj " in said and "16bit-r2-q_proj-seed1" in said and "show reliably" in said
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "2"]) == 0
    said = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"16bit-r2-q_proj", "16bit-r2-q_proj-seed1", "sweep.csv", "sweep.png"}
    assert "over 2 seeds" in said
    # run again with one seed more: the two on disk are read back, only the third trains
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "3"]) == 0
    said = capsys.readouterr().out
    assert "3 points (1 settings × 3 seeds): 2 already on disk, 1 to train" in said
    assert said.count("loaded") == 2 and said.count("trained") == 1 and "over 3 seeds" in said
    seeds = sorted(
        runs.Run(out / name).read()["config"]["train"]["seed"]
        for name in ("16bit-r2-q_proj", "16bit-r2-q_proj-seed1", "16bit-r2-q_proj-seed2")
    )
    assert seeds == [0, 1, 2]
