"""`workbench app` / `make app`: the workbench as a web page served by Voilà from notebooks/app.ipynb.

Fast: the options are checked before any server starts (bad ones exit 2 with one line), the command Voilà
runs with, and the page's notebook (committed without outputs) building the app with the tabs asked for.
Browser: the real server on a free port, the page in headless Chromium: the panels render with no code cell
and no request leaving the machine, then a short training and three answers in the Compare tab (~1-3 min).

    python tests/test_app_page.py --shot docs/img/app-page.png   # docs/guide/web-page.md's picture, from that real run
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lab_browser
import nbformat
import pytest
from conftest import require_chromium

from workbench import cli
from workbench.cli import page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "app.ipynb"
FAST_OVERRIDES = {"train": {"steps": 3, "batch_size": 2, "seq_len": 64, "eval_examples": 6}}


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
    port = lab_browser._free_port()
    code, err = run_cli(
        capsys, "--port", str(port), "--runs", "my-runs", "--tabs", "train,setup", "--preset", "cpu-demo"
    )
    assert code == 0, err
    ((got_port, env, open_browser, listen),) = no_server
    assert got_port == port and open_browser is (sys.platform == "darwin")  # no screen here: no browser
    # absolute: the kernel runs in notebooks/, where "my-runs" would be another folder
    assert env[page.ENV_RUNS] == str(tmp_path / "my-runs")
    assert env[page.ENV_TABS] == "train,setup" and env[page.ENV_PRESET] == "cpu-demo"


def test_the_launcher_names_the_tabs_the_app_has():
    from workbench.ui.app import PANELS

    assert page.TABS == tuple(attr for _, attr, *_ in PANELS)


def test_voila_serves_the_notebook_on_the_port_offline_with_tcmalloc(tmp_path):
    from workbench.machine.allocator import tcmalloc_path

    cmd = page.voila_command(9001, open_browser=False)
    assert cmd[1:4] == ["-m", "voila", str(NOTEBOOK)] and "--port=9001" in cmd and "--no-browser" in cmd
    assert "--strip_sources=True" in cmd and "--Voila.port_retries=0" in cmd
    assert "--no-browser" not in page.voila_command(9001, open_browser=True)
    root = page.write_template(tmp_path)
    index = (root / "voila" / "templates" / page.TEMPLATE / "index.html.j2").read_text()
    lab = Path(sys.prefix) / "share" / "jupyter" / "voila" / "templates" / "lab" / "index.html.j2"
    cdn_links = re.findall(r"<link [^>]*https://cdn\.jsdelivr\.net[^>]*/>", lab.read_text())
    assert len(cdn_links) == 2 and all(link in index for link in cdn_links)  # every CDN link Voilà has, cut
    env = page.app_env({page.ENV_TABS: "setup"}, root, base={"PATH": "/bin", "WORKBENCH_ALLOCATOR": "auto"})
    assert env["JUPYTER_PATH"].split(os.pathsep)[0] == str(root) and env[page.ENV_TABS] == "setup"
    assert (tcmalloc_path() or "") in env.get("LD_PRELOAD", "")


def test_make_app_starts_workbench_app_with_tcmalloc_and_no_browser_without_a_screen():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "app", "APP_ARGS=--port 9002"],
        cwd=ROOT,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in plan.splitlines() if "workbench app" in x)
    assert "LD_PRELOAD=" in line and "workbench.machine.allocator" in line and "--no-browser" in line, line
    assert "--port 9002" in line


# --------------------------------------------------------------------------- the page's notebook


def test_the_page_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert all(c.cell_type == "code" for c in nb.cells)  # a markdown cell would show on the page


def run_page_notebook() -> dict:
    """The notebook's code cells run in this process; returns their namespace."""
    ns: dict = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        exec(compile(cell.source, str(NOTEBOOK), "exec"), ns)  # noqa: S102 - our own notebook
    return ns


def test_the_page_notebook_builds_the_app_with_the_tabs_asked_for(monkeypatch, tmp_path, tiny_model_dir, tiny_jsonl):
    overrides = {"model": {"name": str(tiny_model_dir)}, "data": str(tiny_jsonl), "task": None, **FAST_OVERRIDES}
    monkeypatch.setenv(page.ENV_OVERRIDES, json.dumps(overrides))
    monkeypatch.setenv(page.ENV_RUNS, str(tmp_path / "runs"))
    monkeypatch.setenv(page.ENV_PRESET, "cpu-demo")
    monkeypatch.setenv(page.ENV_TABS, "setup,adapter,train,compare,results")
    app = run_page_notebook()["app"]
    assert app.tabs.titles == ("Setup", "Adapter & quantization", "Train", "Compare", "Results")
    assert app.config.train.steps == 3 and app.state.runs_dir == tmp_path / "runs"
    with pytest.raises(AttributeError, match="'quant_explainer' tab is not shown"):
        app.quant_explainer  # noqa: B018 - reading it is the test
    assert app.train is app.panel("train")
    monkeypatch.setenv(page.ENV_TABS, "")  # not set: every tab
    assert len(run_page_notebook()["app"].tabs.titles) == len(page.TABS)


