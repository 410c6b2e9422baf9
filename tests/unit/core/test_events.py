"""What long work reports to (core.events): MetricEvent, the Progress of each phase counted in Stages, the tqdm
bars, and Hooks: counted() once a run, adding() the run's own sinks first, quiet() for a process that is not
rank 0."""

from __future__ import annotations

import io
import threading

import pytest

from workbench.core.events import Hooks, MetricEvent, Progress, ProgressBars, Stages, clock


def event(step: int, variant: str = "lora") -> MetricEvent:
    return MetricEvent(variant, step, 3, 2.0 / step, 1e-3, 100.0, 2**20, 2**21, float(step))


def test_a_metric_event_is_a_row_with_its_fields_in_order():
    e = event(1)
    assert list(e.to_dict()) == MetricEvent.field_names()
    assert MetricEvent.field_names()[:3] == ["variant", "step", "total_steps"]


def test_clock_reads_as_people_read_times():
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600, 3661, -5)] == [
        "0:00",
        "1:00",
        "1:01",
        "59:59",
        "1:00:00",
        "1:01:01",
        "0:00",
    ]


def test_progress_says_where_it_is_and_how_long_is_left():
    p = Progress("train", "lora", 1, 4, "steps", 10.0, stage=2, stages=5)
    assert not p.finished and p.eta_s == pytest.approx(30.0)
    assert p.describe() == "[2/5] training lora: 1 of 4 steps · 0:10 · ETA 0:30"
    assert Progress("evaluate", "base", 0, 3, "examples", 0.0).eta_s is None  # nothing done: no pace yet
    done = Progress("load", "the 4-bit base", 1, 1, "models", 3.0, 1, 5)
    assert done.finished and done.describe() == "[1/5] loading the 4-bit base (done) · 0:03"


def test_stages_count_the_phases_in_order_and_tell_each_from_zero():
    told: list[Progress] = []
    stages = Stages(told.append, stages=2)
    tell = stages.begin("evaluate", "base", 3, "examples")
    tell(2)
    tell(3, total=3)
    stages.begin("train", "lora", 5, "steps")(5)
    assert [(p.stage, p.phase, p.done, p.total) for p in told] == [
        (1, "evaluate", 0, 3),
        (1, "evaluate", 2, 3),
        (1, "evaluate", 3, 3),
        (2, "train", 0, 5),
        (2, "train", 5, 5),
    ]
    assert {p.stages for p in told} == {2}
    Stages().begin("train", "lora", 1, "steps")(1)  # no sink: it only counts, and says nothing


def test_hooks_counted_start_a_fresh_count_of_the_planned_phases():
    told: list[Progress] = []
    hooks = Hooks(on_progress=told.append)
    run = hooks.counted(4)
    run.begin("load", "the 16-bit base", 1, "models")(1)
    run.begin("evaluate", "base", 2, "examples")
    again = hooks.counted(4)  # a second run with the same hooks counts from the start
    again.begin("load", "the 16-bit base", 1, "models")
    assert [(p.stage, p.stages) for p in told] == [(1, 4), (1, 4), (2, 4), (1, 4)]
    assert hooks.stages is None and run.stop is hooks.stop  # the caller's hooks are not changed, the stop is shared


def test_hooks_adding_tells_the_runs_own_sinks_first():
    order = []
    hooks = Hooks(sinks=(lambda e: order.append(("caller", e.step)),))
    run = hooks.adding([lambda e: order.append(("metrics.csv", e.step))])
    for sink in run.sinks:
        sink(event(1))
    assert order == [("metrics.csv", 1), ("caller", 1)]
    assert len(hooks.sinks) == 1  # the caller's hooks keep their own


def test_quiet_hooks_keep_only_the_stop(caplog):
    said, told = [], []
    stop = threading.Event()
    hooks = Hooks(sinks=(said.append,), stop=stop, on_status=said.append, on_progress=told.append)
    quiet = hooks.quiet()
    assert quiet.stop is stop and quiet.sinks == () and quiet.on_progress is None
    quiet.status("rank 1 says nothing")
    quiet.counted(2).begin("train", "lora", 1, "steps")(1)
    assert said == [] and told == [] and not caplog.records


def test_status_without_a_listener_goes_to_the_log(caplog):
    with caplog.at_level("INFO", logger="workbench"):
        Hooks().status("loading the 4-bit base")
    assert [r.getMessage() for r in caplog.records] == ["loading the 4-bit base"]


def test_progress_bars_one_per_phase_with_the_loss_on_the_training_bar():
    out = io.StringIO()
    bars = ProgressBars(file=out)
    bars(Progress("train", "lora", 0, 3, "steps", 0.0, 2, 3))
    bars.metric(event(1))
    bars(Progress("train", "lora", 1, 3, "steps", 1.0, 2, 3))
    bars(Progress("evaluate", "lora", 0, 2, "examples", 0.0, 3, 3))
    assert set(bars.bars) == {("train", "lora", "steps"), ("evaluate", "lora", "examples")}
    bars.close()
    text = out.getvalue()
    assert "[2/3] training lora" in text and "loss=2.000" in text and "[3/3] evaluating lora" in text
