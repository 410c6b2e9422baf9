"""What running work tells its watchers: one MetricEvent per optimizer step, handed to sinks, and a
Progress for every phase of a run (loading, evaluating, training, answering), handed to progress sinks.

A sink is any callable taking a MetricEvent: the live plots, metrics.csv and the CLI's table all get the
same rows. A progress sink takes a Progress: the Train tab's bar and the CLI's tqdm bars show the same
counts. This module imports nothing of workbench, so the training loop (which emits events) and the run
files (which store them) can both import it from below.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class MetricEvent:
    """One optimizer step of one variant; every sink (plot, CSV, progress bar, table) gets the same row."""

    variant: str
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_second: float
    memory_bytes: int
    peak_memory_bytes: int
    elapsed_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


Sink = Callable[[MetricEvent], None]


PHASE_VERBS = {"load": "loading", "evaluate": "evaluating", "train": "training", "answer": "answering"}


def clock(seconds: float) -> str:
    """m:ss (h:mm:ss past an hour), as progress lines show times."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass(frozen=True)
class Progress:
    """How far one phase of one variant has come: `done` of `total` `unit` in `elapsed_s` seconds.

    `stage` of `stages` places the phase in the whole run (stage 0: not known)."""

    phase: str  # load | evaluate | train | answer
    variant: str
    done: int
    total: int
    unit: str  # examples | steps | prompts | models
    elapsed_s: float
    stage: int = 0
    stages: int = 0

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this phase's pace so far; None before its first unit is done."""
        if self.done <= 0 or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.done * max(self.total - self.done, 0)

    def describe(self) -> str:
        where = f"[{self.stage}/{self.stages}] " if self.stages else ""
        if self.phase == "load":  # one model, no count to give: say what loads and for how long
            return f"{where}loading {self.variant}{' (done)' if self.finished else '…'} · {clock(self.elapsed_s)}"
        eta = self.eta_s
        tail = f" · ETA {clock(eta)}" if eta is not None and not self.finished else ""
        return (
            f"{where}{PHASE_VERBS.get(self.phase, self.phase)} {self.variant}: {self.done} of {self.total} "
            f"{self.unit} · {clock(self.elapsed_s)}{tail}"
        )


ProgressSink = Callable[[Progress], None]


class Stages:
    """The phases of a run, counted, each turned into Progress for a progress sink (the Train tab's bar,
    the CLI's tqdm bars). With no sink it only counts."""

    def __init__(self, sink: ProgressSink | None = None, stages: int = 0):
        self.sink, self.stages, self.stage = sink, stages, 0

    def begin(self, phase: str, variant: str, total: int, unit: str) -> Callable[..., None]:
        """Start the next phase; returns tell(done, total=None, unit=None) for its counts."""
        self.stage += 1
        stage, start = self.stage, time.monotonic()
        state = {"total": total, "unit": unit}

        def tell(done: int, total: int | None = None, unit: str | None = None) -> None:
            state.update({k: v for k, v in (("total", total), ("unit", unit)) if v is not None})
            if self.sink is not None:
                elapsed = time.monotonic() - start
                self.sink(Progress(phase, variant, done, state["total"], state["unit"], elapsed, stage, self.stages))

        tell(0)
        return tell


@dataclass(frozen=True)
class Hooks:
    """How long work (a run, its seeds, a sweep's trials) reports to whoever started it, and how they stop it:
    one value handed down through every phase instead of four parameters each.

    `sinks` get a MetricEvent per optimizer step; `stop`, once set, ends the work after its current step
    (what finished is kept); `on_status` gets a line per phase; `on_progress` a Progress as every phase moves;
    `on_variant` a VariantStart as each variant begins (a live memory plot draws its estimate)."""

    sinks: tuple[Sink, ...] = ()
    stop: threading.Event = field(default_factory=threading.Event)
    on_status: Callable[[str], None] | None = None
    on_progress: ProgressSink | None = None
    on_variant: Callable[[object], None] | None = None
    stages: Stages | None = None  # the phases counted: set by counted(), once per run

    def status(self, text: str) -> None:
        (self.on_status or logging.getLogger("workbench").info)(text)

    def begin(self, phase: str, variant: str, total: int, unit: str) -> Callable[..., None]:
        """Stages.begin on this run's count (uncounted when the work was not started through counted())."""
        return (self.stages or Stages(self.on_progress)).begin(phase, variant, total, unit)

    def counted(self, planned: int) -> Hooks:
        """These hooks with a fresh count of `planned` phases: what a run makes as it starts."""
        return replace(self, stages=Stages(self.on_progress, planned))

    def adding(self, sinks: Iterable[Sink]) -> Hooks:
        """These hooks with `sinks` told first (a run's own metrics.csv and result rows)."""
        return replace(self, sinks=(*sinks, *self.sinks))

    def quiet(self) -> Hooks:
        """Only the stop: what a process that is not rank 0 runs with (rank 0 alone reports)."""
        return Hooks(stop=self.stop, on_status=lambda _: None)


class ProgressBars:
    """tqdm bars for the terminal and notebooks (tqdm.auto picks the right one): one per phase of each
    variant, called with Progress; `metric` (a MetricEvent sink) puts the loss and memory on the training bar."""

    def __init__(self, file=None):
        self.file = file
        self.bars: dict[tuple[str, str, str], object] = {}

    def __call__(self, p: Progress) -> None:
        from tqdm.auto import tqdm

        key = (p.phase, p.variant, p.unit)
        bar = self.bars.get(key)
        if bar is None:
            where = f"[{p.stage}/{p.stages}] " if p.stages else ""
            desc = f"{where}{PHASE_VERBS.get(p.phase, p.phase)} {p.variant}"
            unit = p.unit.split()[0].rstrip("s") or "it"
            bar = self.bars[key] = tqdm(total=p.total, desc=desc, unit=unit, leave=True, file=self.file)
        bar.total = p.total
        bar.update(p.done - bar.n)
        if p.finished:
            bar.close()

    def close(self) -> None:
        """Close the bars still open (a run that failed or stopped midway), so a message after them reads clean."""
        for bar in self.bars.values():
            bar.close()

    def metric(self, e: MetricEvent) -> None:
        bar = self.bars.get(("train", e.variant, "steps"))
        if bar is not None:
            bar.set_postfix(loss=f"{e.loss:.3f}", mem=f"{e.memory_bytes / 2**20:.0f}MiB", refresh=False)
