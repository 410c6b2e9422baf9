"""The Voilà page (cli.page): the command Voilà runs with, the template without CDN links, the environment its
kernel gets, the page's notebook (committed without outputs) building the app with the tabs asked for, and the
token off the loopback address."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import APP_FAST_OVERRIDES, REPO

from workbench.cli import page

NOTEBOOK = REPO / "notebooks" / "app.ipynb"


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
    overrides = {"model": {"name": str(tiny_model_dir)}, "data": str(tiny_jsonl), "task": None, **APP_FAST_OVERRIDES}
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
