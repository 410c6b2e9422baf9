"""One worker's part in a study (experiments.study.worker): a search's setting over its memory budget is pruned
with the reason before anything loads, and a worker told to finish starts no trial."""

from __future__ import annotations

import threading

import pytest
from helpers import base_config

from workbench.experiments import comparison
from workbench.experiments.study.space import SearchSpace, StudyDef, open_study
from workbench.experiments.study.storage import default_storage
from workbench.experiments.study.worker import Worker
from workbench.experiments.sweep import SweepGrid


def test_a_setting_over_the_budget_is_pruned_before_it_loads_and_the_search_ends(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    from optuna.trial import TrialState

    monkeypatch.setattr(comparison, "run_compare", lambda *a, **k: pytest.fail("a setting over budget was loaded"))
    space = SearchSpace(trials=2, ranks=(1, 8), targets=["q_proj,v_proj"], bits=[16], max_memory_mib=1)
    definition = StudyDef(base_config(tiny_model_dir, tiny_jsonl), 1, space=space)
    study = open_study(definition, default_storage(tmp_path / "search"), "search")
    done = Worker(study, definition, tmp_path / "runs", name="w1").work()
    assert done == [] and study.trials
    assert all(t.state == TrialState.PRUNED and "will not fit" in t.user_attrs["status"] for t in study.trials)
    assert all(t.user_attrs["worker"] == "w1" and t.user_attrs["estimated_peak_mib"] > 1 for t in study.trials)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_worker_told_to_finish_starts_no_trial(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    monkeypatch.setattr(comparison, "run_compare", lambda *a, **k: pytest.fail("a trial started"))
    grid = SweepGrid(ranks=[2, 4], targets=["q_proj"], bits=[16])
    definition = StudyDef(base_config(tiny_model_dir, tiny_jsonl), 1, grid=grid)
    study = open_study(definition, default_storage(tmp_path / "sweep"), "sweep")
    finish = threading.Event()
    finish.set()
    worker = Worker(study, definition, tmp_path / "runs", finish=finish)
    assert worker.work() == []
    assert all(t.state.name == "WAITING" for t in study.trials)  # the grid's points queued for others, none taken


def test_a_search_chooses_the_init_among_those_that_work_at_its_bits(tiny_model_dir, tiny_jsonl, tmp_path):
    from optuna.trial import FixedTrial

    space = SearchSpace(trials=2, targets=["q_proj"], bits=[16, 4], inits=["gaussian", "loftq"], loraplus_ratio=(1, 16))
    definition = StudyDef(base_config(tiny_model_dir, tiny_jsonl), 1, space=space)
    worker = Worker(open_study(definition, default_storage(tmp_path / "s"), "s"), definition, tmp_path / "runs")
    common = {"rank": 4, "targets": "q_proj", "alpha": 8.0, "lr": 1e-3, "dropout": 0.0, "loraplus_ratio": 4.4}
    # 16 bits chooses under its own name from gaussian alone (Optuna keeps one list of choices a name)
    point, _ = worker.setting(FixedTrial({"bits": 16, "init_16bit": "gaussian", **common}))
    assert (point.init, point.loraplus_ratio, point.label) == ("gaussian", 4.4, "16bit-r4-q_proj-lp4.4-a8-lr0.001-do0")
    point, _ = worker.setting(
        FixedTrial({"bits": 4, "quant_type": "nf4", "double_quant": True, "init": "loftq", **common})
    )
    assert point.init == "loftq" and point.config(definition.base).lora.init == "loftq"
