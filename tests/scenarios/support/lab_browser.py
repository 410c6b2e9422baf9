"""Drive the workbench in a real JupyterLab in headless Chromium, the way a person uses it.

Used by tests/scenarios/test_browser.py (fast setting, part of `make test`) and by `make screenshots`
(the default settings, a real run; the pictures go to docs/img/). Run alone:

    python tests/scenarios/support/lab_browser.py --out docs/img/app       # a real run: the docs' screenshots
    python tests/scenarios/support/lab_browser.py --fast --out /tmp/shots  # what the test does

Each stage has a name; a failure says which stage broke and what was on the page. The server and
the browser are always shut down, also when a stage fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # tests/scenarios/support/ -> the checkout
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# SEQ_LEN 64: the sentiment and dates prompts fit in it with SmolLM2's chat template (data/README.md)
FAST_PARAMS = {"STEPS": 3, "BATCH_SIZE": 2, "SEQ_LEN": 64, "EVAL_EXAMPLES": 6}
# messages the browser prints that say nothing about this project (JupyterLab asks for them itself)
BENIGN_CONSOLE = (re.compile(r"Failed to load resource: the server responded with a status of 404"),)


class StageFailed(AssertionError):
    pass


def chromium_missing_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return (
            f"{CHROMIUM} not found: install Debian's chromium (sudo apt-get install chromium) to run the browser test"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: run `make setup` (it comes with the test extras)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_notebook(folder: Path, params: dict) -> Path:
    """A copy of the quickstart notebook with `params` appended to its parameters cell."""
    nb = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["source"] = src + "\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    path = folder / "01_quickstart.ipynb"
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, env: dict, log_path: Path):
    """JupyterLab on loopback with a random token; yields its base URL (token included)."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = root_dir / ".lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    # no "would you like news?" toast over the page
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {**env, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTER_CONFIG_DIR": str(root_dir / ".jupyter-config")}
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--expose-app-in-browser",
        "--ServerApp.open_browser=False",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise StageFailed(
                    f"start JupyterLab: the server exited ({proc.returncode}): "
                    f"{log_path.read_text(errors='replace')[-1500:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StageFailed(
                    f"start JupyterLab: no answer on {base} within 90 s: {log_path.read_text(errors='replace')[-1500:]}"
                )
            time.sleep(0.5)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


class Driver:
    """The stages of using the app, each one screenshot-ed under `shots`."""

    def __init__(self, page, shots: Path, timeout_s: float):
        self.page = page
        self.shots = shots
        self.timeout_ms = 120_000  # a click's effect; training and generating get timeout_s
        self.long_s = timeout_s
        self.console_errors: list[str] = []
        self.stage = "open the notebook"
        self.verdicts: list[str] = []  # the Compare tab's verdict sentences after Evaluate
        self.caption = ""  # the Results chart's caption
        self.gap_table = ""  # the Quantization tab's gap table, with the init's step-0 rows
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"page error: {exc}"))

    def _on_console(self, msg) -> None:
        if msg.type == "error" and not any(p.search(msg.text) for p in BENIGN_CONSOLE):
            self.console_errors.append(f"console error: {msg.text}")

    # ------------------------------------------------------------------ helpers

    def app(self, css: str = ""):
        return self.page.locator(f".wb-app {css}".strip())

    def shot(self, name: str, locator=None) -> Path:
        path = self.shots / f"{name}.png"
        (locator or self.page).screenshot(path=str(path))
        return path

    def check_no_errors(self) -> None:
        notebook_errors = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
        if notebook_errors.count():
            raise StageFailed(f"{self.stage}: the notebook shows an error: {notebook_errors.first.inner_text()[:800]}")
        panel_errors = self.app(".wb-error")
        if panel_errors.count():
            raise StageFailed(f"{self.stage}: a panel shows an error: {panel_errors.first.inner_text()[:800]}")
        if self.console_errors:
            raise StageFailed(f"{self.stage}: the browser console reported: {self.console_errors[:5]}")

    def wait_until(self, js: str, arg=None, timeout_s: float | None = None, what: str = "") -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.stage}: waiting for {what or js[:60]}", file=sys.stderr, flush=True)
        try:
            self.page.wait_for_function(
                js, arg=arg, timeout=(timeout_s * 1000) if timeout_s else self.timeout_ms, polling=250
            )
        except Exception as exc:  # noqa: BLE001 - say which stage timed out, and what the page shows
            status = self.app().inner_text()[-1500:] if self.app().count() else "(no app on the page)"
            raise StageFailed(
                f"{self.stage}: timed out waiting for {what or js}: {type(exc).__name__}\n"
                f"app text at the end:\n{status}"
            ) from None
        self.check_no_errors()

    def tab(self, title: str) -> None:
        self.app(f".lm-TabBar-tab:has-text('{title}')").first.click()

    # ------------------------------------------------------------------ stages

    def open_and_run(self, url: str) -> None:
        self.stage = "open the notebook and run every cell"
        print(f"[{time.strftime('%H:%M:%S')}] {self.stage}", file=sys.stderr, flush=True)
        self.page.goto(url)
        self.page.wait_for_selector(".jp-Notebook", timeout=self.timeout_ms)
        self.page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60000)
        # wait for the kernel before running (the toolbar shows its status). A busy machine can
        # open the notebook before the kernel specs arrive; JupyterLab then asks which kernel to
        # use, and a person would accept the offered Python 3
        deadline = time.monotonic() + 180
        while True:
            dialog = self.page.locator(".jp-Dialog:has-text('Select Kernel') .jp-mod-accept")
            if dialog.count():
                dialog.first.click()
            if self.page.evaluate(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel;"
                " return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }"
            ):
                break
            if time.monotonic() > deadline:
                raise StageFailed(f"{self.stage}: the kernel did not become idle within 180 s")
            time.sleep(0.5)
        # not awaited: the command's promise settles only when every cell has run
        self.page.evaluate(
            "() => { window.jupyterapp.shell.collapseLeft();"
            " window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"
        )
        self.page.wait_for_selector(".wb-app", timeout=self.timeout_ms)
        self.wait_until(
            "() => document.querySelector('.wb-setup .wb-ok') !== null",
            what="the app to render with its task summary",
            timeout_s=120,
        )
        self.shot("01-setup", self.app())

    def change_settings(self) -> None:
        self.stage = "change the rank and the bits"
        self.tab("Adapter")
        info = self.app(".wb-params").first
        before = info.inner_text()
        handle = self.app(".wb-adapter .noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")  # rank 8 -> 16
        self.wait_until(
            "(before) => { const e = document.querySelector('.wb-params'); return e && e.innerText !== before; }",
            arg=before,
            what="the parameter count to change",
        )
        if "Trainable parameters" not in info.inner_text():
            raise StageFailed(f"{self.stage}: no parameter count shown: {info.inner_text()!r}")
        if "16" not in self.app(".wb-adapter .widget-slider").first.inner_text():
            raise StageFailed(f"{self.stage}: the rank slider does not show 16")
        self.app(".wb-adapter .widget-checkbox:has-text('8-bit') input").click()  # add an 8-bit base
        self.wait_until(
            "() => document.querySelector('.wb-adapter .wb-params').parentElement.innerText.includes('lora8')",
            what="the memory estimate to gain an 8-bit row",
        )
        self.shot("02-adapter", self.app())
        self.app(".wb-adapter .widget-checkbox:has-text('8-bit') input").click()  # and back: keep the run short
        self.wait_until(
            "() => !document.querySelector('.wb-adapter .wb-params').parentElement.innerText.includes('lora8')",
            what="the 8-bit row to go again",
        )

    def train(self, stop_early: bool = False) -> None:
        self.stage = "train"
        self.tab("Train")
        loss_src = self.app(".wb-train img").first.get_attribute("src")
        # every text the progress line shows, recorded as it changes: a phase can be over between two polls
        self.page.evaluate(
            "() => { window.__wbProgress = []; const box = document.querySelector('.wb-train');"
            " new MutationObserver(() => { for (const l of box.querySelectorAll('.widget-label')) {"
            " const t = l.innerText; const b = l.parentElement.querySelector('.progress-bar');"
            " if (t && (window.__wbProgress.at(-1) || {}).t !== t)"
            " window.__wbProgress.push({t, w: b ? parseFloat(b.style.width) || 0 : 0}); } })"
            ".observe(box, {subtree: true, childList: true, characterData: true, attributes: true}); }"
        )
        self.app(".wb-train button:has-text('Start')").click()
        self.wait_until(
            "() => (window.__wbProgress || [])"
            ".some(p => /evaluating base: \\d+ of \\d+ examples/.test(p.t) && p.w > 0)",
            what="the progress bar to move while the base model is evaluated, before any training step",
        )
        self.wait_until(
            "() => { const b = document.querySelector('.wb-train .progress-bar');"
            " return b && parseFloat(b.style.width) > 0 && document.querySelector('.wb-train').innerText"
            ".includes('training lora'); }",
            what="the progress bar to count training steps",
        )
        self.wait_until(
            "(src) => { const i = document.querySelector('.wb-train img'); return i && i.src !== src; }",
            arg=loss_src,
            what="the loss plot to be redrawn with new points",
        )
        if stop_early:
            self.app(".wb-train button:has-text('Stop')").click()
        self.wait_until(
            "() => { const t = document.querySelector('.wb-train').innerText;"
            " return t.includes('done:') || t.includes('stopped:'); }",
            what="training to finish",
            timeout_s=self.long_s,
        )
        text = self.app(".wb-train").inner_text()
        if not re.search(r"(done|stopped) · \d+:\d\d elapsed", text):
            raise StageFailed(f"{self.stage}: the progress line does not say the run ended: {text[-600:]}")
        self.shot("03-train", self.app())

    def generate(self, prompt: str) -> list[str]:
        self.stage = "generate answers side by side"
        self.tab("Compare")
        box = self.app(".wb-compare textarea").first
        box.fill(prompt)
        box.press("Tab")
        self.app(".wb-compare button:has-text('Generate')").click()
        self.wait_until(
            "() => ['base', 'lora', 'qlora'].every(v => {"
            " const c = document.querySelector('.wb-answer-' + v);"
            " return c && c.querySelector('.wb-answer-text').innerText.trim().length > 0"
            " && /\\d+ tokens? in/.test(c.innerText); })",
            what="three non-empty answers",
            timeout_s=self.long_s,
        )
        self.wait_until(
            "() => document.querySelector('.wb-compare').innerText.includes('done: same prompt')",
            what="every column to finish",
        )
        answers = [self.app(f".wb-answer-{v} .wb-answer-text").inner_text().strip() for v in ("base", "lora", "qlora")]
        # Evaluate: every variant scored, each accuracy with its interval, the paired verdicts under them
        self.stage = "evaluate: intervals and verdicts in the Compare tab"
        self.app(".wb-compare button:has-text('Evaluate')").click()
        self.wait_until(
            "() => document.querySelectorAll('.wb-compare .wb-verdict').length > 0"
            " && document.querySelector('.wb-compare').innerText.includes('evaluated ')",
            what="the verdict sentences after Evaluate",
            timeout_s=self.long_s,
        )
        self.verdicts = [v.inner_text().strip() for v in self.app(".wb-compare .wb-verdict").all()]
        # the ✓/✗ table and the best/worst examples beside it or under it, never drawn over one another
        overlap = self.page.evaluate(
            "() => { const kids = [...document.querySelectorAll('.wb-compare .wb-eval-area > *')];"
            " if (kids.length !== 2) return 'the evaluation area has ' + kids.length + ' boxes';"
            " const [a, b] = kids.map(k => k.getBoundingClientRect());"
            " const hit = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;"
            " return hit ? 'overlap: ' + JSON.stringify([a, b]) : ''; }"
        )
        if overlap:
            raise StageFailed(f"{self.stage}: the ✓/✗ table and the best/worst examples {overlap}")
        self.shot("04-compare", self.app())
        return answers

    def results(self) -> None:
        self.stage = "open the results chart"
        self.tab("Results")
        self.app(".wb-results button:has-text('Refresh')").click()
        self.wait_until(
            "() => { const i = document.querySelector('.wb-results img'); return i && i.naturalWidth > 100; }",
            what="the accuracy-vs-memory chart",
        )
        if "qlora" not in self.app(".wb-results table").first.inner_text():
            raise StageFailed(f"{self.stage}: the results table has no qlora row")
        # the caption under the chart says what the error bars are, counted from the points drawn
        self.caption = self.app(".wb-results .wb-chart-caption").first.inner_text().strip()
        bars = re.search(r"error bars: 95% intervals \((\d+) of (\d+) points have one\)", self.caption)
        if not bars or int(bars[1]) == 0:
            raise StageFailed(f"{self.stage}: no error bars on the results chart: {self.caption!r}")
        self.shot("05-results", self.app())

    def sweep(self, points: int = 2) -> None:
        """2 points (the test: rank 2 on q,v at 16 and 4 bits) or 6 (the screenshots: ranks 2, 8, 32)."""
        self.stage = f"a {points}-point sweep in the Sweep tab"
        self.tab("Sweep")
        self.app(".wb-sweep").first.wait_for(timeout=self.timeout_ms)
        boxes = [("Targets", "all linear", False)]  # each box clicked by its exact label in its row
        if points == 2:
            boxes += [("Ranks", "8", False), ("Ranks", "32", False)]
        for row, label, want in boxes:
            self.page.evaluate(
                "([row, label, want]) => { for (const box of document.querySelectorAll('.wb-sweep .widget-hbox')) {"
                " const title = box.querySelector('.widget-label'); if (!title || title.innerText.trim() !== row)"
                " continue; for (const c of box.querySelectorAll('.widget-checkbox')) {"
                " const input = c.querySelector('input'); if (c.innerText.trim() === label && input.checked !== want)"
                " input.click(); } } }",
                [row, label, want],
            )
        self.wait_until(
            # "2 points:" is inside "12 points:": the plan must be the final one before Start is pressed, or
            # its table shrinking under the pointer moves the button away from the click
            "(n) => new RegExp('(^|[^0-9])' + n + ' points:').test(document.querySelector('.wb-sweep').innerText)",
            arg=points,
            what=f"the plan to say {points} points",
        )
        self.app(".wb-sweep button:has-text('Start sweep')").click()
        self.wait_until(
            "() => document.querySelector('.wb-sweep button.mod-success').disabled"
            " || document.querySelector('.wb-sweep').innerText.includes('done · ')",
            what="the sweep to start (its Start button disabled)",
        )
        self.wait_until(
            "(n) => { const s = document.querySelector('.wb-sweep'); const i = s.querySelector('img');"
            " return s.innerText.includes('done · ') && i && i.naturalWidth > 100"
            " && s.querySelectorAll('.wb-sweep-table tbody tr').length === n; }",
            arg=points,
            what="every point trained, in the table and on the chart",
            timeout_s=self.long_s,
        )
        self.shot("08-sweep", self.app())

    def explainers(self) -> None:
        self.stage = "open the explainers"
        self.tab("LoRA explained")
        self.app(".wb-explain-lora button:has-text('Refresh runs')").click()
        self.wait_until(
            "() => [...document.querySelectorAll('.wb-explain-lora img')]"
            ".filter(i => i.naturalWidth > 100).length >= 3",
            what="the to-scale drawing, the spectra and the heat map of the run's adapter",
        )
        self.shot("06-lora-explained", self.app())
        self.tab("Quantization explained")
        self.app(".wb-explain-quant button:has-text('Analyse')").click()
        self.wait_until(
            "() => { const t = document.querySelector('.wb-explain-quant table');"
            " return t && t.innerText.includes('NF4'); }",
            what="the quantization table",
            timeout_s=self.long_s,
        )
        self.shot("07-quant-explained", self.app())
        self.gap()

    def gap(self, init: str = "olora") -> None:
        """An init chosen in the Adapter tab, then the whole model's gap before training with that init's step 0."""
        self.stage = f"choose init {init} in the Adapter tab and measure the gap before training"
        self.tab("Adapter")
        self.app(".wb-adapter .wb-init select").select_option(init)
        self.tab("Quantization explained")
        box = ".wb-explain-quant .wb-quant-gap"
        examples = self.app(f"{box} input[type='number']").first
        examples.fill("8")  # a few examples: five loads of the model are most of the time
        examples.press("Enter")
        self.app(f"{box} button:has-text('Measure the gap')").click()
        self.wait_until(
            "(init) => { const t = document.querySelector('.wb-explain-quant .wb-gap-table');"
            " return t && t.innerText.includes('with ' + init + ' at step 0') && t.innerText.includes('%'); }",
            arg=init,
            what=f"the gap table with {init}'s step-0 rows",
            timeout_s=self.long_s,
        )
        self.gap_table = self.app(".wb-gap-table").inner_text()
        self.tab("Adapter")  # back to the quickstart's start, so the sweep after this trains as before
        self.app(".wb-adapter .wb-init select").select_option("gaussian")
        self.tab("Quantization explained")

    def restart(self) -> None:
        self.stage = "restart the kernel: the Run picker shows the run it answers with"
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:restart-run-all'); return true; }")
        self.page.locator(".jp-Dialog .jp-mod-accept").first.click(timeout=self.timeout_ms)
        self.wait_until(
            "() => document.querySelector('.wb-setup .wb-ok') !== null",
            what="the app to render again after the restart",
            timeout_s=180,
        )
        self.tab("Compare")
        self.wait_until(
            "() => { const s = document.querySelector('.wb-compare select');"
            " return s && s.selectedIndex >= 0 && s.options[s.selectedIndex].text.includes('-r'); }",
            what="the Run picker to show the newest run selected",
        )


