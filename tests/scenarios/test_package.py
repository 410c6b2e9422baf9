"""The workbench as a package: the wheel and the sdist carry what it ships, and the wheel, installed into a fresh
virtualenv outside the checkout, runs `compare`, `estimate` and `notebooks` from there.

Nothing is downloaded: the wheel is built with this environment's setuptools (--no-build-isolation --no-index)
and installed with --no-deps into a virtualenv that sees this environment's site-packages through a .pth line
(a plain path: the editable install's own .pth there is not processed, so the checkout's workbench stays out).
About 30 seconds, most of it the two commands' imports.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

SOURCES = ("pyproject.toml", "README.md", "workbench", "data", "notebooks")
pytestmark = pytest.mark.package


def _copy_sources(to: Path) -> Path:
    """The files a build reads, copied: a build writes build/ and *.egg-info beside its sources."""
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, to / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, to / name)
    return to


def _shipped_files() -> set[str]:
    """What the checkout ships, as paths inside the installed package."""
    data = {f"workbench/_data/{p.relative_to(REPO / 'data')}" for p in (REPO / "data").rglob("*") if p.is_file()}
    notebooks = {f"workbench/_notebooks/{p.name}" for p in (REPO / "notebooks").glob("*.ipynb")}
    return {p for p in data if "__pycache__" not in p} | notebooks


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-build-isolation", "--no-index", "--no-deps", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        cwd=src,
        check=True,
        capture_output=True,
    )
    return {"wheel": next(dist.glob("*.whl")), "sdist": next(dist.glob("*.tar.gz"))}


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed and the project's dependencies seen from this environment."""
    where = tmp_path_factory.mktemp("venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    own = next(where.glob("lib/python3*/site-packages"))
    (own / "project-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", built["wheel"]],
        check=True,
        capture_output=True,
    )
    return where


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORKBENCH_DATA", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "WORKBENCH_HOME": str(home)}


def test_the_wheel_carries_the_data_and_the_notebooks(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    missing = _shipped_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    # every subpackage of the checkout (pyproject.toml lists them by hand)
    packages = {f"{p.parent.relative_to(REPO)}/__init__.py" for p in (REPO / "workbench").rglob("__init__.py")}
    assert packages <= names, f"subpackages not in the wheel: {sorted(packages - names)}"


def test_the_sdist_carries_the_data_and_the_notebooks(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {
        p.replace("workbench/_data/", "data/").replace("workbench/_notebooks/", "notebooks/") for p in _shipped_files()
    }
    assert not wanted - names, f"not in the sdist: {sorted(wanted - names)}"


def test_installed_wheel_runs_outside_the_checkout(venv, tiny_model_dir, tmp_path):
    bin_ = venv / "bin"
    env = _env(tmp_path / "home")
    where = subprocess.run(
        [str(bin_ / "python"), "-c", "import workbench.core.paths as p; print(p.__file__); print(p.data_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv)), where  # not the checkout's

    est = subprocess.run(
        [str(bin_ / "workbench"), "estimate", "--model", "llama-65b", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert est.returncode == 0, est.stderr
    report = json.loads(est.stdout)
    assert report["model"] == "llama-65b" and report["total"] > 30 * 2**30  # 4-bit 65B: tens of GiB

    run = subprocess.run(
        [str(bin_ / "workbench"), "compare", "--model", str(tiny_model_dir), "--task", "dates"]
        + "--variants base,lora --steps 2 --batch-size 2 --seq-len 32 --eval-examples 4 --out run".split(),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["base", "lora"]
    assert all(v["status"] == "done" for v in results["variants"]), results["variants"]

    nbs = subprocess.run(
        [str(bin_ / "workbench"), "notebooks", "nbs"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert nbs.returncode == 0, nbs.stderr
    assert sorted(p.name for p in (tmp_path / "nbs").iterdir()) == sorted(
        p.name for p in (REPO / "notebooks").glob("*.ipynb")
    )
