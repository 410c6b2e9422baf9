"""A sweep shared by worker processes (`workbench worker`): two workers on one SQLite study finish every run
once, a killed worker's trial is retried by the other, and two workers share a study on a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from helpers import base_config, free_port
from optuna.trial import TrialState

from workbench.core.config import RunConfig
from workbench.experiments.study.space import StudyDef, open_study
from workbench.experiments.study.storage import default_storage, open_storage
from workbench.experiments.study.worker import Worker
from workbench.experiments.sweep import SweepGrid


def runs_finished(study) -> Counter:
    """How many finished trials each run has: 1 each when nothing was trained twice."""
    return Counter(t.user_attrs["run"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def worker_cmd(storage: str, study: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "worker", "--storage", storage, "--study", study, "--out", str(out)]


def start_workers(storage: str, study: str, out: Path, n: int, **env) -> list[subprocess.Popen]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return [
        subprocess.Popen(
            worker_cmd(storage, study, out),
            env={**full, "WORKBENCH_WORKER": f"w{i + 1}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]


def finish(procs, timeout: float = 240) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(out)
    return outs


def made_study(tmp_path, tiny_model_dir, tiny_jsonl, storage: str, ranks=(2, 4, 8), steps=2):
    d = base_config(tiny_model_dir, tiny_jsonl).to_dict()
    d["train"]["steps"] = steps
    base = RunConfig.from_dict(d)
    definition = StudyDef(base, 1, grid=SweepGrid(ranks=list(ranks), targets=["q_proj"], bits=[16]))
    return open_study(definition, storage, "shared"), definition


def test_a_killed_workers_trial_is_retried_and_finished_by_the_other(tiny_model_dir, tiny_jsonl, tmp_path):
    storage = default_storage(tmp_path / "sweep")
    # long enough a run to be killed in the middle of it
    study, _ = made_study(tmp_path, tiny_model_dir, tiny_jsonl, storage, ranks=(2, 4), steps=150)
    env = {"WORKBENCH_HEARTBEAT_S": "1"}  # silent for 3 s: taken for dead
    victim, survivor = start_workers(storage, "shared", tmp_path / "sweep", 2, **env)
    deadline = time.monotonic() + 120
    mid = None
    while time.monotonic() < deadline and mid is None:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == "w1" and "run" in t.user_attrs:
                mid = t
        time.sleep(0.2)
    assert mid is not None, "w1 never started a trial"
    time.sleep(1.0)  # into its training
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    out = finish([survivor])[0]
    trials = study.get_trials()
    assert study.trials[mid.number].state == TrialState.FAIL, out
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == mid.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE, out
    assert retried[0].user_attrs["worker"] == "w2" and retried[0].user_attrs["run"] == mid.user_attrs["run"]
    assert runs_finished(study) == Counter({"16bit-r2-q_proj": 1, "16bit-r4-q_proj": 1}), out
    assert "trial" in out and "16bit-r" in out


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own, as an unprivileged user, on a loopback port, in a temp folder; stopped after.
    Skipped without Debian's postgresql package (required under CI, where .ci/run installs it)."""
    bindir = postgres_bin()
    if bindir is None:
        reason = "PostgreSQL is not installed (Debian: apt-get install postgresql, or `make postgres`)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(reason)
        pytest.skip(reason)
    # not under pytest's folders: they are private to this user, and the server runs as another
    root = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = "postgres" if shutil.which("runuser") and _has_user("postgres") else "nobody"
        as_user = ["runuser", "-u", user, "--"]
        shutil.chown(root, user)
        root.chmod(0o700)
    data, port = root / "data", free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "workbench", "--auth=trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr or exc.stdout}")
    try:
        yield f"postgresql://workbench@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_workers_on_one_postgresql_study(postgres, tiny_model_dir, tiny_jsonl, tmp_path):
    study, _ = made_study(tmp_path, tiny_model_dir, tiny_jsonl, postgres, ranks=(1, 2))
    outs = finish(start_workers(postgres, "shared", tmp_path / "sweep", 2))
    assert runs_finished(study) == Counter({f"16bit-r{r}-q_proj": 1 for r in (1, 2)}), outs
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    # a worker of the same machine reads it back from the server alone: nothing left, it ends at once
    st = optuna.load_study(study_name="shared", storage=open_storage(postgres))
    assert Worker(st, StudyDef.from_dict(st.user_attrs["definition"]), tmp_path / "sweep").work() == []


def tiny_sweep(model, data, *more: str) -> list[str]:
    """`workbench sweep` on the tiny model and task at the quickest budget, with more options."""
    quick = "--device cpu --steps 2 --batch-size 4 --seq-len 32".split()
    return ["sweep", "--model", str(model), "--data", str(data), *quick, *more]


def test_two_workers_on_one_sqlite_study_finish_every_run_once(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    """`workbench sweep --workers 2`: two worker processes on the default SQLite study."""
    from workbench import cli

    out = tmp_path / "sweep"
    args = tiny_sweep(tiny_model_dir, tiny_jsonl, "--ranks", "1,2,4,8", "--target-sets", "q_proj", "--bits", "16")
    assert cli.main([*args, "--workers", "2", "--study", "two", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "[w1]" in captured.err and "[w2]" in captured.err, captured.err  # each worker's lines, marked
    assert "study 'two': 4 finished" in captured.out and "optuna-dashboard" in captured.out
    study = optuna.load_study(study_name="two", storage=default_storage(out))
    assert runs_finished(study) == Counter({f"16bit-r{r}-q_proj": 1 for r in (1, 2, 4, 8)}), captured.err
    workers = {t.user_attrs["worker"].rsplit("/", 1)[-1] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert workers == {"w1", "w2"}, captured.err  # both took trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL))
    log = (out / "trials.csv").read_text()
    assert log.count("complete") == 4 and (out / "sweep.csv").read_text().count("trained") == 4
