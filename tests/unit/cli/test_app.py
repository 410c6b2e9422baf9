"""`workbench app`: options checked before any server starts (a bad one exits 2 with one line), and what reaches
the server and its kernel (the page itself, served, is tests/scenarios/test_voila_page.py)."""

from __future__ import annotations

import socket
import sys

import pytest
from helpers import free_port

from workbench import cli
from workbench.cli import page


def run_cli(capsys, *args: str) -> tuple[int, str]:
    try:
        code = cli.main(["app", *args])
    except SystemExit as exc:  # argparse's own errors (a port that is no number)
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def no_server(monkeypatch):
    """cmd_app's call to serve, recorded instead of starting Voilà."""
    calls = []
    monkeypatch.setattr(
        page, "serve", lambda port, env, open_browser, listen=None: calls.append((port, env, open_browser, listen)) or 0
    )
    return calls


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tabs", "setup,explainers"], "--tabs: unknown tab 'explainers'"),
        (["--port", "0"], "--port: 0 is not a port number"),
        (["--port", "70000"], "--port: 70000 is not a port number"),
        (["--port", "eighty"], "--port: invalid int value"),
        (["--preset", "lesson-one"], "--preset: unknown 'lesson-one'"),
        (["--runs", ""], "--runs: give a folder"),
        (["--ip", "classroom"], "--ip: 'classroom' is not an IP address"),
        (["--ip", "0.0.0.0", "--token", "letmein"], "--token: use at least 12 characters"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, no_server, args, says):
    code, err = run_cli(capsys, *args)
    assert code == 2 and says in err, err
    assert err.count("\n") == 1 and not no_server, err


def test_a_runs_folder_that_cannot_be_made_is_refused(capsys, no_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_cli(capsys, "--runs", str(blocker / "runs"))
    assert code == 2 and "--runs:" in err and "is a file" in err and err.count("\n") == 1, err
    assert not no_server


def test_a_port_in_use_is_refused_rather_than_moved(capsys, no_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, err = run_cli(capsys, "--port", str(s.getsockname()[1]))
    assert code == 2 and "cannot be used on 127.0.0.1" in err, err


def test_good_options_reach_the_kernel_as_environment(capsys, no_server, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    port = free_port()
    code, err = run_cli(
        capsys, "--port", str(port), "--runs", "my-runs", "--tabs", "train,setup", "--preset", "cpu-demo"
    )
    assert code == 0, err
    ((got_port, env, open_browser, listen),) = no_server
    assert got_port == port and open_browser is (sys.platform == "darwin")  # no screen here: no browser
    # absolute: the kernel runs in notebooks/, where "my-runs" would be another folder
    assert env[page.ENV_RUNS] == str(tmp_path / "my-runs")
    assert env[page.ENV_TABS] == "train,setup" and env[page.ENV_PRESET] == "cpu-demo"


def test_off_the_loopback_address_the_page_is_never_served_without_a_token(capsys, no_server):
    port = free_port()
    code, _ = run_cli(capsys, "--port", str(port), "--ip", "0.0.0.0")
    ((_, _, _, listen),) = no_server
    assert code == 0 and not listen.loopback and len(listen.token) >= 20  # made here
    cmd = page.voila_command(port, False, listen)
    assert "--Voila.ip=0.0.0.0" in cmd and f"--token={listen.token}" in cmd
    assert f":{port}/?token={listen.token}" in listen.url(port)
    mine = page.check_listen("0.0.0.0", "a-token-the-teacher-chose")
    assert mine.token == "a-token-the-teacher-chose"
    here = page.check_listen(None, None)  # the default: this machine only, no token to type
    assert (
        here.loopback
        and here.token is None
        and not any(a.startswith("--token") for a in page.voila_command(1, False, here))
    )
