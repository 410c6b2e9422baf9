"""A grid of settings (experiments.sweep): every combination, bad values refused, each point estimated before
anything loads."""

from __future__ import annotations

import pytest
from helpers import base_config

from workbench.experiments import comparison as compare
from workbench.experiments.sweep import SweepGrid, plan


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
