"""Sweeps as studies, measured (docs/benchmarks.md): the README's 12-point grid with 1 and with 2 CPU workers
(the wall time of each and the study's trial log), then a 16-trial search over the same choices against the
grid: which of its settings land on or beyond the grid's frontier, with each accuracy's 95% interval.

    python bench/bench_study.py [--out runs/bench-study] [--parts grid1,grid2,search] [--trials 16]

Each part is one `workbench sweep` command into its own folder (so each trains from nothing; a part already
on disk is read back in seconds, so remove its folder to measure it again). Run it on a quiet machine: the
parts are timed one after another.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

GRID = ["--ranks", "2,16", "--target-sets", "q_proj,v_proj;all-linear", "--bits", "16,4", "--quant-types", "nf4,fp4"]
COMMON = ["--preset", "cpu-demo", "--task", "dates"]


def sweep(args: list[str], out: Path) -> float:
    """One `workbench sweep` in a process of its own; its wall time in seconds."""
    from workbench.machine import allocator

    cmd = [sys.executable, "-m", "workbench.cli", "sweep", *COMMON, *args, "--out", str(out)]
    print("$ workbench sweep " + " ".join(cmd[4:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=allocator.preload_env(dict(os.environ)))
    return time.perf_counter() - started


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def trial_log(out: Path) -> None:
    log = rows(out / "trials.csv")
    print(f"\n{out.name}: trial log ({len(log)} trials)\n")
    print("| trial | state | run | worker | started | seconds | score | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for t in log:
        print(
            f"| {t['trial']} | {t['state']} | {t['run']} | {t['worker'].rsplit('/', 1)[-1]} | {t['started']} | "
            f"{t['seconds']} | {t['score']} | {t['cost']} |"
        )


def frontier_against(grid_out: Path, search_out: Path) -> None:
    """Each search setting against the grid's frontier: beyond it (no grid point has both less memory and a
    better accuracy), and its accuracy interval beside the grid point nearest in memory."""
    from workbench.records.results import pareto_front

    def points(out: Path):
        return [
            (r["point"], float(r["peak MiB"]), float(r["accuracy %"]), r["accuracy 95% CI"])
            for r in rows(out / "sweep.csv")
            if r["accuracy %"]
        ]

    grid, search = points(grid_out), points(search_out)
    front = [grid[i] for i in pareto_front([(m, a) for _, m, a, _ in grid])]
    print("\ngrid frontier: " + "; ".join(f"{n} {a:.1f}% ({ci}) at {m:,.0f} MiB" for n, m, a, ci in front))
    head = "| search setting | peak MiB | accuracy % (95% CI) | beyond the grid's frontier | nearest frontier point |"
    print(f"\n{head}")
    print("|---|---|---|---|---|")
    for name, mib, acc, ci in sorted(search, key=lambda p: p[1]):
        beaten = any(m <= mib and a >= acc and (m < mib or a > acc) for _, m, a, _ in grid)
        near = min(front, key=lambda p: abs(p[1] - mib))
        print(
            f"| {name} | {mib:,.0f} | {acc:.1f} ({ci}) | {'no' if beaten else 'yes'} | "
            f"{near[0]} {near[2]:.1f}% ({near[3]}) at {near[1]:,.0f} MiB |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-study")
    p.add_argument("--parts", default="grid1,grid2,search")
    p.add_argument("--trials", type=int, default=16)
    a = p.parse_args(argv)
    out, parts = Path(a.out), [x.strip() for x in a.parts.split(",") if x.strip()]
    times = {}
    if "grid1" in parts:
        times["grid, 1 worker"] = sweep([*GRID, "--workers", "1"], out / "grid-1w")
    if "grid2" in parts:
        times["grid, 2 workers"] = sweep([*GRID, "--workers", "2"], out / "grid-2w")
    if "search" in parts:
        space = ["--search", str(a.trials), "--bits", "16,4", "--quant-types", "nf4,fp4", "--ranks", "1,64"]
        times[f"search, {a.trials} trials, 1 worker"] = sweep(
            [*space, "--target-sets", "q_proj,v_proj;all-linear"], out / "search"
        )
    print("\n| part | wall time |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds / 60:.1f} min ({seconds:.0f} s) |")
    if "grid, 1 worker" in times and "grid, 2 workers" in times:
        print(f"\n2 workers took {times['grid, 2 workers'] / times['grid, 1 worker']:.2f} of the time of 1")
    for name in ("grid-1w", "grid-2w", "search"):
        if (out / name / "trials.csv").is_file():
            trial_log(out / name)
    grid = next((out / n for n in ("grid-1w", "grid-2w") if (out / n / "sweep.csv").is_file()), None)
    if grid is not None and (out / "search" / "sweep.csv").is_file():
        frontier_against(grid, out / "search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
