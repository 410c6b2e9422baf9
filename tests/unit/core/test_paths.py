"""Where the shipped data/ and notebooks/ are, and $WORKBENCH_HOME (core.paths)."""

from __future__ import annotations

from helpers import REPO


def test_workbench_data_still_points_elsewhere(tmp_path, monkeypatch):
    from workbench.core.paths import data_dir, notebooks_dir

    assert data_dir() == REPO / "data" and notebooks_dir() == REPO / "notebooks"  # the checkout's, editable
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data_dir() == tmp_path


def test_workbench_home_is_the_environments_or_the_users_cache(tmp_path, monkeypatch):
    from workbench.core.paths import workbench_home

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    assert workbench_home() == tmp_path / "home"
    monkeypatch.delenv("WORKBENCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert workbench_home() == tmp_path / ".cache" / "workbench"


def test_the_shipped_folders_hold_what_the_workbench_reads():
    from workbench.core.paths import data_dir, notebooks_dir

    assert (data_dir() / "sentiment").is_dir() and (data_dir() / "model_configs").is_dir()
    assert (notebooks_dir() / "app.ipynb").is_file() and (notebooks_dir() / "01_quickstart.ipynb").is_file()
