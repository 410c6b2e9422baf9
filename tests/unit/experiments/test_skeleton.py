"""What every run does around its variants (experiments.skeleton): the folder made, metrics.csv written as the
steps come, the run written whole at the end also when a variant raised, nothing written when no variant finished,
and the machine's turn released whatever happened, also when the folder cannot be made."""

from __future__ import annotations

import csv
import os
import time

import pytest
from helpers import good_doc, is_png

from workbench.core import files
from workbench.core.events import MetricEvent
from workbench.engine.generate import Generation
from workbench.experiments.phases import VariantOutcome
from workbench.experiments.skeleton import run_skeleton
from workbench.records.results import CompareResult, VariantResult
from workbench.records.runs import Run


class Turn:
    """A machine.admission ticket that only records its release."""

    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


def fresh_result() -> CompareResult:
    doc = good_doc()
    return CompareResult(**{k: doc[k] for k in ("config", "device", "device_type", "model_path", "task")})


def step(n: int) -> MetricEvent:
    return MetricEvent("lora", n, 3, 1.0 / n, 1e-3, 50.0, 2**20, 2**21, float(n))


def test_the_run_is_written_whole_and_the_turn_released_when_a_variant_raises(tmp_path):
    run, result, turn = Run(tmp_path / "run"), fresh_result(), Turn()
    with pytest.raises(RuntimeError, match="a bug in lora"):
        with run_skeleton(run, result, turn) as writer:
            assert run.path.is_dir() and turn.released == 0  # the turn is held while the variants run
            base = VariantResult("base", 16, accuracy=0.5, eval_loss=1.0)
            writer.keep(
                "base",
                VariantOutcome(base, [{"prompt": "p", "prediction": "a"}], {"p": Generation("an answer", 0.1, 2)}),
            )
            writer.metrics(step(1))  # the failing variant's first step, written as it came
            raise RuntimeError("a bug in lora")
    assert turn.released == 1
    assert [v.name for v in run.results()] == ["base"]  # what finished is kept
    assert [row["step"] for row in csv.DictReader((run.path / "metrics.csv").open())] == ["1"]
    assert (run.path / "predictions.json").is_file() and is_png(run.path / "loss.png")
    assert "an answer" in (run.path / "generations.md").read_text()


def test_no_variant_finished_writes_no_results_but_still_releases_the_turn(tmp_path):
    run, turn = Run(tmp_path / "run"), Turn()
    with pytest.raises(KeyboardInterrupt):
        with run_skeleton(run, fresh_result(), turn):
            raise KeyboardInterrupt
    assert turn.released == 1 and not (run.path / "results.json").exists() and not run.finished


def test_a_folder_that_cannot_be_made_still_releases_the_turn(tmp_path):
    (tmp_path / "a-file").write_text("x")
    turn = Turn()
    with pytest.raises(OSError):
        with run_skeleton(Run(tmp_path / "a-file" / "run"), fresh_result(), turn):
            pytest.fail("no variant may run without its folder")
    assert turn.released == 1


def test_a_continued_run_starts_metrics_with_the_steps_it_keeps_and_stale_temps_go(tmp_path):
    run, result = Run(tmp_path / "run"), fresh_result()
    run.path.mkdir()
    stale = files.tmp_beside(run.path / "results.json")  # what a write killed two hours ago left
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    with run_skeleton(run, result, None, kept=[step(1), step(2)]) as writer:
        writer.metrics(step(3))
        writer.keep("lora", VariantOutcome(VariantResult("lora", 16, steps_done=3)))
    assert [row["step"] for row in csv.DictReader((run.path / "metrics.csv").open())] == ["1", "2", "3"]
    assert [e.step for e in result.metrics] == [1, 2]  # the kept steps are the run's from the start
    assert not stale.exists() and run.finished
