"""The data package re-exports its modules' public names (`from workbench.data import load_data_task` keeps
working), each the module's own object."""

from __future__ import annotations

from workbench import data


def test_builtin_tasks_include_sentiment():
    assert "sentiment" in data.builtin_tasks()
