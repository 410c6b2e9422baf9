"""`workbench preview`: examples exactly as the model will see them (chat template, answer-only labels), with
statistics of the lengths."""

from __future__ import annotations

import argparse

from workbench.cli.options import add_model, help_for
from workbench.core.config import DEFAULT_MODEL, TrainSettings


def add_parser(sub) -> None:
    v = sub.add_parser("preview", help="show examples exactly as the model will see them, with statistics")
    add_model(v, DEFAULT_MODEL)
    src = v.add_mutually_exclusive_group()
    src.add_argument("--task", help="Built-in task (default sentiment).")
    src.add_argument("--data", help="Your own data file (same formats as compare).")
    v.add_argument("--columns", help="Map your column names: prompt=question,answer=label.")
    v.add_argument("--eval-data", help="A separate file to evaluate on.")
    v.add_argument("--eval-fraction", type=float, default=0.15, help="Share of --data held out (default 0.15).")
    v.add_argument("--skip-bad-rows", action="store_true", help="Skip unusable rows and report how many.")
    v.add_argument("--seq-len", type=int, default=128, help=help_for(TrainSettings, "seq_len"))
    v.add_argument("-n", "--examples", type=int, default=3, help="How many examples to show.")


def run(a: argparse.Namespace) -> int:
    from workbench.core.config import RunConfig
    from workbench.data import preview, task_for
    from workbench.engine.models import load_tokenizer
    from workbench.engine.resolve import resolve_model

    cfg = RunConfig(
        task=None if a.data else (a.task or "sentiment"),
        data=a.data,
        eval_data=a.eval_data,
        eval_fraction=a.eval_fraction,
        columns=a.columns,
        skip_bad_rows=a.skip_bad_rows,
        train=TrainSettings(seq_len=a.seq_len),
    )  # validates them all
    if a.examples < 0:
        raise ValueError(f"examples must be at least 0; got {a.examples}")
    task = task_for(cfg)
    tokenizer = load_tokenizer(resolve_model(getattr(a, "model.name")))
    print(preview(tokenizer, task, seq_len=a.seq_len, n=a.examples).to_text())
    return 0
