"""`workbench worker` (cli/worker.py): one worker of a sweep's study, joining it with its storage and name alone;
it works until nothing is left to start and says what it did."""

from __future__ import annotations

from helpers import base_config

from workbench import cli
from workbench.experiments.study.space import StudyDef, open_study
from workbench.experiments.study.storage import default_storage
from workbench.experiments.sweep import SweepGrid


def test_a_worker_joins_a_study_by_name_and_stops_when_nothing_is_left(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    storage = default_storage(tmp_path / "sweep")
    definition = StudyDef(
        base_config(tiny_model_dir, tiny_jsonl), 1, grid=SweepGrid(ranks=[2], targets=["q_proj"], bits=[16])
    )
    study = open_study(definition, storage, "class-sweep")
    out = tmp_path / "runs"
    assert cli.main(["worker", "--storage", storage, "--study", "class-sweep", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.strip().splitlines()[-1] == "done: 1 trial(s) here"
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
    assert (out / study.get_trials()[0].user_attrs["run"] / "results.json").is_file()
    # a second worker finds the one run done: it trains nothing
    assert cli.main(["worker", "--storage", storage, "--study", "class-sweep", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "done: 0 trial(s) here"


def test_a_study_that_is_not_there_is_one_line(tmp_path, capsys):
    storage = default_storage(tmp_path / "nothing")
    code = cli.main(["worker", "--storage", storage, "--study", "nobody", "--out", str(tmp_path / "runs")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "nobody" in err[0], err
