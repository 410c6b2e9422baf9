"""Seeds as repeats: one setting trained several times with different seeds (on the same eval examples), and
the results of any runs that share a setting (a sweep's seeds, a class's runs of the same settings) pooled
into one mean, its spread across seeds and its interval.

`run_seeds` is `workbench compare --seeds N` and the Train tab's Seeds; `settings` groups any results by
setting for the CLI, the Results and Sweep tabs and notebooks 03 and 05.
"""

from __future__ import annotations

import json
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.config import RunConfig, same_settings
from workbench.core.stats import Interval, repeats_interval
from workbench.records.results import INTERVAL_SCORES, CompareResult, VariantResult

MAX_SEEDS = 100  # a typo (--seeds 1000) should not queue a thousand trainings


def check_seeds(n) -> int:
    """A number of seeds as the CLI and the panels take it: a whole number from 1 to MAX_SEEDS."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SEEDS:
        raise ValueError(
            f"seeds must be a whole number from 1 to {MAX_SEEDS} (how many times to train each setting); got {n!r}"
        )
    return n


def seed_values(cfg: RunConfig, n: int) -> list[int]:
    """The seeds of n repeats: the config's seed and the n − 1 after it."""
    first = cfg.train.seed
    if first + check_seeds(n) - 1 > 2**32 - 1:
        raise ValueError(f"seed: {first} + {n} seeds passes the largest seed, {2**32 - 1}; start lower")
    return list(range(first, first + n))


def with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    """cfg trained with another seed and scored on the same examples: a data file's held-out split keeps
    cfg's seed (its first seed's), so only the training changes."""
    d = cfg.to_dict()
    if seed != cfg.train.seed:
        d["split_seed"] = cfg.held_out_seed
    d["train"]["seed"] = seed
    return RunConfig.from_dict(d)


def seed_dir(out: Path, seed: int) -> Path:
    """Where one seed of a repeated run goes: out/seed-<seed> (found by Results one level below out)."""
    return Path(out) / f"seed-{seed}"


def run_seeds(cfg: RunConfig, out_dir: str | Path, n: int, *, stop: threading.Event | None = None, **kw):
    """cfg trained n times, seed after seed, each into out_dir/seed-<seed> (with n = 1, into out_dir itself, as
    a plain run). Keyword arguments as run_compare's; a stop ends the seed that is running and starts no more.
    Returns the CompareResults of the seeds that ran."""
    from workbench.experiments.comparison import run_compare

    seeds = seed_values(cfg, n)
    stop = stop or threading.Event()
    if n == 1:
        return [run_compare(cfg, out_dir, stop=stop, **kw)]
    status = kw.get("on_status")
    done: list[CompareResult] = []
    for i, seed in enumerate(seeds, 1):
        if stop.is_set():
            break
        if status:
            status(f"seed {seed} ({i} of {n})")
        done.append(run_compare(with_seed(cfg, seed), seed_dir(Path(out_dir), seed), stop=stop, **kw))
    return done


# --------------------------------------------------------------------------- pooling by setting


def setting_key(config: dict, variant: str) -> str:
    """What makes two results repeats of one setting: the same settings but the seed, the same variant."""
    d = same_settings(config)
    train = d.get("train") or {}
    split = d.pop("split_seed", None)
    if d.get("data") is not None:  # a data file's held-out split is part of the setting; a built-in task's is fixed
        d["split_seed"] = train.get("seed") if split is None else split
    train.pop("seed", None)
    return json.dumps([d, variant], sort_keys=True)


@dataclass
class Setting:
    """The repeats of one setting: each seed's (or person's) result, and what they add up to."""

    key: str
    results: list[VariantResult] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # where each came from: a run folder
    people: list[str] = field(default_factory=list)

    @property
    def first(self) -> VariantResult:
        return self.results[0]

    @property
    def n(self) -> int:
        return len(self.results)

    def values(self, score: str) -> list[float]:
        return [getattr(r, score) for r in self.results if getattr(r, score) is not None]

    def mean(self, score: str) -> float | None:
        v = self.values(score)
        return statistics.fmean(v) if v else None

    def spread(self, score: str) -> float | None:
        """The standard deviation across repeats: how far one seed's score moves from another's."""
        v = self.values(score)
        return statistics.stdev(v) if len(v) > 1 else None

    def interval(self, score: str) -> Interval | None:
        """The 95% interval of the mean: one repeat's own interval, or (several) the seeds' spread and the eval
        examples' noise together (stats.repeats_interval)."""
        scored = [r for r in self.results if getattr(r, score) is not None]
        if not scored:
            return None
        ci = repeats_interval([getattr(r, score) for r in scored], [r.interval(score) for r in scored])
        if ci is not None and score == "accuracy":
            ci = Interval(max(ci.low, 0.0), min(ci.high, 1.0))
        return ci

    def mean_result(self) -> VariantResult:
        """A VariantResult standing for the setting: the first repeat's settings and costs, the means of the
        scores with the pooled intervals (what a chart draws as one point)."""
        d = self.first.to_dict()
        for score in INTERVAL_SCORES:
            d[score] = self.mean(score)
            ci = self.interval(score)
            d[f"{score}_low"], d[f"{score}_high"] = (ci.low, ci.high) if ci else (None, None)
        for cost in ("peak_memory_bytes", "train_seconds", "tokens_per_second"):
            v = self.values(cost)
            d[cost] = statistics.median(v) if v else d[cost]
        return VariantResult.from_dict(d)


def settings(rows) -> list[Setting]:
    """Results grouped by setting, in the order each setting first appears. `rows`: (config dict, result, run,
    person) tuples, or runs.ResultRow-like objects with .config, .result, .run and .user."""
    groups: dict[str, Setting] = {}
    for row in rows:
        config, result, run, person = row if isinstance(row, tuple) else (row.config, row.result, row.run, row.user)
        key = setting_key(config, result.name)
        g = groups.setdefault(key, Setting(key))
        g.results.append(result)
        g.seeds.append((config.get("train") or {}).get("seed"))
        g.runs.append(run)
        g.people.append(person)
    return list(groups.values())


def settings_frame(groups: list[Setting], label=None):
    """One row per setting: how many repeats, and each score's mean, spread across seeds and 95% interval."""
    import pandas as pd

    label = label or (lambda g: g.first.label())
    rows = []
    for g in groups:
        row = {"setting": label(g), "seeds": g.n}
        for score, heading, scale, digits in (
            ("accuracy", "accuracy %", 100, 1),
            ("eval_loss", "eval loss", 1, 4),
            ("forgetting", "forgetting", 1, 3),
        ):
            mean = g.mean(score)
            if mean is None:
                continue
            spread, ci = g.spread(score), g.interval(score)
            row[f"{heading} mean"] = round(mean * scale, digits)
            row[f"{heading} ±sd"] = None if spread is None else round(spread * scale, digits)
            row[f"{heading} 95% CI"] = (
                None if ci is None else f"{ci.low * scale:.{digits}f}–{ci.high * scale:.{digits}f}"
            )
        rows.append(row)
    return pd.DataFrame(rows)
