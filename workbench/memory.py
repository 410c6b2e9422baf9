"""Memory measured while work runs, and given back between runs (the estimate is estimator.py's).

On CUDA the allocator's own counters (allocated now / peak since reset). On the CPU the process's
resident set size: tensors live outside Python's allocator, so tracemalloc never sees them. Its peak is
the kernel's own high-water mark (VmHWM in /proc/self/status, reset through /proc/self/clear_refs), exact
and free; where the kernel does not offer that (not Linux), a background thread samples the RSS every
5 ms. CPU figures are reported above the RSS the process had when measurement started, so the libraries'
own footprint is not charged to a variant.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import psutil
import torch

from .allocator import release_free_memory

GiB = 1024**3
MiB = 1024**2


STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
_live: list[MemoryMonitor] = []  # CPU monitors running now: a reset of the kernel's peak is folded into each
_lock = threading.Lock()


def _kernel_peak() -> int | None:
    """The process's peak RSS since the last reset (VmHWM), in bytes; None where the kernel does not say."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_kernel_peak() -> bool:
    """Start the kernel's peak again from the current RSS (Linux: "5" to clear_refs); False where it cannot.
    Every running monitor first keeps the peak so far, so monitors can nest."""
    with _lock:
        peak = _kernel_peak()
        if peak is None:
            return False
        for m in _live:
            m._peak = max(m._peak, peak)
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return True


class MemoryMonitor:
    """Tracks memory of one piece of work (a variant) on one device."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval  # the sampling period, where the kernel keeps no peak of its own
        self._proc = psutil.Process()
        self._baseline = 0
        self._peak = 0
        self._kernel = False  # the peak is the kernel's high-water mark (no sampling thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryMonitor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._kernel = _reset_kernel_peak()
        self._baseline = self._proc.memory_info().rss
        self._peak = self._baseline
        if self._kernel:
            with _lock:
                _live.append(self)
        else:
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
        if self._kernel:
            self._peak = max(self._peak, _kernel_peak() or 0)
        return max(0, self._peak - self._baseline)

    def stop(self) -> int:
        """The peak, and the monitor ended (stopping twice is harmless)."""
        peak = self.peak()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        with _lock:
            if self in _live:
                _live.remove(self)
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
