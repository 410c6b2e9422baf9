"""The whole workbench: Setup, Adapter & quantization, Train, Compare and Results in one set of tabs."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from .. import models
from ..config import RunConfig, preset_config
from .adapter import AdapterPanel
from .compare import ComparePanel
from .explain import LoraExplainer
from .quant import QuantExplainer
from .results import ResultsPanel
from .setup import SetupPanel
from .state import AppState
from .train import TrainPanel

TABS = ["Setup", "Adapter & quantization", "Train", "Compare", "Results", "LoRA explained", "Quantization explained"]
# whole tab titles (lumino's default width cuts "Adapter & quantization"), tables that read well
CSS = """
.wb-app .lm-TabBar-tab { min-width: 120px !important; max-width: none !important; flex: 0 0 auto !important; }
.wb-app table { border-collapse: collapse; font-size: 12px; }
.wb-app td, .wb-app th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; }
"""


class Workbench(widgets.VBox):
    """`Workbench()` in a notebook cell shows the app; every panel is also an attribute.

    Defaults are the cpu-demo preset on the embedded model (three variants in a few minutes on a
    laptop CPU); pass a RunConfig, a preset name or overrides to start elsewhere, e.g.
    `Workbench(overrides={"train": {"steps": 40}})`.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        *,
        preset: str | None = "cpu-demo",
        overrides: dict | None = None,
        runs_dir: str | Path = "runs",
    ):
        if config is None:
            config = preset_config(preset, {"model": {"device": "auto"}, **(overrides or {})})
        self.state = AppState(config, runs_dir=runs_dir)
        self.setup = SetupPanel(self.state)
        self.adapter = AdapterPanel(self.state)
        self.train = TrainPanel(self.state)
        self.compare = ComparePanel(self.state)
        self.results = ResultsPanel(self.state)
        self.lora_explainer = LoraExplainer(self.state)
        self.quant_explainer = QuantExplainer(self.state)  # loads the model only when asked to analyse
        self.tabs = widgets.Tab(
            children=[
                self.setup,
                self.adapter,
                self.train,
                self.compare,
                self.results,
                self.lora_explainer,
                self.quant_explainer,
            ],
            titles=TABS,
        )
        try:
            device = models.pick_device(config.model.device, config.model.dtype).describe()
        except ValueError as exc:
            device = str(exc)
        header = widgets.HTML(
            f"<style>{CSS}</style><h3 style='margin:4px 0'>LoRA / QLoRA workbench</h3>"
            f"<div>Device: {device} · runs folder: {self.state.runs_dir.resolve()}</div>"
        )
        super().__init__([header, self.tabs])
        self.add_class("wb-app")

    @property
    def config(self) -> RunConfig:
        return self.state.config

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running job (training, generating, evaluating) ends."""
        return self.state.jobs.join(timeout)
