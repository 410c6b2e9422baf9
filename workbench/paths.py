"""Where the workbench finds what it ships and keeps what it makes. Imports nothing of workbench."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The shipped data/ folder (beside the package in a source checkout), or $WORKBENCH_DATA."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def workbench_home() -> Path:
    """Converted models and other caches: $WORKBENCH_HOME, default ~/.cache/workbench."""
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".cache" / "workbench"))