def test_workbench_refuses_a_tab_it_does_not_have(tiny_model_dir, tiny_jsonl, tmp_path):
    from workbench.ui import Workbench

    with pytest.raises(ValueError, match="tabs: unknown 'explainers'"):
        Workbench(overrides={"model": {"name": str(tiny_model_dir)}}, runs_dir=tmp_path, tabs=["setup", "explainers"])


# --------------------------------------------------------------------------- the real page in Chromium


@contextlib.contextmanager
def app_server(runs: Path, log_path: Path, tabs: str, overrides: dict):
    """`workbench app` on a free port, as a user starts it; yields the page's URL."""
    port = lab_browser._free_port()
    env = {**os.environ, page.ENV_OVERRIDES: json.dumps(overrides), "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    env["OMP_NUM_THREADS"] = "1"  # two OpenMP threads on a busy 2-core machine spin-wait on each other
    cmd = [sys.executable, "-m", "workbench.cli", "app", "--port", str(port), "--runs", str(runs), "--tabs", tabs]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        # the log line, not a request: a GET of the page would start a kernel and run the notebook once more
        while "Voilà is running at" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"workbench app exited ({proc.returncode}): {log_path.read_text()[-1500:]}"
            assert time.monotonic() < deadline, f"no server within 90 s: {log_path.read_text()[-1500:]}"
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def use_the_page(work: Path, shot: Path, train: bool = True, timeout_s: float = 240) -> dict:
    """Open the page, check what it shows, and (train) Start a short run and Generate; returns what it saw."""
    from playwright.sync_api import sync_playwright

    tabs = "setup,adapter,train,compare,results"
    seen: dict = {"requests": []}
    with app_server(work / "runs", work / "voila.log", tabs, FAST_OVERRIDES) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=lab_browser.CHROMIUM, headless=True, args=lab_browser.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})  # full_page: as tall as the tab
            page.on("request", lambda r: seen["requests"].append(r.url))
            d = lab_browser.Driver(page, work, timeout_s)  # it records the console's errors; its own shots go in work
            seen["console_errors"] = d.console_errors
            d.stage = "open the page"
            page.goto(url, timeout=180_000)
            d.wait_until(
                "() => document.querySelector('.wb-app .wb-setup .wb-ok') !== null",
                what="the panels to render with the task summary",
                timeout_s=180,
            )
            seen["tabs"] = d.app(".lm-TabBar-tab").all_inner_texts()
            seen["code_cells"] = page.locator(".jp-InputArea:visible, .jp-InputPrompt:visible, .cm-editor").count()
            seen["html"] = page.content()
            if train:
                d.tab("Train")
                d.app(".wb-train button:has-text('Start')").click()
                d.stage = "train"
                d.wait_until(
                    "() => { const t = document.querySelector('.wb-train').innerText;"
                    " return t.includes('done:') || t.includes('stopped:'); }",
                    what="training to finish",
                    timeout_s=timeout_s,
                )
                seen["answers"] = d.generate("ISO 8601 date: the 3rd of May, 1999")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.browser
@pytest.mark.e2e
def test_the_page_shows_the_panels_offline_and_trains_in_chromium(tmp_path, embedded_dir):
    require_chromium()
    seen = use_the_page(tmp_path, tmp_path / "app-page.png")
    assert seen["tabs"] == ["Setup", "Adapter & quantization", "Train", "Compare", "Results"], seen["tabs"]
    assert seen["code_cells"] == 0 and "WORKBENCH_APP_TABS" not in seen["html"]  # the panels, not the code
    # data: and blob: URLs are the page's own images (the plots); everything else must be this server
    away = [
        u for u in seen["requests"] if not re.match(r"(https?|wss?)://(127\.0\.0\.1|localhost)[:/]|(data|blob):", u)
    ]
    assert not away, f"the page fetched from outside this machine: {away}"
    assert len(seen["answers"]) == 3 and all(a.strip() for a in seen["answers"]), seen["answers"]
    assert not seen["console_errors"], seen["console_errors"]
    assert (tmp_path / "app-page.png").stat().st_size > 10_000  # a real picture, not a blank page
    assert list((tmp_path / "runs").glob("*/results.json")), "the run was not written to --runs"


def main() -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Use the app page in Chromium; keep its screenshot.")
    ap.add_argument("--shot", type=Path, default=Path("docs/img/app-page.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="workbench-app-page-") as work:
        seen = use_the_page(Path(work), args.shot.resolve())
    print(*seen.get("answers", []), sep="\n")
    print(f"wrote {args.shot}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())


def test_off_the_loopback_address_the_page_is_never_served_without_a_token(capsys, no_server):
    port = lab_browser._free_port()
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


def test_a_page_served_with_a_token_refuses_a_browser_without_it(tmp_path):
    import http.client

    port = lab_browser._free_port()
    listen = page.Listen("127.0.0.1", "a-token-for-the-test-only")
    env = page.app_env(page.check_options(port, str(tmp_path / "runs"), "setup", None), page.write_template(tmp_path))
    proc = subprocess.Popen(
        page.voila_command(port, False, listen), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def get(path: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path)
        return conn.getresponse()  # the status and headers: redirects are not followed

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                refused = get("/")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert refused.status in (302, 403) and "login" in (refused.getheader("Location") or "login")
        assert get("/?token=a-wrong-token-of-length").status in (302, 403)
        assert get(f"/?token={listen.token}").status == 200
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
