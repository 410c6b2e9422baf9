"""The ui package (ui/__init__.py): each panel's name is imported on first use, from its own module, so
`from workbench.ui import Workbench` loads only what the app needs to appear (that it really appears without the
heavy libraries is tests/scenarios/test_app_startup.py)."""

from __future__ import annotations

import importlib

import pytest

import workbench.ui as ui

# where each name the package offers lives (the docstring of workbench/ui/__init__.py lists them)
HOMES = {
    "Workbench": "app",
    "AppState": "state",
    "SetupPanel": "setup",
    "AdapterPanel": "adapter",
    "TrainPanel": "train",
    "SweepPanel": "sweep",
    "ComparePanel": "compare",
    "ResultsPanel": "results",
    "LoraExplainer": "explain",
    "QuantExplainer": "quant",
}


def test_the_package_offers_every_panel_and_nothing_else():
    assert sorted(ui.__all__) == sorted(HOMES)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        ui.Nothing  # noqa: B018 - reading it is the test


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_name_is_its_own_modules(name):
    module = importlib.import_module(f"workbench.ui.{HOMES[name]}")
    assert getattr(ui, name) is getattr(module, name)
