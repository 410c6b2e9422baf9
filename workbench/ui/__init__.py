"""Notebook panels (ipywidgets): the only part of workbench that imports ipywidgets.

    from workbench.ui import Workbench
    Workbench()

Every panel can also be shown alone: SetupPanel(), AdapterPanel(), TrainPanel(), SweepPanel(), ComparePanel(),
ResultsPanel(), and the explainers LoraExplainer() and QuantExplainer(); pass one AppState to several
panels to make them share settings.
"""

# each name is imported on first use: `from workbench.ui import Workbench` loads only what the app needs to
# appear (its tabs import their panels when opened)
_WHERE = {
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
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
