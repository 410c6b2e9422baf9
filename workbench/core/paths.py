"""Where the workbench finds what it ships and keeps what it makes. Imports nothing of workbench.

What it ships (the tasks, the general text, the model configs and the notebooks) lives in data/ and notebooks/
at the top of a source checkout; a wheel carries them inside the package as workbench/_data and
workbench/_notebooks (pyproject.toml maps them there), found through importlib.resources.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # workbench/core/paths.py -> the checkout

# the folder the embedded model is converted into, under workbench_home()/models; a run made from it says so
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct-Q4_1-dequantized"


def _shipped(packaged: str, checkout: str) -> Path:
    """A shipped folder: inside the installed package when a wheel put it there, else the checkout's."""
    inside = Path(str(files("workbench") / packaged))  # an editable install's package is the checkout's folder
    return inside if inside.is_dir() else CHECKOUT / checkout


def data_dir() -> Path:
    """The shipped tasks, texts and model configs, or $WORKBENCH_DATA."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else _shipped("_data", "data")


def notebooks_dir() -> Path:
    """The shipped notebooks (`workbench notebooks DIR` copies them out; `workbench app` serves app.ipynb)."""
    return _shipped("_notebooks", "notebooks")


def workbench_home() -> Path:
    """Converted models and other caches: $WORKBENCH_HOME, default ~/.cache/workbench."""
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".cache" / "workbench"))
