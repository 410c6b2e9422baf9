"""The fast allocator (machine.allocator): which one a new process preloads, decided by WORKBENCH_ALLOCATOR."""

from __future__ import annotations

import pytest


def test_preloading_is_decided_by_the_setting(monkeypatch):
    from workbench.machine import allocator

    tc, mi = "/usr/lib/libtcmalloc_minimal.so.4", "/venv/lib/python3.11/site-packages/cmeel.prefix/lib/libmimalloc.so"
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: tc)
    monkeypatch.setattr(allocator, "mimalloc_path", lambda: mi)
    first = {"tcmalloc": tc, "mimalloc": mi}[allocator.PREFERRED[0]]  # where both are installed
    assert allocator.preload_env({"WORKBENCH_ALLOCATOR": "auto"})["LD_PRELOAD"] == first
    assert allocator.preload_env({"LD_PRELOAD": "/x.so"})["LD_PRELOAD"] == f"{first}:/x.so"
    assert "LD_PRELOAD" not in allocator.preload_env({"WORKBENCH_ALLOCATOR": "system"})
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: None)
    assert allocator.preload_env({})["LD_PRELOAD"] == mi  # PyPI's mimalloc where tcmalloc is not installed
    monkeypatch.setattr(allocator, "mimalloc_path", lambda: None)
    assert "LD_PRELOAD" not in allocator.preload_env({})
    monkeypatch.setenv("WORKBENCH_ALLOCATOR", "fast")
    with pytest.raises(ValueError, match="WORKBENCH_ALLOCATOR must be one of auto, system, limit"):
        allocator.choice()
