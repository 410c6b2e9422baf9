"""How a command in a terminal stops and what it shows while it works.

Ctrl-C in stages, for every long command and the sweep's worker processes: each press sets the next of the
stages' events and prints its line (compare and train: stop after the step, then abort; a sweep: no new
trial, then stop the running ones, then abort; a worker: no new trial, then stop, and any press after says
so again). A worker's SIGTERM goes to the last stage at once. And the terminal's Hooks: a tqdm bar for every
phase (the loss on the training bar) and status lines on stderr.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from workbench.core.events import Hooks, ProgressBars


class StagedStop:
    """One threading.Event per stage, set in turn by each press; past the last stage, a press aborts
    (KeyboardInterrupt) or, with `repeat`, repeats the last stage's line."""

    def __init__(self, lines: list[str], *, repeat: bool = False, file=None) -> None:
        self.lines = list(lines)
        self.events = [threading.Event() for _ in self.lines]
        self.repeat = repeat
        self.file = file

    @property
    def stopping(self) -> bool:
        """Whether any stage was reached (a command says "stopped early")."""
        return self.events[0].is_set()

    def press(self, signum=None, frame=None) -> None:
        """A Ctrl-C: the next stage, or past the last one, an abort (or the last again)."""
        waiting = [i for i, e in enumerate(self.events) if not e.is_set()]
        if not waiting and not self.repeat:
            raise KeyboardInterrupt
        self._reach(waiting[0] if waiting else len(self.events) - 1)

    def last(self, signum=None, frame=None) -> None:
        """A SIGTERM: the last stage at once, and every stage before it."""
        self._reach(len(self.events) - 1)

    def _reach(self, stage: int) -> None:
        print(self.lines[stage], file=self.file or sys.stderr, flush=True)
        for e in self.events[: stage + 1]:
            e.set()


@contextlib.contextmanager
def staged_stop(*lines: str, repeat: bool = False, file=None, term: bool = False) -> Iterator[StagedStop]:
    """Ctrl-C goes through `lines` (one a stage) while the block runs; with `term`, SIGTERM jumps to the last.
    The handlers there before are put back after."""
    stages = StagedStop(list(lines), repeat=repeat, file=file)
    old = {signal.SIGINT: signal.signal(signal.SIGINT, stages.press)}
    if term:
        old[signal.SIGTERM] = signal.signal(signal.SIGTERM, stages.last)
    try:
        yield stages
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def status_line(msg: str) -> None:
    print(f"[workbench] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def terminal(stop: threading.Event, bars: bool = True) -> Iterator[Hooks]:
    """The terminal's Hooks: status lines on stderr and (with `bars`) a tqdm bar per phase, closed after."""
    progress = ProgressBars() if bars else None
    try:
        yield Hooks(
            sinks=(progress.metric,) if progress else (), stop=stop, on_status=status_line, on_progress=progress
        )
    finally:
        if progress is not None:
            progress.close()


@contextlib.contextmanager
def watched(what: str) -> Iterator[Hooks]:
    """What compare, train and export run under: the terminal's Hooks, and Ctrl-C: the first stops `what`
    (the work ends after its current step and keeps what it made), a second aborts."""
    with staged_stop(f"\nstopping {what} (Ctrl-C again to abort)...") as stages, terminal(stages.events[0]) as hooks:
        yield hooks
