"""A search from start to end, as an Optuna study on the tiny model: three settings drawn from the ranges, each
trained with two seeds; then a budget below every estimate, where no setting loads and every trial is pruned with
the reason."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers import base_config
from optuna.trial import TrialState

from workbench.experiments import comparison as compare
from workbench.experiments.study.reading import finished_points
from workbench.experiments.study.space import SearchSpace, StudyDef
from workbench.experiments.study.workers import run_study


def test_a_search_never_loads_a_setting_over_its_budget_and_repeats_seeds(tiny_model_dir, tiny_jsonl, tmp_path):
    base = base_config(tiny_model_dir, tiny_jsonl)
    space = SearchSpace(trials=3, ranks=(1, 8), targets=["q_proj,v_proj"], bits=[16], max_memory_mib=1e6)
    st, done = run_study(StudyDef(base, 2, space=space), tmp_path / "search")
    assert {p.status for p in done} == {"trained"} and len(done) == 6  # 3 settings x 2 seeds
    by_setting = Counter(p.label.removesuffix("-seed1") for p in done)
    assert len(by_setting) == 3 and set(by_setting.values()) == {2}
    assert all(1 <= p.point.rank <= 8 and p.point.lr is not None and p.point.alpha is not None for p in done)
    assert all(p.result.rank == p.point.rank for p in done)
    assert len(finished_points(st)) == 6

    # a budget below every estimate: no setting loads, each trial is pruned with the reason, and the search ends
    tight = SearchSpace(trials=2, ranks=(1, 8), targets=["q_proj,v_proj"], bits=[16], max_memory_mib=1)
    loads = []
    original = compare.run_compare
    try:
        compare.run_compare = lambda *a, **k: loads.append(a) or pytest.fail("a setting over budget was loaded")
        st, done = run_study(StudyDef(base, 1, space=tight), tmp_path / "tight")
    finally:
        compare.run_compare = original
    assert not done and not loads and st.trials
    assert all(t.state == TrialState.PRUNED and "will not fit" in t.user_attrs["status"] for t in st.trials)
    assert all(t.user_attrs["estimated_peak_mib"] > 1 for t in st.trials)
