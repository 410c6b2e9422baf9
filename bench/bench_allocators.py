"""glibc, tcmalloc and mimalloc side by side in one run: training speed, peak memory and the estimator's error.

    .venv/bin/python bench/bench_allocators.py                      # the quickstart's LoRA and QLoRA, once each
    .venv/bin/python bench/bench_allocators.py --repeats 2 --tcmalloc /path/to/libtcmalloc_minimal.so.4

Each trial is `workbench compare --preset quickstart --variants lora,qlora` in a fresh process, started with
WORKBENCH_ALLOCATOR=system and LD_PRELOAD set here (none for glibc), so the allocator is the only difference;
the run's results.json says which allocator it found (workbench.machine.allocator.in_use) and is checked against the one
asked for. The allocators alternate (glibc, tcmalloc, mimalloc, glibc, ...) so a busy minute on a shared
machine slows them alike. tcmalloc: the system's (make tcmalloc), or --tcmalloc PATH (a libtcmalloc_minimal.so.4
unpacked from the Debian package with `apt-get download libtcmalloc-minimal4 && dpkg -x ...`, no root).
mimalloc: PyPI's cmeel-mimalloc wheel in this environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, child_env, machine, markdown_table, save  # noqa: E402

MiB = 2**20


def trial(name: str, lib: str | None, out: Path, threads: int = 1, more: tuple = ()) -> dict:
    import subprocess

    # one thread, as docs/estimator.md's grid: on a 2-core machine shared with other work, two OpenMP threads
    # spin-waiting on each other made steps ~20x slower (48 s a step, measured), whichever the allocator
    extra = {"WORKBENCH_ALLOCATOR": "system", "OMP_NUM_THREADS": str(threads), **({"LD_PRELOAD": lib} if lib else {})}
    env = child_env(False, extra)
    cmd = [sys.executable, "-m", "workbench.cli", "compare", "--preset", "quickstart", "--variants", "lora,qlora"]
    cmd += list(more)  # later options win: --variants lora --steps 8 for a shorter speed check
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: rc={proc.returncode}\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    if results["allocator"] != name:
        raise RuntimeError(f"asked for {name}, the run says it ran on {results['allocator']!r}")
    rows = {
        v["name"]: {
            "tok_s": v["tokens_per_second"],
            "train_s": v["train_seconds"],
            "peak_mib": v["peak_memory_bytes"] / MiB,
            "estimate_mib": v["estimated_peak_bytes"] / MiB,
            "error": v["estimated_peak_bytes"] / v["peak_memory_bytes"] - 1,
            "accuracy": v["accuracy"],
        }
        for v in results["variants"]
    }
    return {"allocator": name, "wall_s": time.perf_counter() - t0, "variants": rows}


def main() -> int:
    from workbench.machine import allocator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each trial (default 1)")
    ap.add_argument("--order", default="glibc,tcmalloc,mimalloc", help="the order of a round (default glibc first)")
    ap.add_argument("--name", default="allocators", help="bench/out/NAME.json and .md (default allocators)")
    ap.add_argument("compare_options", nargs="*", help="more `workbench compare` options, after --")
    ap.add_argument("--tcmalloc", default=allocator.tcmalloc_path(), help="libtcmalloc_minimal.so.4 to preload")
    args = ap.parse_args()
    found = {"glibc": None, "tcmalloc": args.tcmalloc, "mimalloc": allocator.mimalloc_path()}
    libs = {name: found[name] for name in args.order.split(",")}
    missing = [name for name, lib in libs.items() if name != "glibc" and not lib]
    if missing:
        sys.exit(f"not installed: {', '.join(missing)} (make setup installs mimalloc; --tcmalloc PATH)")
    trials = []
    with tempfile.TemporaryDirectory(prefix="workbench-bench-alloc-") as tmp:
        for i in range(args.repeats):
            for name, lib in libs.items():
                t = trial(name, lib, Path(tmp) / f"{name}-{i}", args.threads, tuple(args.compare_options))
                trials.append(t)
                print(
                    f"[{i + 1}/{args.repeats}] {name}: "
                    + "; ".join(
                        f"{v}: {r['tok_s']:.0f} tok/s, peak {r['peak_mib']:,.0f} MiB "
                        f"(estimate {r['estimate_mib']:,.0f}, {r['error']:+.1%})"
                        for v, r in t["variants"].items()
                    )
                    + f" ({t['wall_s']:.0f} s)",
                    flush=True,
                )
    head = ["allocator", "variant", "tokens/s", "train s", "peak MiB", "estimate MiB", "estimate's error"]
    rows = []
    for name in libs:
        mine = [t for t in trials if t["allocator"] == name]
        for variant in mine[0]["variants"]:
            per = [t["variants"][variant] for t in mine]
            rows.append(
                [
                    name,
                    variant,
                    " / ".join(f"{r['tok_s']:.0f}" for r in per),
                    " / ".join(f"{r['train_s']:.1f}" for r in per),
                    " / ".join(f"{r['peak_mib']:,.0f}" for r in per),
                    f"{statistics.median(r['estimate_mib'] for r in per):,.0f}",
                    " / ".join(f"{r['error']:+.1%}" for r in per),
                ]
            )
    table = markdown_table(head, rows)
    print(table)
    save(
        args.name,
        {
            "machine": machine(),
            "libs": libs,
            "command": "workbench compare --preset quickstart --variants lora,qlora",
            "threads": args.threads,
            "compare_options": args.compare_options,
            "trials": trials,
        },
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
