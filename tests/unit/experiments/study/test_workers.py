"""Sweeps as Optuna studies, on the tiny model: a grid through the grid sampler (each run once, read back after),
a search that never loads a setting over its memory budget, seeds as repeated trials, and real worker processes
on one study: two on SQLite, two on a real PostgreSQL server, and a worker SIGKILLed mid-trial whose trial the
other finishes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_sweep import base_config

from workbench.core.config import RunConfig
from workbench.experiments import comparison as compare
from workbench.experiments.study.reading import finished_points, trials_frame
from workbench.experiments.study.space import SearchSpace, StudyDef, open_study
from workbench.experiments.study.storage import dashboard_command, default_storage, open_storage
from workbench.experiments.study.worker import Worker
from workbench.experiments.study.workers import run_study, run_sweep, settled_line
from workbench.experiments.sweep import SweepGrid, plan


def runs_finished(study) -> Counter:
    """How many finished trials each run has: 1 each when nothing was trained twice."""
    return Counter(t.user_attrs["run"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_a_grid_is_a_study_each_run_once_and_read_back_after(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    grid = SweepGrid(ranks=[2, 4], targets=["q_proj,v_proj"], bits=[16])
    base = base_config(tiny_model_dir, tiny_jsonl)
    seen = []
    first = run_sweep(plan(grid, base, tmp_path / "sweep", seeds=2), on_point=seen.append)
    assert [p.label for p in first] == [
        "16bit-r2-q_proj+v_proj",
        "16bit-r2-q_proj+v_proj-seed1",
        "16bit-r4-q_proj+v_proj",
        "16bit-r4-q_proj+v_proj-seed1",
    ]  # plan order, whatever order the grid sampler took them in
    assert [p.status for p in first] == ["trained"] * 4 and sorted(p.label for p in seen) == sorted(
        p.label for p in first
    )
    assert (tmp_path / "sweep" / "study.sqlite3").is_file()  # the default storage: in the sweep's folder

    study = optuna.load_study(
        study_name=StudyDef(base, 2, grid=grid).default_name(), storage=default_storage(tmp_path / "sweep")
    )
    assert runs_finished(study) == Counter({p.label: 1 for p in first})
    log = trials_frame(study)
    assert set(log["state"]) == {"complete"} and set(log["person"]) == {log["person"][0]} and log["worker"].all()
    assert sorted(log["seed"]) == [0, 0, 1, 1] and (log["cost"] > 0).all()  # peak MiB, the second objective
    assert {tuple(t.values) for t in study.trials} == {
        (p.result.accuracy, p.result.peak_memory_bytes / 2**20) for p in first
    }

    # the same grid again: its study has every run, so nothing trains and every row is read back
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("a finished run was retrained"))
    back = run_sweep(plan(grid, base, tmp_path / "sweep", seeds=2))
    assert [p.status for p in back] == ["loaded"] * 4 and len(study.trials) == 4
    assert [p.result.eval_loss for p in back] == [p.result.eval_loss for p in first]


def test_an_old_sweep_folder_is_read_back_into_a_new_study(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    grid = SweepGrid(ranks=[2], targets=["q_proj"], bits=[16])
    base = base_config(tiny_model_dir, tiny_jsonl)
    run_sweep(plan(grid, base, tmp_path / "sweep"))
    (tmp_path / "sweep" / "study.sqlite3").unlink()  # a sweep from before studies: run folders only
    monkeypatch.setattr(compare, "run_compare", lambda *a, **k: pytest.fail("an old point was retrained"))
    again = run_sweep(plan(grid, base, tmp_path / "sweep"))
    assert [p.status for p in again] == ["loaded"] and again[0].result.accuracy is not None


def test_another_sweep_under_a_taken_study_name_is_refused(tiny_model_dir, tiny_jsonl, tmp_path):
    base = base_config(tiny_model_dir, tiny_jsonl)
    storage = default_storage(tmp_path)
    open_study(StudyDef(base, 1, grid=SweepGrid(ranks=[2], targets=["q_proj"], bits=[16])), storage, "mine")
    with pytest.raises(ValueError, match="'mine' .* is another sweep"):
        open_study(StudyDef(base, 1, grid=SweepGrid(ranks=[4], targets=["q_proj"], bits=[16])), storage, "mine")


def test_a_search_never_loads_a_setting_over_its_budget_and_repeats_seeds(tiny_model_dir, tiny_jsonl, tmp_path):
    base = base_config(tiny_model_dir, tiny_jsonl)
    space = SearchSpace(trials=3, ranks=(1, 8), targets=["q_proj,v_proj"], bits=[16], max_memory_mib=1e6)
    st, done = run_study(StudyDef(base, 2, space=space), tmp_path / "search")
    assert {p.status for p in done} == {"trained"} and len(done) == 6  # 3 settings x 2 seeds
    by_setting = Counter(p.label.removesuffix("-seed1") for p in done)
    assert len(by_setting) == 3 and set(by_setting.values()) == {2}
    assert all(1 <= p.point.rank <= 8 and p.point.lr is not None and p.point.alpha is not None for p in done)
    assert all(p.result.rank == p.point.rank for p in done)
    assert len(finished_points(st)) == 6

    # a budget below every estimate: no setting loads, each trial is pruned with the reason, and the search ends
    tight = SearchSpace(trials=2, ranks=(1, 8), targets=["q_proj,v_proj"], bits=[16], max_memory_mib=1)
    loads = []
    original = compare.run_compare
    try:
        compare.run_compare = lambda *a, **k: loads.append(a) or pytest.fail("a setting over budget was loaded")
        st, done = run_study(StudyDef(base, 1, space=tight), tmp_path / "tight")
    finally:
        compare.run_compare = original
    assert not done and not loads and st.trials
    assert all(t.state == TrialState.PRUNED and "will not fit" in t.user_attrs["status"] for t in st.trials)
    assert all(t.user_attrs["estimated_peak_mib"] > 1 for t in st.trials)


def test_bad_search_ranges_are_refused_in_one_line():
    for bad, field in (
        ({"trials": 0}, "trials"),
        ({"ranks": (0, 8)}, "ranks"),
        ({"ranks": (8, 2)}, "ranks"),
        ({"lr": (1e-3, 1e-4)}, "lr"),
        ({"dropout": (0.0, 1.0)}, "dropout"),
        ({"bits": [3]}, "bits"),
        ({"minimize": "loss"}, "minimize"),
        ({"max_memory_mib": -5}, "max memory"),
    ):
        with pytest.raises(ValueError, match=field):
            SearchSpace(**bad)


def test_storages_open_and_bad_ones_say_what_to_do(tmp_path):
    assert open_storage(f"journal:{tmp_path / 'j' / 'study.log'}") is not None
    assert dashboard_command(f"journal:{tmp_path}/s.log") == f"optuna-dashboard {tmp_path}/s.log"
    assert "***" in dashboard_command("postgresql://me:secret@db:5432/sweeps")
    with pytest.raises(ValueError, match="cannot open .*me:\\*\\*\\*@127.0.0.1.*check the URL"):
        open_storage("postgresql://me:secret@127.0.0.1:1/nothing")  # nothing listens on port 1
    with pytest.raises(ValueError, match="needs the Python package"):
        open_storage("mysql://me@127.0.0.1/nothing")


# ---------------------------------------------------------------------------- worker processes


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


# ---------------------------------------------------------------------------- a real PostgreSQL server


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_the_cli_runs_a_search(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "search"
    args = tiny_sweep(tiny_model_dir, tiny_jsonl, "--search", "2", "--ranks", "1,4", "--target-sets", "q_proj")
    assert cli.main([*args, "--bits", "16", "--lr-range", "1e-3,1e-2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "search: 2 settings, score up and memory down; rank 1-4 (log)" in captured.out, captured.out
    assert ": 2 finished" in captured.out and "optuna-dashboard" in captured.out
    table = (out / "sweep.csv").read_text()
    assert table.count("trained") == 2 and "lr" in table.splitlines()[0]  # a search's columns: alpha, lr, dropout
    assert (out / "trials.csv").read_text().count("complete") == 2 and (out / "sweep.png").is_file()


def test_a_workers_progress_bars_reach_the_log_once_settled_not_every_redraw():
    import io

    from tqdm import tqdm

    out = io.StringIO()
    for _ in tqdm(range(50), desc="training lora", file=out, mininterval=0, miniters=1):
        pass
    print("[workbench] trial 3: finished", file=out)
    # read the way the relay reads a worker's pipe: bytes, split at newlines only
    lines = [settled_line(raw.decode()) for raw in io.BytesIO(out.getvalue().encode())]
    # tqdm drew the bar 51 times on one line; the log gets its last state and the plain line after it
    assert out.getvalue().count("\r") > 40
    assert len(lines) == 2 and lines[0].startswith("training lora: 100%") and "50/50" in lines[0]
    assert lines[1] == "[workbench] trial 3: finished"
