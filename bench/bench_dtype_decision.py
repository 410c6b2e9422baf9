"""float32 or bfloat16 on a CPU that multiplies bfloat16 natively? The quickstart's LoRA and QLoRA trained in
both, over several seeds, scored on the same held-out examples and compared pairwise (docs/benchmarks.md).

    python bench/bench_dtype_decision.py [--seeds 5] [--eval-examples 600] [--out runs/bench-dtype]

Each dtype is one `workbench compare --seeds N` into OUT/<dtype>; a seed already on disk is read back, so an
interrupted run picks up where it stopped. Prints the per-seed table, the verdicts over the seeds (each seed of
one dtype paired with the same seed of the other; runs crossed with examples, so the seeds' spread counts as well
as the examples', workbench.analysis.crossed) and the median training times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from workbench.analysis.verdicts import pooled
from workbench.core.config import preset_config
from workbench.experiments.seeds import seed_dir, seed_values, with_seed
from workbench.records.runs import Run

DTYPES = ("float32", "bfloat16")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--eval-examples", type=int, default=600)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="runs/bench-dtype")
    # QLoRA is left out by default: its bfloat16 4-bit compute took 300-350 s a step here against ~3 s in float32
    # (bitsandbytes' CPU kernels), so it is no candidate for a default whatever its scores (docs/benchmarks.md)
    p.add_argument("--variants", default="lora", help="comma list of trained variants: lora, qlora")
    p.add_argument("--anyway", action="store_true", help="run on a CPU without native bfloat16 too")
    a = p.parse_args(argv)
    from workbench.engine.models import native_bf16_cpu, pick_device

    # the decision is only about CPUs that multiply bfloat16 natively; elsewhere a bf16 matmul ran at 1 GFLOP/s
    # against float32's 105 here (docs/benchmarks.md), so the 5 seeds would take days and decide nothing.
    # A GPU multiplies bfloat16 natively, and its paired scores speak to bfloat16's accuracy all the same.
    on_cpu = pick_device().device.type == "cpu"
    if on_cpu and not native_bf16_cpu() and not a.anyway:
        print(
            "this CPU has no native bfloat16 (avx512_bf16 or AMX), where float32 stays the default anyway; "
            "run this on one that has it, or pass --anyway",
            file=sys.stderr,
        )
        return 2
    variants = tuple(v.strip() for v in a.variants.split(",") if v.strip())
    from workbench.experiments.comparison import run_compare

    configs = {
        dtype: preset_config(
            "quickstart",
            {
                "model": {"dtype": dtype},
                "train": {"steps": a.steps, "eval_examples": a.eval_examples},
                "variants": list(variants),
            },
        )
        for dtype in DTYPES
    }
    folders: dict[str, list[Path]] = {dtype: [] for dtype in DTYPES}
    # the dtypes alternate seed by seed, so whatever else the machine does falls on both alike
    for seed in seed_values(configs["float32"], a.seeds):
        for dtype in DTYPES:
            out = seed_dir(Path(a.out) / dtype, seed)
            folders[dtype].append(out)
            if Run(out).finished:
                continue
            started = time.perf_counter()
            run_compare(with_seed(configs[dtype], seed), out)
            print(f"{dtype} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print("| dtype | variant | seed | accuracy % (95% CI) | eval loss | forgetting | train s |")
    print("|---|---|---|---|---|---|---|")
    for dtype in DTYPES:
        for out in folders[dtype]:
            run = Run(out)
            seed = run.read()["config"]["train"]["seed"]
            for r in run.results():
                print(
                    f"| {dtype} | {r.name} | {seed} | {r.with_text('accuracy', 100, 1)} | {r.eval_loss:.4f} | "
                    f"{r.forgetting:.3f} | {r.train_seconds:.1f} |"
                )
    for v in variants:
        rows = {d: [next(r for r in Run(f).results() if r.name == v) for f in folders[d]] for d in DTYPES}
        acc = {d: statistics.fmean(r.accuracy for r in rows[d]) for d in DTYPES}
        secs = {d: statistics.median(r.train_seconds for r in rows[d]) for d in DTYPES}
        print(
            f"\n{v}: mean accuracy float32 {100 * acc['float32']:.1f}%, bfloat16 {100 * acc['bfloat16']:.1f}%; "
            f"median train s float32 {secs['float32']:.1f}, bfloat16 {secs['bfloat16']:.1f} "
            f"({secs['float32'] / secs['bfloat16']:.2f}x)"
        )
        found = pooled(
            f"{v} bfloat16",
            [Run(f).scores().get(v) for f in folders["bfloat16"]],
            f"{v} float32",
            [Run(f).scores().get(v) for f in folders["float32"]],
        )
        for sentence in found.sentences():
            print(f"- {sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
