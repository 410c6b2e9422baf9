"""`workbench train`: one experiment (one variant, its settings in a YAML file); under accelerate or torchrun
every process runs it, and rank 0 alone prints and writes."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli.options import folder
from workbench.cli.output import print_results
from workbench.cli.stopping import watched


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train one experiment (one variant, its settings in a YAML file); runs under accelerate/torchrun"
    )
    t.add_argument("config", help="The experiment's YAML file (the Train tab's Export run writes one).")
    t.add_argument(
        "--out", type=folder, help="Folder for the run (default: beside the config, named after it, without .yaml)."
    )
    t.add_argument(
        "--skip-fit-check",
        action="store_true",
        help="Run even when the estimated peak is more than the free memory (by default it is refused).",
    )


def run(a: argparse.Namespace) -> int:
    from workbench.core.files import check_writable_dir
    from workbench.experiments.experiment import check_launch, from_yaml, run_experiment, trained_variant
    from workbench.machine.distributed import World, join

    cfg = from_yaml(a.config)
    trained_variant(cfg)  # before any process group opens: every process refuses the same config alike
    check_launch()
    out = Path(a.out or str(Path(a.config).with_suffix("")))
    check_writable_dir(out)  # before a process group opens or any data is read
    world = World.from_env()
    # every process stops on Ctrl-C; run_experiment quiets the hooks of all but rank 0 (one set of bars and lines)
    with join(world, cfg.model.device) as backend, watched("after this step") as hooks:
        result = run_experiment(
            cfg, out, hooks, fit_check=not a.skip_fit_check, command=a.command_line, backend=backend
        )
    if result is None:
        return 0
    print_results([result], [out], out, batch=result.describe_batch())
    return 0
