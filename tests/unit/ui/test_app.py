"""The Workbench (ui.app): every panel shown alone, and the app's tabs."""

from __future__ import annotations

import json

import pytest

from workbench.ui import AdapterPanel, AppState, ComparePanel, ResultsPanel, SetupPanel, TrainPanel, Workbench


def test_workbench_refuses_a_tab_it_does_not_have(tiny_model_dir, tiny_jsonl, tmp_path):

    with pytest.raises(ValueError, match="tabs: unknown 'explainers'"):
        Workbench(overrides={"model": {"name": str(tiny_model_dir)}}, runs_dir=tmp_path, tabs=["setup", "explainers"])


def test_panels_can_be_shown_alone_and_the_app_has_its_tabs(app):
    for cls in (SetupPanel, AdapterPanel, TrainPanel, ComparePanel, ResultsPanel):
        panel = cls()
        assert panel.children and isinstance(panel.state, AppState)
    assert list(app.tabs.titles) == [
        "Setup",
        "Adapter & quantization",
        "Train",
        "Sweep",
        "Compare",
        "Results",
        "LoRA explained",
        "Quantization explained",
    ]
    assert json.dumps(app.config.to_dict())  # the settings stay plain data
