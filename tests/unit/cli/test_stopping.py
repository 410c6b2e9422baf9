"""Ctrl-C in stages and the terminal's Hooks (cli/stopping.py): each press sets the next stage and says so, past
the last one a press aborts (or, for a worker, says the last again), SIGTERM jumps to the last, the handlers are
put back after; and the terminal's status lines and bars."""

from __future__ import annotations

import io
import os
import signal
import threading

import pytest

from workbench.cli import stopping
from workbench.core.events import MetricEvent


def test_each_press_reaches_the_next_stage_and_past_the_last_it_aborts():
    said = io.StringIO()
    stages = stopping.StagedStop(["no new trial", "stopping the runs"], file=said)
    assert not stages.stopping
    stages.press()
    assert stages.stopping and [e.is_set() for e in stages.events] == [True, False]
    stages.press()
    assert [e.is_set() for e in stages.events] == [True, True]
    assert said.getvalue().splitlines() == ["no new trial", "stopping the runs"]
    with pytest.raises(KeyboardInterrupt):
        stages.press()


def test_a_worker_repeats_its_last_stage_and_sigterm_goes_straight_to_it():
    said = io.StringIO()
    stages = stopping.StagedStop(["finishing", "stopping"], repeat=True, file=said)
    stages.last()  # SIGTERM: every stage at once
    assert all(e.is_set() for e in stages.events)
    stages.press()  # no abort: the last line again
    assert said.getvalue().splitlines() == ["stopping", "stopping"]


def test_the_handlers_are_ctrl_c_while_the_block_runs_and_the_old_ones_after():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    said = io.StringIO()
    with stopping.staged_stop("stop after the step", file=said, term=True) as stages:
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled in this (the main) thread
        assert stages.events[0].wait(5)
        assert signal.getsignal(signal.SIGTERM) == stages.last
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert said.getvalue() == "stop after the step\n"


def test_the_terminals_hooks_say_status_on_stderr_and_stop_on_the_event(capsys):
    stop = threading.Event()
    with stopping.terminal(stop, bars=False) as hooks:
        hooks.status("loading the 16-bit base")
        assert hooks.stop is stop and hooks.sinks == () and hooks.on_progress is None
    assert capsys.readouterr().err == "[workbench] loading the 16-bit base\n"


def test_with_bars_the_training_bar_gets_every_step(capsys):
    with stopping.terminal(threading.Event()) as hooks:
        tell = hooks.begin("train", "lora", 2, "steps")
        for step in (1, 2):
            for sink in hooks.sinks:
                sink(MetricEvent("lora", step, 2, 1.5 / step, 1e-3, 100.0, 1, 2**20, float(step)))
            tell(step)
    err = capsys.readouterr().err
    assert "training lora" in err and "2/2" in err and "loss=" in err


def test_watched_is_one_stop_then_an_abort(capsys):
    with stopping.watched("the run") as hooks:
        os.kill(os.getpid(), signal.SIGINT)
        assert hooks.stop.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            hooks.stop.wait(1)  # the second press raises in this thread as soon as the handler runs
    assert "stopping the run (Ctrl-C again to abort)" in capsys.readouterr().err
