"""One comparison in phases (experiments.phases), on the tiny model: the base loaded once with its adapter attached,
the base scored with the adapter switched off, a variant trained, scored and asked, each phase counted in order;
a stopped training is not scored."""

from __future__ import annotations

import pytest
from helpers import tiny_config

from workbench.core.events import Hooks
from workbench.experiments import phases, run_setup
from workbench.machine.memory import MemoryMonitor


@pytest.fixture
def setup(tiny_model_dir, tiny_jsonl, cold_home):
    return run_setup.setup(tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora", steps=2))


def test_the_base_and_a_trained_variant_phase_by_phase(setup):
    told = []
    hooks = Hooks(on_progress=told.append).counted(run_setup.planned_stages(setup.cfg))
    model = phases.load_group(setup, 16, ["base", "lora"], hooks)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0  # the adapter is attached
    monitor = MemoryMonitor("cpu").start()
    try:
        base = phases.run_base(setup, model, monitor, hooks)
        lora = phases.run_trained(setup, model, "lora", monitor, hooks)
    finally:
        monitor.stop()
    n = len(setup.eval_rows.rows)
    assert base.result.name == "base" and base.trained is None and len(base.predictions) == n
    assert base.scores["eval"]["keys"] and len(base.scores["eval"]["keys"]) == n
    assert set(base.answers) == set(setup.prompts) == set(lora.answers)
    assert lora.trained is not None and lora.result.steps_done == 2 and lora.result.trainable_params > 0
    assert lora.result.eval_loss is not None and len(lora.predictions) == n
    assert list(dict.fromkeys((p.stage, p.phase, p.variant) for p in told)) == [
        (1, "load", "the 16-bit base"),
        (2, "evaluate", "base"),
        (3, "answer", "base"),
        (4, "train", "lora"),
        (5, "evaluate", "lora"),
        (6, "answer", "lora"),
    ]


def test_a_stopped_training_keeps_its_steps_and_is_not_scored(setup):
    stop_after_one = Hooks()
    model = phases.load_group(setup, 16, ["lora"], stop_after_one)
    stop_after_one = Hooks(sinks=(lambda e: stop_after_one.stop.set(),), stop=stop_after_one.stop)
    monitor = MemoryMonitor("cpu").start()
    try:
        lora = phases.run_trained(setup, model, "lora", monitor, stop_after_one)
    finally:
        monitor.stop()
    assert lora.trained.stopped and lora.result.steps_done == 1
    assert lora.result.eval_loss is None and lora.predictions is None and lora.answers == {} and lora.scores is None
