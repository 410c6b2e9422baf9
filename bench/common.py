"""What every benchmark shares: one fresh process per trial, both sides alternating, medians and ratios.

A trial is a child process that prints one JSON line. Running both sides A, B, A, B, ... in the same run
and comparing medians keeps the ratio honest on a noisy machine: a slow minute slows both sides.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def child_env(workbench: bool, extra: dict | None = None) -> dict:
    """The environment of a trial: as the workbench starts its processes (the fast allocator preloaded when installed),
    or as a user's own script would run (no preload), offline either way."""
    from workbench.machine.allocator import preload_env

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "_WORKBENCH_REEXEC")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT), **(extra or {})})
    return preload_env(env) if workbench else env


def run_child(args: list[str], env: dict, timeout: float = 1800) -> dict:
    """python ARGS in a fresh process; its last JSON line."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"trial failed: {' '.join(args)} (rc={proc.returncode})\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


@dataclass
class Side:
    """One side of a comparison: how to run a trial, and which number of its result counts."""

    name: str
    args: list[str]
    env: dict
    metric: str
    trials: list[dict] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [t[self.metric] for t in self.trials]

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def alternate(sides: list[Side], repeats: int, log=print) -> list[Side]:
    """Run every side `repeats` times, interleaved (A B A B ...), so both see the same machine."""
    for i in range(repeats):
        for side in sides:
            t0 = time.perf_counter()
            side.trials.append(run_child(side.args, side.env))
            log(
                f"  [{i + 1}/{repeats}] {side.name}: {side.metric} {side.trials[-1][side.metric]:.4g} "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    return sides


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    from workbench.engine import models
    from workbench.machine import allocator

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "native_bf16": models.native_bf16_cpu(),
        "tcmalloc": allocator.tcmalloc_path() or "not installed",
        "mimalloc": allocator.mimalloc_path() or "not installed",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
    }


def markdown_table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save(name: str, result: dict, table: str) -> None:
    """bench/out/NAME.json and NAME.md, written whole (workbench.core.files)."""
    from workbench.core.files import write_json, write_text

    write_json(OUT / f"{name}.json", result)
    write_text(OUT / f"{name}.md", table + "\n")
