"""`make lab`, the README's first command, started the way the README says: the server answers, as root
(where JupyterLab refuses to start without --allow-root) and, by the Makefile's own logic, as anyone else."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
import urllib.request

from helpers import REPO, free_port


def test_make_lab_serves_the_quickstart(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}  # a headless box
    env.update(JUPYTER_PORT=str(port), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), MAKEFLAGS="")
    log = tmp_path / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "lab"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None:
            assert proc.poll() is None, f"make lab exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no server URL within 120 s:\n{log.read_text()}"
            m = re.search(rf"(http://(?:127\.0\.0\.1|localhost):{port}/lab\S*\?token=(\w+))", log.read_text())
            url = m and m.group(1)
            time.sleep(0.5)
        token = m.group(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=10) as r:
            assert r.status == 200 and "started" in json.loads(r.read())
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/contents/01_quickstart.ipynb?token={token}", timeout=10
        ) as r:
            assert json.loads(r.read())["name"] == "01_quickstart.ipynb"  # the notebook folder it opens
        text = log.read_text()
        assert "no screen here" in text and "--no-browser" in text
        if os.geteuid() == 0:
            assert "--allow-root" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_make_lab_adds_allow_root_only_for_root(tmp_path):
    """The command `make lab` runs, by user id: a fake `id` first on PATH plays a non-root user."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "id").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "DISPLAY": ":0", "MAKEFLAGS": ""}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in plan.splitlines() if "jupyter lab" in x)
    assert "--allow-root" not in line and "--no-browser" not in line  # a user with a screen
    root = {**env, "PATH": os.environ["PATH"]}
    if os.geteuid() == 0:
        line = next(
            x
            for x in subprocess.run(
                ["make", "-n", "--no-print-directory", "lab"],
                cwd=REPO,
                env=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            if "jupyter lab" in x
        )
        assert "--allow-root" in line


def test_make_app_starts_workbench_app_with_tcmalloc_and_no_browser_without_a_screen():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "app", "APP_ARGS=--port 9002"],
        cwd=REPO,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in plan.splitlines() if "workbench app" in x)
    assert "LD_PRELOAD=" in line and "workbench.cli.allocator" in line and "--no-browser" in line, line
    assert "--port 9002" in line
