"""What every run of the workbench does around its variants, in one place: the run folder made once the data
and device are known to be usable, what a killed earlier write left there removed, metrics.csv written step by
step, the results, figures and answers written whole at the end (also when a variant failed or the run was
stopped), and the machine's turn (machine.admission) released whatever happened.

experiments.comparison (every variant, one process) and experiments.experiment (one variant, one or many
processes) both run inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from workbench.analysis.plots import save_run_figures
from workbench.core.events import MetricEvent
from workbench.core.files import remove_stale_temps
from workbench.experiments.phases import VariantOutcome
from workbench.machine.admission import Ticket
from workbench.records.results import CompareResult
from workbench.records.runs import MetricsCSV, Run, write_run


@dataclass
class RunWriter:
    """A run's folder while its variants run: metrics.csv, and what each finished variant leaves for the end."""

    run: Run
    result: CompareResult
    metrics: MetricsCSV
    predictions: dict[str, list[dict]] = field(default_factory=dict)  # per variant: predictions.json
    scores: dict[str, dict] = field(default_factory=dict)  # per variant: scores.json

    def keep(self, name: str, done: VariantOutcome) -> None:
        """A finished variant into the run's result: its row, its per-example answers and scores, and its
        side-by-side answers."""
        self.result.variants.append(done.result)
        if done.predictions is not None:
            self.predictions[name] = done.predictions
        if done.scores is not None:
            self.scores[name] = done.scores
        for prompt, answer in done.answers.items():
            self.result.generations.setdefault(prompt, {})[name] = answer


@contextmanager
def run_skeleton(
    run: Run, result: CompareResult, ticket: Ticket | None, kept: list[MetricEvent] = ()
) -> Iterator[RunWriter]:
    """The run folder around a run's variants: made (with `kept`, a continued run's steps so far, as the start
    of metrics.csv), then written whole on the way out, whatever happened, if any variant has a row; `ticket`
    (the run's turn on the machine, taken by the caller) is released last, also when the folder cannot be made."""
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run.path)  # what a killed earlier write of this run left (temp files, half adapters)
        writer = RunWriter(run, result, MetricsCSV(run.path / "metrics.csv", list(kept)))
        result.metrics.extend(kept)
        try:
            yield writer
        finally:
            writer.metrics.close()
            if result.variants:
                write_run(run, result, writer.predictions, writer.scores)
                save_run_figures(result, run.path)
    finally:
        if ticket is not None:
            ticket.release()
