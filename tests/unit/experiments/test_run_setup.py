"""A run's setup (experiments.run_setup): the fit check counts every process that loads at once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workbench.experiments import run_setup
from workbench.machine import memory

MiB = 2**20


def _setup(estimate: int) -> SimpleNamespace:
    return SimpleNamespace(
        choice=SimpleNamespace(type="cpu", device="cpu"),
        cfg=SimpleNamespace(variants=["lora"]),
        estimate=lambda n: estimate,
    )


def test_check_fit_counts_every_process_that_loads_at_once(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1000 * MiB)
    assert run_setup.check_fit(_setup(600 * MiB)) == []  # one process: 600 of 1,000 MiB
    with pytest.raises(ValueError) as caught:
        run_setup.check_fit(_setup(600 * MiB), sharing=2)
    assert str(caught.value).startswith(
        "memory: lora in 2 processes needs about 1,200 MiB and 1,000 MiB are free, so it will not fit: choose"
    )