def _keep_results(runs_dir: Path, out: Path) -> None:
    """The runs' result rows beside the screenshots (runs.csv), so the figures a README quotes are on disk."""
    sys.path.insert(0, str(ROOT))
    from workbench.core.files import write_csv
    from workbench.records.scan import ResultRow, all_results

    rows = all_results(runs_dir)
    write_csv(out / "runs.csv", [r.to_dict() for r in rows], ResultRow.field_names())


def run(
    out: Path,
    *,
    fast: bool,
    timeout_s: float = 900,
    stop_early: bool = False,
    prompt: str = "ISO 8601 date: the 3rd of May, 1999",
) -> dict:
    """Start JupyterLab, open the quickstart in Chromium and use the app; returns what it saw."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="workbench-lab-"))
    try:
        params = {**(FAST_PARAMS if fast else {}), "RUNS_DIR": str(work / "runs")}
        prepare_notebook(work, params)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        sys.path.insert(0, str(ROOT))
        from workbench.machine.allocator import preload_env

        env = preload_env(env)  # the server and its kernels start as `make lab` starts them (tcmalloc)
        if fast:  # two OpenMP threads on a busy 2-core machine spin-wait on each other
            env["OMP_NUM_THREADS"] = "1"
        log = work / "jupyterlab.log"  # copied next to the screenshots when something fails
        with jupyter_lab(work, env, log) as (base, token), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                # tall enough that a whole tab fits in the notebook's scroll area for its screenshot
                page = browser.new_page(viewport={"width": 1280, "height": 2000})
                d = Driver(page, out, timeout_s)
                try:
                    d.open_and_run(f"{base}/lab/tree/01_quickstart.ipynb?token={token}")
                    d.change_settings()
                    d.train(stop_early=stop_early)
                    answers = d.generate(prompt)
                    d.results()
                    d.explainers()
                    d.sweep(2 if fast else 6)
                    d.restart()
                except Exception:
                    with contextlib.suppress(Exception):
                        d.shot(f"failed-{re.sub(r'[^a-z]+', '-', d.stage)}")
                    with contextlib.suppress(OSError):
                        shutil.copy(log, out / "jupyterlab.log")
                    raise
                _keep_results(work / "runs", out)
                return {
                    "answers": answers,
                    "console_errors": d.console_errors,
                    "shots": sorted(out.glob("*.png")),
                    "verdicts": d.verdicts,
                    "caption": d.caption,
                    "gap_table": d.gap_table,
                }
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/app", help="folder for the screenshots")
    ap.add_argument("--fast", action="store_true", help="tiny settings (what the test uses)")
    args = ap.parse_args()
    # a SIGTERM (timeout, CI cancel) unwinds like Ctrl-C, so the server and browser are shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = chromium_missing_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    seen = run(Path(args.out), fast=args.fast)
    for name, text in zip(("base", "lora", "qlora"), seen["answers"]):
        print(f"{name}: {text}")
    print("screenshots:", *seen["shots"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
