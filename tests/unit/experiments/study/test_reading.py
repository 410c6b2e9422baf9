"""Reading a study back (experiments.study.reading), from the study alone: each trial as the sweep's row, the trial
log with who ran what, the counts by state, the finished runs once each in the order they finished, trials.csv,
and the studies kept in a runs folder (a damaged file named, the rest still read)."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import asdict

import pytest
from helpers import base_config

from workbench.experiments.study import reading
from workbench.experiments.study.space import StudyDef, open_study
from workbench.experiments.study.storage import default_storage
from workbench.experiments.sweep import SweepGrid, SweepPoint
from workbench.records.results import VariantResult


@pytest.fixture
def study(tiny_model_dir, tiny_jsonl, tmp_path):
    definition = StudyDef(
        base_config(tiny_model_dir, tiny_jsonl), 1, grid=SweepGrid(ranks=[2, 4], targets=["q_proj"], bits=[16])
    )
    return open_study(definition, default_storage(tmp_path / "sweep"), "sweep")


RUNS = ["16bit-r2-q_proj", "16bit-r4-q_proj"]


def add(study, state, point: SweepPoint, run: str, minute: int, **attrs):
    """A trial as a worker leaves it: its point, run folder, seed and who ran it, then its outcome."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import FrozenTrial

    start = dt.datetime(2026, 12, 1, 12, minute)
    user_attrs = {"point": {**asdict(point), "targets": point.targets}, "run": run, "out": f"/runs/{run}", "seed": 0}
    user_attrs |= {"worker": "lab-3/1234", "person": "ana", **attrs}
    study.add_trial(
        FrozenTrial(
            number=0,  # numbered by the study as it is added
            state=state,
            value=None,
            values=[0.9, 800.0] if state.name == "COMPLETE" else None,
            datetime_start=start,
            datetime_complete=start + dt.timedelta(seconds=30) if state.is_finished() else None,
            params={"setting": run},
            distributions={"setting": CategoricalDistribution(RUNS)},
            user_attrs=user_attrs,
            system_attrs={},
            intermediate_values={},
            trial_id=0,
        )
    )


def test_each_trial_reads_as_a_point_and_the_finished_runs_once_each_in_order(study):
    from optuna.trial import TrialState

    r2, r4 = SweepPoint(16, 2, "q_proj"), SweepPoint(16, 4, "q_proj")
    row = VariantResult("lora", 16, rank=4, accuracy=0.9).to_dict()
    add(study, TrialState.COMPLETE, r4, "16bit-r4-q_proj", 5, status="trained", result=row)
    add(study, TrialState.FAIL, r2, "16bit-r2-q_proj", 1, status="failed: out of memory")
    add(study, TrialState.COMPLETE, r2, "16bit-r2-q_proj", 9, status="loaded", result={**row, "rank": 2})
    add(study, TrialState.COMPLETE, r4, "16bit-r4-q_proj", 12, status="loaded", result=row)  # the same run again
    add(study, TrialState.PRUNED, r2, "16bit-r2-q_proj", 13, status="duplicate of trial 2")

    points = [reading.trial_point(t) for t in study.get_trials()]
    assert [p.status for p in points] == ["trained", "failed", "loaded", "loaded", "duplicate of trial 2"]
    assert points[1].error == "out of memory" and points[1].result is None
    assert points[0].point == r4 and points[0].result.accuracy == 0.9 and points[0].seconds == 30.0
    assert [p.label for p in reading.finished_points(study)] == ["16bit-r4-q_proj", "16bit-r2-q_proj"]
    assert reading.counts(study) == {"finished": 3, "failed": 1, "pruned": 1}


def test_the_trial_log_says_who_ran_what_and_is_written_as_trials_csv(study, tmp_path):
    from optuna.trial import TrialState

    add(study, TrialState.COMPLETE, SweepPoint(16, 2, "q_proj"), "16bit-r2-q_proj", 3, status="trained", result={})
    frame = reading.trials_frame(study)
    assert frame.loc[0, ["state", "run", "worker", "person", "score", "cost", "started", "seconds"]].tolist() == [
        "complete",
        "16bit-r2-q_proj",
        "lab-3/1234",
        "ana",
        0.9,
        800.0,
        "12:03:00",
        30.0,
    ]
    path = reading.write_trials(tmp_path / "sweep", study)
    assert [r["run"] for r in csv.DictReader(path.open())] == ["16bit-r2-q_proj"]


def test_a_trial_a_worker_made_without_a_point_is_not_a_row(study):
    from optuna.trial import TrialState, create_trial

    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.5, 1.0]))
    assert reading.trial_point(study.get_trials()[0]) is None and reading.finished_points(study) == []


def test_the_studies_in_a_runs_folder_and_a_damaged_one_named(study, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.sqlite3").write_bytes(b"not a database at all" * 100)
    found = {s["folder"]: s for s in reading.studies_in(tmp_path)}
    assert found["sweep"]["study"] == "sweep" and found["sweep"]["trials"] == {}
    assert "optuna-dashboard" in found["sweep"]["command"]
    assert found["broken"]["study"] == "" and found["broken"]["error"]
    assert reading.studies_in(tmp_path / "nothing-here") == []
