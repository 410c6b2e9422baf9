"""Where the shipped data/ and notebooks/ are, and $WORKBENCH_HOME (core.paths)."""

from __future__ import annotations

from helpers import REPO


def test_workbench_data_still_points_elsewhere(tmp_path, monkeypatch):
    from workbench.core.paths import data_dir, notebooks_dir

    assert data_dir() == REPO / "data" and notebooks_dir() == REPO / "notebooks"  # the checkout's, editable
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data_dir() == tmp_path
