"""What a study searches (experiments.study.space): search ranges checked in one line, a study name taken by
another sweep refused."""

from __future__ import annotations

import pytest
from helpers import base_config

from workbench.experiments.study.space import SearchSpace, StudyDef, open_study
from workbench.experiments.study.storage import default_storage
from workbench.experiments.sweep import SweepGrid


def test_another_sweep_under_a_taken_study_name_is_refused(tiny_model_dir, tiny_jsonl, tmp_path):
    base = base_config(tiny_model_dir, tiny_jsonl)
    storage = default_storage(tmp_path)
    open_study(StudyDef(base, 1, grid=SweepGrid(ranks=[2], targets=["q_proj"], bits=[16])), storage, "mine")
    with pytest.raises(ValueError, match="'mine' .* is another sweep"):
        open_study(StudyDef(base, 1, grid=SweepGrid(ranks=[4], targets=["q_proj"], bits=[16])), storage, "mine")


def test_bad_search_ranges_are_refused_in_one_line():
    for bad, field in (
        ({"trials": 0}, "trials"),
        ({"ranks": (0, 8)}, "ranks"),
        ({"ranks": (8, 2)}, "ranks"),
        ({"lr": (1e-3, 1e-4)}, "lr"),
        ({"dropout": (0.0, 1.0)}, "dropout"),
        ({"bits": [3]}, "bits"),
        ({"minimize": "loss"}, "minimize"),
        ({"max_memory_mib": -5}, "max memory"),
    ):
        with pytest.raises(ValueError, match=field):
            SearchSpace(**bad)
