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


def test_a_search_space_takes_inits_and_a_ratio_range_and_old_spaces_keep_their_names(tiny_model_dir, tiny_jsonl):
    space = SearchSpace(inits=["pissa", "gaussian", "pissa"], bits=[16, 4], loraplus_ratio=(1, 16))
    assert space.inits == ["pissa", "gaussian"] and space.inits_at(4) == ["pissa", "gaussian"]
    assert space.loraplus_ratio == (1.0, 16.0)
    assert SearchSpace(inits=["gaussian", "loftq"]).inits_at(8) == ["gaussian"]
    # without them, the dict a study keeps (and its name) is the one it was before
    plain = SearchSpace()
    assert "inits" not in plain.to_dict() and "loraplus_ratio" not in plain.to_dict()
    assert SearchSpace(**plain.to_dict()).inits is None
    base = base_config(tiny_model_dir, tiny_jsonl)
    assert StudyDef(base, space=SearchSpace()).default_name() == StudyDef(base, space=plain).default_name()
    again = StudyDef.from_dict(StudyDef(base, space=space).to_dict())
    assert again.space.inits == ["pissa", "gaussian"] and again.space.loraplus_ratio == (1.0, 16.0)
    for kw, message in (
        ({"inits": ["loftq"], "bits": [16, 8]}, "inits: loftq works on 4-bit bases only"),
        ({"inits": ["loftq"], "bits": [16, 4]}, "bits: no init given works at 16 bits"),
        ({"loraplus_ratio": (0, 4)}, "loraplus_ratio: the range must run from at least"),
        ({"loraplus_ratio": (1, 5000)}, "loraplus_ratio: the range must stay at most 1000"),
    ):
        with pytest.raises(ValueError, match=message):
            SearchSpace(**kw)
