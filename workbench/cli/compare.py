"""`workbench compare`: train and compare base, LoRA and QLoRA on one task (or continue a run), then print the
results, the verdicts and where they are."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli.options import add_run_options, folder, overrides
from workbench.cli.output import print_eval_plan, print_results
from workbench.cli.stopping import watched


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="train and compare base, LoRA and QLoRA on one task")
    add_run_options(c, sweep=False)
    c.add_argument(
        "--out",
        type=folder,
        default="runs/latest",
        help="Folder for results, plots and adapters (default runs/latest).",
    )
    c.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="Train each variant this many times, with the seed and the ones after it, on the same eval examples "
        "(into OUT/seed-N): the results give each score's mean, its spread across seeds and its interval, and "
        "the comparisons pool every seed's examples (default 1).",
    )
    c.add_argument(
        "--resume",
        metavar="RUN",
        help="Continue a stopped or finished run folder up to --steps steps in all (default: the steps it asked "
        "for), from its saved adapters and optimizer state; the other options are the run's own.",
    )


def print_init_plan(cfg) -> None:
    """What the adapter's init costs before the first step, said with the plan (nothing for gaussian)."""
    from workbench.engine.estimator import init_plan_line
    from workbench.engine.models import pick_device

    line = init_plan_line(cfg, pick_device(cfg.model.device, cfg.model.dtype).type)
    if line:  # a plan line, as the eval plan's: on stderr, so stdout holds only the results
        print(f"[workbench] {line}", file=sys.stderr)


def run(a: argparse.Namespace) -> int:
    from workbench.core.config import preset_config
    from workbench.experiments.comparison import continue_run
    from workbench.experiments.seeds import check_seeds, run_seeds, seed_dir, seed_values

    check_seeds(a.seeds)
    if a.resume:
        if a.seeds != 1:
            raise ValueError("seeds: --resume continues one run; give --seeds with a new run, not with --resume")
        a.out = a.resume
    cfg = None if a.resume else preset_config(a.preset, overrides(a))
    if cfg is not None:
        from workbench.core.files import check_writable_dir

        seed_values(cfg, a.seeds)  # the last seed in range, before anything loads
        check_writable_dir(Path(a.out))  # a folder that cannot be made is the one thing said, not after a plan
        print_eval_plan(cfg, Path(a.out).parent, a.seeds)
        print_init_plan(cfg)
    with watched("after this step") as hooks:
        kw = {"fit_check": not a.skip_fit_check, "command": a.command_line}
        if a.resume:
            results = [continue_run(a.resume, getattr(a, "train.steps"), hooks=hooks, **kw)]
        else:
            results = run_seeds(cfg, a.out, a.seeds, hooks, **kw)
    folders = [Path(a.out)] if a.seeds == 1 else [seed_dir(Path(a.out), s) for s in seed_values(cfg, a.seeds)]
    print_results(results, folders[: len(results)], Path(a.out), verdicts=True)
    return 0
