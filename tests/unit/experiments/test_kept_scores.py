"""The base's kept scores (experiments.kept_scores): the plan says, before anything loads, when the base will come
from the score cache."""

from __future__ import annotations

import pytest
from helpers import one_step_config, run_saying

from workbench.experiments import kept_scores
from workbench.records import runs


@pytest.mark.usefixtures("cold_home")
def test_the_plan_says_when_the_base_will_come_from_the_cache_before_anything_loads(
    tiny_model_dir, tiny_jsonl, tmp_path, scored, monkeypatch, capsys
):
    from workbench.ui.state import AppState
    from workbench.ui.train import TrainPanel

    cfg = one_step_config(tiny_model_dir, tiny_jsonl, variants="base,lora")
    assert kept_scores.base_kept(cfg) is None and kept_scores.kept_sentence(cfg) == ""
    run_saying(cfg, tmp_path / "runs" / "one")
    entry = kept_scores.base_kept(cfg)
    assert (
        entry is not None and entry.result.keys == runs.Run(tmp_path / "runs" / "one").scores()["base"]["eval"]["keys"]
    )
    assert kept_scores.kept_sentence(cfg).startswith(
        f"the base's scores on these {len(entry.result.keys)} examples are kept"
    )
    # and the run that follows does read them back: the plan's guess of the key is the run's key
    scored.clear()
    run_saying(cfg, tmp_path / "runs" / "two")
    assert ("eval", True) not in scored
    # anything the base's scores depend on changed: the plan no longer says so
    assert kept_scores.base_kept(one_step_config(tiny_model_dir, tiny_jsonl, variants="base,lora", seq_len=24)) is None
    assert (
        kept_scores.base_kept(one_step_config(tiny_model_dir, tiny_jsonl, variants="lora")) is None
    )  # no base to score
    monkeypatch.setenv("WORKBENCH_NATIVE_BF16", "1")  # a bfloat16 base is another base
    assert kept_scores.base_kept(cfg) is None
    monkeypatch.setenv("WORKBENCH_NATIVE_BF16", "0")
    panel = TrainPanel(AppState(cfg, runs_dir=tmp_path / "runs"))
    panel.show_plan()
    panel._kept_look.join(30)  # looked up off the kernel's thread, then added to the plan on show
    assert "are kept (scored " in panel.plan.value and "not scored again" in panel.plan.value
    from workbench import cli

    cli.output.print_eval_plan(cfg, tmp_path / "runs")  # what `workbench compare` prints before it starts
    assert "; the base's scores on these " in capsys.readouterr().err
    cli.output.print_eval_plan(cfg, tmp_path / "runs", base=False)  # a sweep's points score no base
    assert "the base's scores" not in capsys.readouterr().err
