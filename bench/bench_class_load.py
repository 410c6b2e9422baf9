"""A class presses Start at once: N quickstart runs started at the same moment into one shared runs folder.

    .venv/bin/python bench/bench_class_load.py [--runs 12] [--steps 3]

Each run is `workbench compare --preset quickstart --variants lora,qlora --steps 3` in a process of its own
(its own WORKBENCH_USER), all of them sharing one WORKBENCH_HOME and so one admission ledger, as the kernels of a
class on one machine do. Then the same N runs one after another, in the same benchmark, for the time they take
without sharing. Reports: how many finished, how many were killed (a negative exit status: the kernel's OOM
killer sends SIGKILL), the order they were admitted in against the order they queued, the most memory in use
on the machine, and both wall times.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_env, machine, markdown_table, save  # noqa: E402


def command(out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "workbench.cli",
        "compare",
        "--preset",
        "quickstart",
        "--variants",
        "lora,qlora",
        "--steps",
        str(steps),
        "--out",
        str(out),
    ]


class MachineMemory:
    """The most memory in use on the machine (total less available), sampled every half second."""

    def __init__(self):
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            vm = psutil.virtual_memory()
            self.most = max(self.most, vm.total - vm.available)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def at_once(root: Path, home: Path, n: int, steps: int) -> dict:
    """n runs started together; what became of each, and the ledger's order."""
    procs = []
    t0 = time.perf_counter()
    with MachineMemory() as mem:
        for i in range(n):
            env = child_env(True, {"WORKBENCH_HOME": str(home), "WORKBENCH_USER": f"student-{i + 1:02d}"})
            log = open(root / f"student-{i + 1:02d}.log", "w")  # noqa: SIM115 - closed below
            out = root / f"student-{i + 1:02d}"
            procs.append((subprocess.Popen(command(out, steps), env=env, stdout=log, stderr=log), log))
        codes = []
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
    wall = time.perf_counter() - t0
    with sqlite3.connect(home / "admission.sqlite") as db:
        rows = db.execute("SELECT id, label, queued, admitted, released FROM runs ORDER BY id").fetchall()
    admitted = [label for _, label, *_ in sorted(rows, key=lambda r: r[3] or float("inf"))]
    queued = [label for _, label, *_ in rows]
    waits = [adm - q for _, _, q, adm, _ in rows if adm is not None]
    said = []
    for i, code in enumerate(codes):
        if code != 0:
            lines = (root / f"student-{i + 1:02d}.log").read_text(errors="replace").strip().splitlines()
            said.append(f"student-{i + 1:02d}: exit {code}: {lines[-1] if lines else ''}")
    return {
        "wall_s": wall,
        "finished": sum(c == 0 for c in codes),
        "killed": sum(c < 0 for c in codes),
        "failed": said,
        "fair": admitted == queued,
        "longest_wait_s": max(waits, default=0.0),
        "most_in_use_bytes": mem.most,
        "waited_in_line": sum(
            "waiting for its turn" in (root / f"student-{i + 1:02d}.log").read_text() for i in range(n)
        ),
    }


def one_after_another(root: Path, home: Path, n: int, steps: int) -> dict:
    t0 = time.perf_counter()
    codes = []
    with MachineMemory() as mem:
        for i in range(n):
            env = child_env(True, {"WORKBENCH_HOME": str(home), "WORKBENCH_USER": f"alone-{i + 1:02d}"})
            out = subprocess.run(command(root / f"alone-{i + 1:02d}", steps), env=env, capture_output=True)
            codes.append(out.returncode)
    return {"wall_s": time.perf_counter() - t0, "finished": sum(c == 0 for c in codes), "most_in_use_bytes": mem.most}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="workbench-class-load-") as tmp:
        root, home = Path(tmp) / "runs", Path(tmp) / "home"
        root.mkdir()
        # the embedded model converted once before the clock starts, as a class machine has it ready
        subprocess.run(
            [sys.executable, "-m", "workbench.cli", "model-path"],
            env=child_env(True, {"WORKBENCH_HOME": str(home)}),
            check=True,
            capture_output=True,
        )
        together = at_once(root, home, a.runs, a.steps)
        print(f"  at once: {together['wall_s']:.0f} s, {together['finished']} of {a.runs} finished", flush=True)
        alone = one_after_another(root, home, a.runs, a.steps)
        print(f"  one after another: {alone['wall_s']:.0f} s", flush=True)
    gib = 2**30
    rows = [
        [
            f"{a.runs} at once",
            f"{together['wall_s']:.0f}",
            f"{together['finished']} of {a.runs}",
            together["killed"],
            "yes" if together["fair"] else "no",
            f"{together['most_in_use_bytes'] / gib:.1f}",
        ],
        [
            f"{a.runs} one after another",
            f"{alone['wall_s']:.0f}",
            f"{alone['finished']} of {a.runs}",
            0,
            "",
            f"{alone['most_in_use_bytes'] / gib:.1f}",
        ],
    ]
    table = (
        f"`workbench compare --preset quickstart --variants lora,qlora --steps {a.steps}`, {a.runs} runs, one "
        f"shared folder; {together['waited_in_line']} runs said they waited in line, the longest "
        f"{together['longest_wait_s']:.0f} s; at once / one after another: "
        f"{together['wall_s'] / alone['wall_s']:.2f}.\n\n"
        + markdown_table(
            ["runs", "wall s", "finished", "killed", "admitted first come first served", "GiB in use at most"], rows
        )
        + ("\n\nFailed: " + "; ".join(together["failed"]) if together["failed"] else "")
    )
    print(table)
    save("class_load", {"machine": machine(), "at_once": together, "one_after_another": alone, "runs": a.runs}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
