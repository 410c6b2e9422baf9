"""Seeds as repeats: one setting trained several times with different seeds, on the same eval examples.

`run_seeds` is `workbench compare --seeds N` and the Train tab's Seeds; analysis.settings pools what they
made (and any other runs of one setting) into a mean, its spread across seeds and its interval.
"""

from __future__ import annotations

from pathlib import Path

from workbench.core.config import RunConfig
from workbench.core.events import Hooks
from workbench.records.results import CompareResult

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


def run_seeds(cfg: RunConfig, out_dir: str | Path, n: int, hooks: Hooks | None = None, **kw) -> list[CompareResult]:
    """cfg trained n times, seed after seed, each into out_dir/seed-<seed> (with n = 1, into out_dir itself, as
    a plain run). `hooks` and keyword arguments as run_compare's; a stop ends the seed that is running and
    starts no more. Returns the CompareResults of the seeds that ran."""
    from workbench.experiments.comparison import run_compare

    seeds = seed_values(cfg, n)
    hooks = hooks or Hooks()
    if n == 1:
        return [run_compare(cfg, out_dir, hooks, **kw)]
    done: list[CompareResult] = []
    for i, seed in enumerate(seeds, 1):
        if hooks.stop.is_set():
            break
        if hooks.on_status:
            hooks.status(f"seed {seed} ({i} of {n})")
        done.append(run_compare(with_seed(cfg, seed), seed_dir(Path(out_dir), seed), hooks, **kw))
    return done
