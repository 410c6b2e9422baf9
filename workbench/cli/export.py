"""`workbench export`: a run's adapter with a model card, or the model merged into its base (--merge)."""

from __future__ import annotations

import argparse

from workbench.cli.stopping import watched


def add_parser(sub) -> None:
    x = sub.add_parser("export", help="write a run's adapter with a model card, or the model merged (--merge)")
    x.add_argument("run", help="The run folder (from compare, a sweep point or the Train tab).")
    x.add_argument("--variant", default="lora", help="Which adapter: lora, lora8 or qlora (default lora).")
    x.add_argument(
        "--merge",
        action="store_true",
        help="Merge the adapter into its base (dequantized for 8 and 4 bits) and write a model folder that plain "
        "transformers loads; the gap to the adapter model is measured on the run's eval examples.",
    )
    x.add_argument("--dtype", default="bfloat16", help="Dtype of a merged model: bfloat16 (default), float16, float32.")
    x.add_argument("--out", required=True, help="A new folder to write to.")


def run(a: argparse.Namespace) -> int:
    from workbench.engine.export import export

    with watched("the export") as hooks:
        done = export(a.run, a.variant, a.out, merge=a.merge, dtype=a.dtype, status=hooks.status)
    print(f"wrote {done.out.resolve()}" + (f" (merged, {done.dtype})" if done.merged else " (adapter and model card)"))
    if done.gap is not None:
        print(f"merge gap: {done.gap.describe()}")
    return 0
