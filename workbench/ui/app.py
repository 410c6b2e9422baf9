"""The whole workbench: Setup, Adapter & quantization, Train, Sweep, Compare and Results in one set of tabs,
and the two explainers.

A tab's panel is built when the tab is first opened (or its attribute first read: `app.train`), so the app
appears without waiting for what the later tabs need (the explainers read trained adapters with peft, the
Adapter tab draws its estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets

from workbench.core.config import RunConfig, preset_config
from workbench.core.files import remove_stale_temps
from workbench.ui.state import AppState

# (title, attribute, module, class): one row a tab, in order
PANELS = [
    ("Setup", "setup", "setup", "SetupPanel"),
    ("Adapter & quantization", "adapter", "adapter", "AdapterPanel"),
    ("Train", "train", "train", "TrainPanel"),
    ("Sweep", "sweep", "sweep", "SweepPanel"),
    ("Compare", "compare", "compare", "ComparePanel"),
    ("Results", "results", "results", "ResultsPanel"),
    ("LoRA explained", "lora_explainer", "explain", "LoraExplainer"),
    ("Quantization explained", "quant_explainer", "quant", "QuantExplainer"),
]
TABS = [title for title, *_ in PANELS]
# whole tab titles (lumino's default width cuts "Adapter & quantization"), tables that read well
CSS = """
.wb-app .lm-TabBar-tab { min-width: 120px !important; max-width: none !important; flex: 0 0 auto !important; }
.wb-app table { border-collapse: collapse; font-size: 12px; }
.wb-app td, .wb-app th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; }
"""


def shown_panels(tabs: Sequence[str] | None) -> list[tuple[str, str, str, str]]:
    """The rows of PANELS that `tabs` names (all when None); a name that is no tab raises ValueError."""
    if tabs is None:
        return list(PANELS)
    if isinstance(tabs, str):  # "setup,train" would otherwise be read letter by letter
        tabs = tabs.split(",")
    wanted = {t.strip() for t in tabs if t.strip()}
    known = {attr for _, attr, *_ in PANELS}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"tabs: unknown {unknown[0]!r}; choose from {', '.join(attr for _, attr, *_ in PANELS)}")
    if not wanted:
        raise ValueError("tabs: name at least one tab")
    return [row for row in PANELS if row[1] in wanted]


class Workbench(widgets.VBox):
    """`Workbench()` in a notebook cell shows the app; every panel is also an attribute.

    Defaults are the quickstart preset on the embedded model (the dates task, three variants in a few
    minutes on a laptop CPU); pass a RunConfig, a preset name ("cpu-demo": sentiment) or overrides to
    start elsewhere, e.g.
    `Workbench(overrides={"train": {"steps": 40}})`.

    `tabs` names the tabs to show, by attribute ("setup", "train", "compare", ...; in the app's order
    whatever the order given); default all. A first lesson can leave the explainers or the sweep out.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        *,
        preset: str | None = "quickstart",
        overrides: dict | None = None,
        runs_dir: str | Path | None = None,  # default: WORKBENCH_RUNS, else ./runs
        tabs: Sequence[str] | None = None,
    ):
        from workbench.engine import models

        if config is None:
            config = preset_config(preset, {"model": {"device": "auto"}, **(overrides or {})})
        self.state = AppState(config, runs_dir=runs_dir)
        # what killed writes left in the runs folder over an hour ago (younger ones may be another kernel's); a file
        # this user may not remove (a shared folder) stays, harmlessly
        remove_stale_temps(self.state.runs_dir)
        self._panels: dict[str, widgets.Widget] = {}
        self.shown = shown_panels(tabs)
        self.tabs = widgets.Tab(children=[widgets.VBox() for _ in self.shown], titles=[t for t, *_ in self.shown])
        self.panel(self.shown[0][1])
        self.tabs.observe(self._on_tab, "selected_index")
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

    def panel(self, attribute: str) -> widgets.Widget:
        """The panel of one tab, built on first use and put in its tab."""
        if attribute not in self._panels:
            import importlib

            index = next((i for i, (_, attr, *_) in enumerate(self.shown) if attr == attribute), None)
            if index is None:  # a hidden tab: an error that says so, not a panel nobody can see
                shown = ", ".join(attr for _, attr, *_ in self.shown)
                raise AttributeError(f"the {attribute!r} tab is not shown in this app (tabs: {shown})")
            _, _, module, cls = self.shown[index]
            panel = getattr(importlib.import_module(f"{__package__}.{module}"), cls)(self.state)
            self._panels[attribute] = panel
            self.tabs.children[index].children = [panel]
        return self._panels[attribute]

    def _on_tab(self, change) -> None:
        if change["new"] is not None:
            self.panel(self.shown[change["new"]][1])

    def __getattr__(self, name: str):
        # the panels as attributes (app.train, app.compare, ...), built when first read
        if name in {attr for _, attr, *_ in PANELS} and "_panels" in self.__dict__:
            return self.panel(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def config(self) -> RunConfig:
        return self.state.config

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running job (training, generating, evaluating) ends."""
        return self.state.jobs.join(timeout)
