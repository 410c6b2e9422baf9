"""`workbench worker`: one worker of a sweep's study, joining it with nothing but its storage and name (what
`workbench sweep --workers N` starts N of, and what a machine elsewhere runs to help). Ctrl-C once: it starts no
new trial; twice (or SIGTERM): its run stops after the current step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli.stopping import staged_stop


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="work on a sweep's study as one of its workers (what sweep --workers starts)")
    p.add_argument("--storage", required=True, help="The study's storage URL.")
    p.add_argument("--study", required=True, help="The study's name.")
    p.add_argument("--out", required=True, help="The runs folder for the trials' run folders.")
    p.add_argument("--skip-fit-check", action="store_true", help="Train a point even if it may not fit.")


def say(text: str) -> None:
    """A line on stdout, at once: the sweep that started this worker passes it on as it comes ("[w2] ...")."""
    print(text, flush=True)


def run(a: argparse.Namespace) -> int:
    from workbench.core.events import Hooks
    from workbench.experiments.study.space import definition_of
    from workbench.experiments.study.storage import open_study_by_name
    from workbench.experiments.study.worker import Worker
    from workbench.machine import allocator

    allocator.configure()
    st = open_study_by_name(a.storage, a.study)
    finish, stop = "stopping after the current trial", "stopping the current run after its step"
    with staged_stop(finish, stop, repeat=True, file=sys.stdout, term=True) as stages:
        hooks = Hooks(stop=stages.events[1], on_status=say)
        worker = Worker(
            st, definition_of(st), Path(a.out), hooks=hooks, finish=stages.events[0], fit_check=not a.skip_fit_check
        )
        worker.work()
    say(f"done: {len(worker.done)} trial(s) here")
    return 0
