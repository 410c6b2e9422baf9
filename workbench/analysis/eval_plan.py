"""What an eval size can tell apart and what scoring it costs, said before a run or a sweep starts: the number
of held-out examples a run scores, the accuracy gap they resolve (workbench.core.stats) and the seconds they take
at the pace this machine's runs measured.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from workbench.analysis.crossed import SeedSpread, settings_gap
from workbench.analysis.settings import settings
from workbench.analysis.verdicts import SCORES
from workbench.core.config import RunConfig
from workbench.core.stats import eval_size_sentence
from workbench.records.scan import all_results

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
    from workbench.data import TextSource, task_for

    task = task_for(cfg)
    if isinstance(task.eval, TextSource) or task.scoring != "exact_match":
        return None
    return len(task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)), len(task.eval)


def check_eval_size(cfg: RunConfig, task=None) -> str:
    """An eval size above the task's is refused (Task.eval_split says why), or, where it is a preset's, cut to
    the task's with the note returned ("" when there is none): the Train tab's check before Start, the same one
    the run makes."""
    from workbench.data import task_for

    task = task if task is not None else task_for(cfg)
    task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
    return task.preset_size_note(cfg.train.eval_examples)


def eval_plan(cfg: RunConfig, runs_root: Path, device_type: str = "cpu", runs: int = 1) -> str:
    """What a run's eval size can tell apart and what scoring it costs, before anything loads: "eval: 60 of
    the 600 held-out examples; with 60 eval examples near 80%, only accuracy gaps of about 23 points show
    ...; scoring takes about 9 s a variant here (all 600: about 90 s)", then what `runs` runs of each setting
    tell apart once the seeds' spread is counted (runs_sentence)."""
    size = eval_size(cfg)
    if size is None:
        return ""
    n, held = size
    pace = eval_pace(runs_root, device_type)
    guess = "" if pace is not None else ", a first guess: nothing scored here yet"
    pace = pace or FIRST_GUESS_EVAL_S
    whole = f" (all {held:,}: about {held * pace:,.0f} s)" if n < held else ""
    line = (
        f"eval: {n:,} of the task's {held:,} held-out examples; {eval_size_sentence(n)}; scoring them takes "
        f"about {n * pace:,.0f} s a variant{guess}{whole}; --eval-examples sets how many"
    )
    between = runs_sentence(runs, n, held, seed_spread(cfg.to_dict(), runs_root))
    return f"{line}. {between}" if between else line


def runs_sentence(runs: int, n: int, held: int, spread: SeedSpread | None, accuracy: float = 0.8) -> str:
    """What `runs` runs of each of two settings on `n` examples tell apart once the seeds' spread is counted,
    and which helps more: all the task's `held` examples or three times the runs (more examples cannot shrink
    the seeds' part). One run of each tells no settings apart: then what 3 would. Empty where the spread of the
    task's accuracy between seeds is not known."""
    sd = spread.sd.get("accuracy") if spread else None
    if not sd:
        return ""
    said = f"seed to seed this task's accuracy moves by {100 * sd:.1f} points (sd; {spread.source})"
    if runs == 1:
        three = settings_gap(3, n, sd, accuracy, spread.discordant)
        return (
            f"between settings: one run of each speaks for two trained adapters, not their settings: {said}; "
            f"with --seeds 3 gaps of about {100 * three:.0f} points would show reliably"
        )
    gap = settings_gap(runs, n, sd, accuracy, spread.discordant)
    more_runs = settings_gap(3 * runs, n, sd, accuracy, spread.discordant)
    options = [f"{3 * runs} runs: about {100 * more_runs:.0f}"]
    helps = "more runs"
    if held > n:
        all_examples = settings_gap(runs, held, sd, accuracy, spread.discordant)
        options.insert(0, f"all {held:,} examples: about {100 * all_examples:.0f}")
        helps = "more runs" if more_runs < all_examples else "more examples"
    return (
        f"between settings: {said}, so {runs} runs of each show gaps of about {100 * gap:.0f} points reliably "
        f"({'; '.join(options)}): {helps} would help more"
    )


def seed_spread(config: dict, runs_root: Path | None = None) -> SeedSpread | None:
    """How far one run's scores move between seeds of one setting on this run's task and eval examples: pooled
    over the settings in the runs folder trained with several seeds (each setting's variance weighted by its
    runs less one), or else the spread measured and shipped with a built-in task (task.json); None if neither."""
    same = ("task", "data", "eval_data", "eval_fraction")
    n = (config.get("train") or {}).get("eval_examples")
    rows = [
        row
        for row in (all_results(Path(runs_root)) if runs_root and Path(runs_root).is_dir() else [])
        if row.result.trained
        and all(row.config.get(k) == config.get(k) for k in same)
        and (row.config.get("train") or {}).get("eval_examples") == n
    ]
    # one result per seed: two runs of one setting with the same seed (a run made again) are no seed-to-seed spread
    by_seed = [{s: r for s, r in zip(g.seeds, g.results) if s is not None} for g in settings(rows)]
    repeated = [list(d.values()) for d in by_seed if len(d) > 1]
    sd = {}
    for score in SCORES:
        parts = [
            (len(v) - 1, statistics.variance(v))
            for results in repeated
            if len(v := [getattr(r, score) for r in results if getattr(r, score) is not None]) > 1
        ]
        if parts:
            sd[score] = (sum(d * var for d, var in parts) / sum(d for d, _ in parts)) ** 0.5
    shipped = _shipped_spread(config)
    if sd:  # the share of examples two runs answer differently is the task's, where it ships one
        runs = sum(len(results) for results in repeated)
        where = f"{runs} runs of {len(repeated)} settings in this runs folder"
        return SeedSpread(sd, runs, where, shipped.discordant if shipped else None)
    return shipped


def _shipped_spread(config: dict) -> SeedSpread | None:
    """The seed spread measured and shipped with a built-in task (task.json's seed_spread), or None."""
    if config.get("data") or not config.get("task"):
        return None
    from workbench.data import load_task

    try:
        shipped = load_task(config["task"]).seed_spread
    except ValueError:
        return None
    if not shipped:
        return None
    discordant = shipped.get("discordant")
    return SeedSpread(
        {k: float(shipped[k]) for k in SCORES if shipped.get(k) is not None},
        int(shipped.get("runs", 0)),
        str(shipped.get("source", "shipped with the task")),
        float(discordant) if discordant is not None else None,
    )
