"""A grid of settings (experiments.sweep): every combination, bad values refused, each point estimated before
anything loads."""

from __future__ import annotations

import pytest
from helpers import base_config

from workbench.experiments import comparison as compare
from workbench.experiments.sweep import PointResult, SweepGrid, plan


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


def test_a_grid_of_inits_leaves_out_an_init_at_bits_it_cannot_start(tiny_model_dir, tiny_jsonl, tmp_path):
    from workbench.experiments.sweep import SweepPoint, sweep_frame

    grid = SweepGrid(ranks=[4], targets=["q_proj"], bits=[16, 4], inits=["gaussian", "loftq"], loraplus_ratios=[1, 16])
    points = grid.points()
    assert [p.label for p in points] == [
        "16bit-r4-q_proj",
        "16bit-r4-q_proj-lp16",
        "4bit-nf4-r4-q_proj",
        "4bit-nf4-r4-q_proj-lp16",
        "4bit-nf4-r4-q_proj-loftq",
        "4bit-nf4-r4-q_proj-loftq-lp16",
    ]
    assert grid.left_out() == "left out: loftq at 16 bits (an init works only on the bases it is made for)"
    base = base_config(tiny_model_dir, tiny_jsonl)
    cfg = points[-1].config(base)
    assert (cfg.lora.init, cfg.lora.loraplus_ratio, cfg.variants) == ("loftq", 16.0, ["qlora"])
    p = plan(grid, base, tmp_path / "sweep")
    assert "left out: loftq at 16 bits" in p.describe() and "init loftq: one exact SVD" in p.describe()
    loftq = [q for q in p.points if q.point.init == "loftq"]
    assert all(q.init_line.startswith("init loftq") for q in loftq) and not p.points[0].init_line
    # the init's seconds are in the point's time
    assert loftq[0].estimated_seconds > p.points[2].estimated_seconds
    frame = sweep_frame([PointResult(q.point, q.out, "not run") for q in p.points])
    assert list(frame["init"]) == ["gaussian", "gaussian", "gaussian", "gaussian", "loftq", "loftq"]
    assert list(frame["LoRA+ ratio"]) == [1.0, 16.0] * 3
    assert "init" not in sweep_frame([PointResult(SweepPoint(16, 4, "q_proj"), tmp_path, "not run")]).columns
    # without the axes a grid's dict (and so its study's name) is the one it always was
    assert "inits" not in SweepGrid().to_dict() and SweepGrid(**SweepGrid().to_dict()).inits is None


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"inits": ["loftq"], "bits": [16]}, "inits: loftq works on 4-bit bases only"),
        ({"inits": ["loftq", "pissa"], "bits": [8, 4]}, "bits: no init given works at 8 bits"),
        ({"inits": ["lofty"]}, "inits: 'lofty' is not one of"),
        ({"inits": []}, "inits: give at least one"),
        ({"loraplus_ratios": [0]}, "loraplus_ratios must be above 0"),
        ({"loraplus_ratios": [float("inf")]}, "loraplus_ratios must be a finite number"),
    ],
)
def test_a_grid_refuses_an_axis_with_nothing_to_run(kw, message):
    with pytest.raises(ValueError, match=message):
        SweepGrid(**kw)
