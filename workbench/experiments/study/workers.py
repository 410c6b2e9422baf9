"""Running a sweep's study: in this process (the Sweep tab, notebook 03, `workbench sweep`), or as N worker
processes on this machine (`--workers N`): one a visible GPU (round robin past the GPUs), or on a CPU N
processes that split the cores. Workers on other machines join the same study with the same command.

`workbench worker --storage URL --study NAME --out DIR` is one worker: it reads what to do from
the study itself (workbench/cli/worker.py). Ctrl-C (SIGINT) once: it starts no new trial; twice (or SIGTERM): its
run stops after the current step.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from workbench.core.events import Hooks
from workbench.experiments.study.reading import trial_point
from workbench.experiments.study.space import StudyDef, open_study
from workbench.experiments.study.storage import default_storage, open_storage
from workbench.experiments.study.worker import Worker
from workbench.experiments.sweep import PointResult, SweepPlan

POLL_S = 1.0


def run_study(
    definition: StudyDef,
    out_dir: str | Path,
    hooks: Hooks | None = None,
    *,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    finish: threading.Event | None = None,
    on_point: Callable[[PointResult], None] | None = None,
    fit_check: bool = True,
):
    """Work on a study (made if new) here (workers=1) or in `workers` processes on this machine, until nothing
    is left to start, or `finish` (no new trial) or the hooks' stop (the running trials also stop after their
    step). `hooks`: the stop, the status lines, and here (one worker) each trial's progress and training steps.
    Returns the study and the rows of the trials this process ran itself."""
    hooks, finish = hooks or Hooks(), finish or threading.Event()
    url = storage or default_storage(out_dir)
    st = open_study(definition, url, study)
    if workers == 1:
        worker = Worker(
            st, definition, Path(out_dir), hooks=hooks, finish=finish, fit_check=fit_check, on_point=on_point
        )
        return st, worker.work()
    run_workers(
        url, st.study_name, Path(out_dir), workers, hooks, finish=finish, on_point=on_point, fit_check=fit_check
    )
    return st, []


def run_sweep(sweep: SweepPlan, hooks: Hooks | None = None, **kw) -> list[PointResult]:
    """Train a plan's grid as its study's trials (`hooks` and keyword arguments as run_study's). A point on disk
    is read back; a point that fails is recorded with its reason and the others go on. on_point hears of every
    point once: as it finishes, or at the end (read back from the study, or not run). Returns one row per
    planned point, in plan order ("not run" for the points nobody reached)."""
    began = datetime.now()
    told: set[str] = set()
    on_point = kw.pop("on_point", None)

    def tell(row: PointResult) -> None:
        told.add(row.label)
        if on_point is not None:
            on_point(row)

    definition = StudyDef(sweep.base, sweep.seeds, grid=sweep.grid)
    st, done = run_study(definition, sweep.out_dir, hooks, on_point=tell, **kw)
    rows = in_plan_order(sweep, st, {p.label: p for p in done}, began)
    for row in rows:  # every point is told once: those read back from the study, and those nobody reached
        if row.label not in told:
            tell(row)
    return rows


def in_plan_order(sweep: SweepPlan, study, mine: dict[str, PointResult], began: datetime) -> list[PointResult]:
    """One row per planned point: what this process did, else what the study says another worker (or an earlier
    sweep) did: "loaded" for a run finished before this sweep began."""
    from optuna.trial import TrialState

    by_run: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        by_run.setdefault(t.user_attrs.get("run"), []).append(t)
    out = []
    for p in sweep.points:
        name = p.out.name
        if name in mine:
            out.append(mine[name])
            continue
        trials = by_run.get(name, [])
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = [t for t in trials if t.state == TrialState.FAIL and t.datetime_start and t.datetime_start >= began]
        row = trial_point(done[0] if done else failed[-1]) if (done or failed) else None
        if row is None:
            out.append(PointResult(p.point, p.out, "not run", seed=p.seed))
            continue
        if done and done[0].datetime_complete < began:
            row.status = "loaded"
        out.append(row)
    return out


# --------------------------------------------------------------------------- many workers on this machine


def worker_env(i: int, n: int, env: dict | None = None) -> dict:
    """Worker i of n's environment: its GPU (CUDA_VISIBLE_DEVICES, round robin) or its share of the CPU's cores,
    and the fast allocator every workbench process starts with."""
    from workbench.machine import allocator

    env = dict(os.environ if env is None else env)
    gpus = visible_gpus(env)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    else:
        threads = str(max(1, (os.cpu_count() or 1) // n))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    env["WORKBENCH_WORKER"] = f"{socket.gethostname()}/w{i + 1}"
    return allocator.preload_env(env)


def visible_gpus(env: dict) -> list[str]:
    """The CUDA devices this machine shows (by CUDA_VISIBLE_DEVICES where set), as the names to hand on."""
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def run_workers(
    storage: str,
    study: str,
    out_dir: Path,
    n: int,
    hooks: Hooks | None = None,
    *,
    finish: threading.Event,
    on_point: Callable[[PointResult], None] | None = None,
    fit_check: bool = True,
) -> list[int]:
    """n worker processes on one study, their output passed to the hooks' status line by line ("[w2] ..."), each
    trial any of them finishes passed to on_point. finish (then the hooks' stop) is handed on to them as SIGINT.
    Returns their exit codes."""
    import optuna

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
        raise ValueError(f"workers must be a whole number from 1 to 64; got {n!r}")
    hooks = hooks or Hooks()
    cmd = [
        sys.executable,
        "-m",
        "workbench.cli",
        "worker",
        "--storage",
        storage,
        "--study",
        study,
        "--out",
        str(out_dir),
    ]
    if not fit_check:
        cmd.append("--skip-fit-check")
    procs = [
        subprocess.Popen(
            cmd,
            env=worker_env(i, n),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the workers once, from here
        )
        for i in range(n)
    ]

    def relay(i: int, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            line = settled_line(raw.decode("utf-8", errors="replace"))
            if line:
                hooks.status(f"[w{i + 1}] {line}")

    relays = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for r in relays:
        r.start()
    st = optuna.load_study(study_name=study, storage=open_storage(storage))
    seen: set[int] = set()
    told = 0  # SIGINTs handed on: 1 after finish, 2 after stop
    began = datetime.now()
    while True:
        alive = [p for p in procs if p.poll() is None]
        wanted = 2 if hooks.stop.is_set() else 1 if finish.is_set() else 0
        while told < wanted:
            told += 1
            for p in alive:
                p.send_signal(signal.SIGINT)
        _report(st, seen, began, on_point)
        if not alive:
            break
        time.sleep(POLL_S)
    for r in relays:
        r.join(timeout=5)
    _report(st, seen, began, on_point)
    return [p.returncode for p in procs]


def settled_line(raw: str) -> str:
    """What a worker's output line says once it has settled: a progress bar redraws itself with carriage returns
    many times a second, and N workers' redraws interleaved in one log are unreadable, so only its last state
    (written when the bar ends) is passed on."""
    return raw.rstrip("\r\n").rsplit("\r", 1)[-1].strip()


def _report(study, seen: set[int], began: datetime, on_point) -> None:
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.number in seen or not t.datetime_start or t.datetime_start < began:
            continue
        seen.add(t.number)
        row = trial_point(t)
        if row is not None and on_point is not None:
            on_point(row)
