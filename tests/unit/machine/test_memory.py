"""Measured memory (machine.memory): the CPU monitor (the kernel's peak, or a sampling thread), the fit verdicts
against free memory (the container's limit counted), out of memory recognised."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from workbench.machine import memory
from workbench.machine.memory import MemoryMonitor, MiB


def _resident(n_bytes: int):
    """n_bytes of fresh pages, every one touched, straight from the kernel (mmap): a C allocator's cache of
    freed memory (what earlier tests left) cannot serve them without the RSS growing."""
    import mmap

    block = mmap.mmap(-1, n_bytes)
    for offset in range(0, n_bytes, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_memory_monitor_cpu_sees_a_short_lived_allocation():
    mon = MemoryMonitor("cpu").start()
    try:
        assert mon.peak() < 100 * MiB
        big = _resident(200 * MiB)
        time.sleep(0.1)  # give the sampling thread (where there is one) a few 5 ms ticks
        during = mon.now()
        big.close()
        del big
        time.sleep(0.05)
        peak = mon.peak()
        assert during >= 150 * MiB
        assert peak >= 150 * MiB  # still there after the tensor is gone: the thread saw it
        assert peak >= mon.now()
    finally:
        final = mon.stop()
    assert final >= 150 * MiB
    assert mon._thread is None


def test_memory_monitor_context_manager(monkeypatch):
    with MemoryMonitor("cpu") as mon:
        assert mon.now() >= 0 and mon.peak() >= 0
    assert mon._thread is None
    # where the kernel keeps no peak (not Linux), a thread samples the RSS instead
    monkeypatch.setattr(memory, "STATUS", Path("/nonexistent/status"))
    with MemoryMonitor("cpu") as mon:
        assert not mon._kernel and mon._thread is not None and mon._thread.is_alive()
    assert mon._thread is None


@pytest.mark.skipif(memory.kernel_peak() is None, reason="the kernel keeps no peak RSS here (not Linux)")
def test_the_kernel_peak_catches_what_sampling_misses_and_monitors_nest():
    """On Linux the peak is VmHWM: exact, with no thread. A spike freed before any sampler could look is
    still counted, and a monitor started inside another keeps the outer one's peak."""
    outer = MemoryMonitor("cpu").start()
    assert outer._kernel and outer._thread is None
    _resident(200 * MiB).close()  # touched and freed at once, no sleep for a sampler to see it
    inner = MemoryMonitor("cpu").start()  # resets the kernel's peak: the outer keeps what it had
    small = _resident(20 * MiB)
    assert 15 * MiB <= inner.peak() < 100 * MiB
    assert outer.peak() >= 150 * MiB
    small.close()
    assert 15 * MiB <= inner.stop() < 100 * MiB and outer.stop() >= 150 * MiB
    assert outer not in memory.live and inner not in memory.live


def test_mib_and_gib():
    assert memory.MiB == 2**20 and memory.GiB == 2**30


def test_fit_verdicts_against_free_memory():
    assert memory.fit(100 * MiB, None) == memory.FITS  # unknown (MPS): not refused
    assert memory.fit(100 * MiB, 1000 * MiB) == memory.FITS
    assert memory.fit(900 * MiB, 1000 * MiB) == memory.TIGHT
    assert memory.fit(1001 * MiB, 1000 * MiB) == memory.WONT_FIT
    text = memory.fit_message({"lora": 2000 * MiB}, 1000 * MiB, memory.WONT_FIT)
    assert text.startswith("lora needs about 2,000 MiB and 1,000 MiB are free, so it will not fit: choose a smaller")
    both = memory.fit_message({"lora": 2000 * MiB, "lora8": 1500 * MiB}, 1000 * MiB, memory.WONT_FIT)
    assert both.startswith("lora needs about 2,000 MiB, lora8 about 1,500 MiB and 1,000 MiB are free, so they")


def test_free_memory_is_read_from_the_machine_and_the_container(monkeypatch, tmp_path):
    assert memory.available_bytes("cpu") > 0
    assert memory.available_bytes("mps") is None  # unknown: the check lets it run
    monkeypatch.setattr(memory.psutil, "virtual_memory", lambda: type("VM", (), {"available": 2000 * MiB})())
    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    assert memory.available_bytes("cpu") == 2000 * MiB  # no cgroup files: the machine's free RAM
    (tmp_path / "memory.max").write_text(f"{600 * MiB}\n")  # a container limit below the machine's free RAM
    (tmp_path / "memory.current").write_text(f"{100 * MiB}\n")
    assert memory.available_bytes("cpu") == 500 * MiB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.available_bytes("cpu") == 2000 * MiB


def test_is_out_of_memory():
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert memory.is_out_of_memory(MemoryError())
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not memory.is_out_of_memory(ValueError("out of memory"))
