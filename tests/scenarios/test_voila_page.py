"""The Voilà page for real: `workbench app` serving the page on a free port, in headless Chromium (the panels
render with no code cell and no request leaving the machine, then a short training and three answers), and a page
served with a token refusing a browser without it.

    # docs/guide/web-page.md's picture, from that real run:
    PYTHONPATH=tests python tests/scenarios/test_voila_page.py --shot docs/img/app-page.png"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import APP_FAST_OVERRIDES, REPO, free_port, require_chromium
from scenarios.support import lab_browser

from workbench.cli import page


# --------------------------------------------------------------------------- the real page in Chromium
@contextlib.contextmanager
def app_server(runs: Path, log_path: Path, tabs: str, overrides: dict):
    """`workbench app` on a free port, as a user starts it; yields the page's URL."""
    port = free_port()
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
    with app_server(work / "runs", work / "voila.log", tabs, APP_FAST_OVERRIDES) as url, sync_playwright() as p:
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
    sys.path.insert(0, str(REPO))
    sys.exit(main())


def test_a_page_served_with_a_token_refuses_a_browser_without_it(tmp_path):
    import http.client

    port = free_port()
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
