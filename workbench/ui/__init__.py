"""Notebook panels (ipywidgets): the only part of workbench that imports ipywidgets.

    from workbench.ui import Workbench
    Workbench()

Every panel can also be shown alone: SetupPanel(), AdapterPanel(), TrainPanel(), ComparePanel(),
ResultsPanel(), and the explainers LoraExplainer() and QuantExplainer(); pass one AppState to several
panels to make them share settings.
"""

from .adapter import AdapterPanel
from .app import Workbench
from .compare import ComparePanel
from .explain import LoraExplainer
from .quant import QuantExplainer
from .results import ResultsPanel
from .setup import SetupPanel
from .state import AppState
from .train import TrainPanel

__all__ = [
    "Workbench",
    "AppState",
    "SetupPanel",
    "AdapterPanel",
    "TrainPanel",
    "ComparePanel",
    "ResultsPanel",
    "LoraExplainer",
    "QuantExplainer",
]
