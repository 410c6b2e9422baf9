"""Memory measured while work runs, and given back between runs (the estimate is estimator.py's).

On CUDA the allocator's own counters (allocated now / peak since reset); on the CPU the
process resident set size (psutil), sampled by a background thread because tensors live outside
Python's allocator and tracemalloc never sees them. CPU figures are reported above the RSS the
process had when measurement started, so the libraries' own footprint is not charged to a variant.
"""

from __future__ import annotations

import gc
import threading

import psutil
import torch

from .allocator import release_free_memory

GiB = 1024**3
MiB = 1024**2


class MemoryMonitor:
    """Tracks memory of one piece of work (a variant) on one device."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self._proc = psutil.Process()
        self._baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryMonitor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._baseline = self._proc.memory_info().rss
            self._peak = self._baseline
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="workbench-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self._proc.memory_info().rss
            if rss > self._peak:
                self._peak = rss

    def now(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        rss = self._proc.memory_info().rss
        self._peak = max(self._peak, rss)
        return max(0, rss - self._baseline)

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        self.now()
        return max(0, self._peak - self._baseline)

    def stop(self) -> int:
        peak = self.peak()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        return peak

    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def release() -> None:
    """Free what the last piece of work left: collect Python's garbage, empty CUDA's cache, and hand the C
    allocator's free pages back to the OS, so the next variant's memory starts clean (workbench.allocator)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    release_free_memory()
