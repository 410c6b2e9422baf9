"""What an eval size can tell apart and what scoring it costs, said before a run or a sweep starts: the number
of held-out examples a run scores, the accuracy gap they resolve (workbench.stats) and the seconds they take
at the pace this machine's runs measured.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .config import RunConfig
from .runs import all_results
from .stats import eval_size_sentence

# seconds to score one eval example (its loss and its greedy answer) before this machine has scored any: an
# adapter on q,v on the dates task, embedded model, 2 quiet CPU cores (0.36-0.39 s measured over 300 examples)
FIRST_GUESS_EVAL_S = 0.36


def eval_pace(runs_root: Path, device_type: str) -> float | None:
    """Median seconds to score one eval example, over the trained variants on disk that ran on this kind of
    device (None before any has)."""
    paces = [
        row.result.eval_seconds / row.result.eval_examples
        for row in all_results(Path(runs_root))
        if row.result.trained
        and row.result.eval_seconds
        and row.result.eval_examples
        and (row.device or "").startswith(device_type)
    ]
    return statistics.median(paces) if paces else None


def eval_size(cfg: RunConfig) -> tuple[int, int] | None:
    """(examples a run of cfg scores, examples its task holds), or None for plain text (scored by perplexity)."""
    from .data import TextSource, task_for

    task = task_for(cfg)
    if isinstance(task.eval, TextSource) or task.scoring != "exact_match":
        return None
    return len(task.eval_split(cfg.train.eval_examples)), len(task.eval)


def check_eval_size(cfg: RunConfig, task=None) -> None:
    """An eval size above the task's is refused (Task.eval_split says why): the Train tab's check before Start,
    the same one the run makes."""
    from .data import task_for

    (task if task is not None else task_for(cfg)).eval_split(cfg.train.eval_examples)


def eval_plan(cfg: RunConfig, runs_root: Path, device_type: str = "cpu") -> str:
    """What a run's eval size can tell apart and what scoring it costs, before anything loads: "eval: 60 of
    the 600 held-out examples; with 60 eval examples near 80%, only accuracy gaps of about 23 points show
    ...; scoring takes about 9 s a variant here (all 600: about 90 s)"."""
    size = eval_size(cfg)
    if size is None:
        return ""
    n, held = size
    pace = eval_pace(runs_root, device_type)
    guess = "" if pace is not None else ", a first guess: nothing scored here yet"
    pace = pace or FIRST_GUESS_EVAL_S
    whole = f" (all {held:,}: about {held * pace:,.0f} s)" if n < held else ""
    return (
        f"eval: {n:,} of the task's {held:,} held-out examples; {eval_size_sentence(n)}; scoring them takes "
        f"about {n * pace:,.0f} s a variant{guess}{whole}; --eval-examples sets how many"
    )
