"""What compare and train print: the eval plan before a run starts, and after it the results table (each
seed's, then the seeds pooled), the variants that failed, the verdicts, and the device and folder lines."""

from __future__ import annotations

import sys
from pathlib import Path


def print_eval_plan(cfg, runs_root: Path, runs: int = 1, base: bool = True) -> None:
    """What the eval size (and `runs` seeds of each setting) can tell apart, and what it costs, before anything
    loads; with `base`, whether the base's scores come from the score cache (a sweep's points score no base)."""
    from workbench.analysis.eval_plan import eval_plan
    from workbench.experiments.kept_scores import kept_sentence

    line = eval_plan(cfg, runs_root, runs=runs)
    kept = kept_sentence(cfg) if line and base else ""
    if line:
        print(f"[workbench] {line}" + (f"; {kept}" if kept else ""), file=sys.stderr)


def print_results(results: list, folders: list[Path], out: Path, *, verdicts: bool = False, batch: str = "") -> None:
    """A finished run's (or its seeds') results: the table, errors, with `verdicts` the paired comparisons,
    `batch` (an experiment's global batch), the device and where it wrote."""
    import pandas as pd

    from workbench.records.results import results_frame

    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 40):
        for result, folder in zip(results, folders):
            if len(results) > 1:
                print(f"\nseed {result.config['train']['seed']} ({folder}):")
            print(results_frame(result.variants).to_string())
        if len(results) > 1:
            print(f"\nover {len(results)} seeds (mean, spread across seeds, 95% interval of the mean):")
            print(seeds_table(results, folders).to_string(index=False))
    for result in results:
        for v in result.variants:
            if v.error:
                print(f"{v.name}: {v.status}: {v.error}")
    if verdicts:
        from workbench.analysis.eval_plan import seed_spread
        from workbench.records.runs import Run

        spread = seed_spread(results[0].config, out.parent) if len(folders) == 1 else None
        print_verdicts([Run(f).scores() for f in folders], [v.name for v in results[0].variants], spread)
    last = results[-1]
    allocator = f"; allocator: {last.allocator}" if last.allocator else ""
    print("\n" + (f"{batch}\n" if batch else "") + f"device: {last.device}{allocator}; model: {last.model_path}")
    print(f"wrote {out.resolve()}" + (" (stopped early)" if any(r.stopped for r in results) else ""))


def seeds_table(results: list, folders: list[Path]):
    """The seeds pooled: each setting's mean, spread across seeds and interval."""
    from workbench.analysis.settings import settings, settings_frame

    rows = [(r.config, v, str(f), r.user) for r, f in zip(results, folders) for v in r.variants if v.error is None]
    return settings_frame(settings(rows), label=lambda g: g.first.name)


def print_verdicts(seed_scores: list[dict], names: list[str], spread=None) -> None:
    """The paired comparisons of a run, one sentence each: over several seeds, verdicts on the settings that count
    the seeds' spread and the examples'; over one, on the trained models, with the task's seed `spread`."""
    from workbench.analysis.verdicts import across_seeds, short_titles, verdicts_what

    pairings = across_seeds(seed_scores, names, short_titles(names), spread)
    if not pairings:
        return
    print(f"\nis the difference real? ({verdicts_what(len(seed_scores))})")
    for p in pairings:
        for sentence in p.sentences():
            print(f"- {sentence}")
