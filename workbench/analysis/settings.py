"""Pooling by setting: the results of runs that share a setting (a sweep's seeds, a class's runs of the same
settings) pooled into one mean, its spread across seeds and its interval, for the CLI, the Results and Sweep
tabs and notebooks 03 and 05.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from workbench.core.config import same_settings
from workbench.core.stats import Interval, repeats_interval
from workbench.records.results import INTERVAL_SCORES, VariantResult


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
    person) tuples, or scan.ResultRow-like objects with .config, .result, .run and .user."""
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
