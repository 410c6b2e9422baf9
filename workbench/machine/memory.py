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

from workbench.machine.allocator import release_free_memory

GiB = 1024**3
MiB = 1024**2


STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
live: list[MemoryMonitor] = []  # CPU monitors running now: a reset of the kernel's peak is folded into each
_lock = threading.Lock()


def kernel_peak() -> int | None:
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
        peak = kernel_peak()
        if peak is None:
            return False
        for m in live:
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
                live.append(self)
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
            self._peak = max(self._peak, kernel_peak() or 0)
        return max(0, self._peak - self._baseline)

    def stop(self) -> int:
        """The peak, and the monitor ended (stopping twice is harmless)."""
        peak = self.peak()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        with _lock:
            if self in live:
                live.remove(self)
        return peak

    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def release() -> None:
    """Free what the last piece of work left: collect Python's garbage, empty CUDA's cache, and hand the C
    allocator's free pages back to the OS, so the next variant's memory starts clean (workbench.machine.allocator)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    release_free_memory()


# --------------------------------------------------------------------------- will it fit


FITS, TIGHT, WONT_FIT = "fits", "tight", "will not fit"
# an estimate above this share of what is free is tight: the estimator is within about ±5% here, and the rest
# of the machine (a browser, the other students' kernels) moves while a run goes
TIGHT_SHARE = 0.85
WHAT_TO_CHANGE = "a smaller batch or sequence length, 4 bits, gradient checkpointing or a lower rank"
CGROUP = Path("/sys/fs/cgroup")


def _cgroup_free() -> int | None:
    """What this container may still allocate (cgroup v2 memory.max less memory.current); None without a limit.
    A JupyterHub or Docker limit is often far below the machine's free RAM, which is all psutil sees."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((CGROUP / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_bytes(device_type: str, device: torch.device | str | None = None) -> int | None:
    """Memory a new piece of work may still take on a device: free RAM (within the container's limit) on the
    CPU, free plus this process's cached blocks on CUDA; None where it cannot be known (MPS)."""
    if device_type == "cuda":
        try:
            dev = torch.device(device or "cuda")
            free, _total = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except (RuntimeError, ValueError, AssertionError):  # no driver to ask: unknown, so nothing is refused
            return None
    if device_type != "cpu":
        return None
    free = int(psutil.virtual_memory().available)
    limited = _cgroup_free()
    return free if limited is None else min(free, limited)


def fit(estimated: int, available: int | None) -> str:
    """fits, tight or will not fit: an estimated peak against what the device has free (None: unknown, fits)."""
    if available is None:
        return FITS
    if estimated > available:
        return WONT_FIT
    return TIGHT if estimated > TIGHT_SHARE * available else FITS


def fit_message(needs: dict[str, int], available: int, verdict: str) -> str:
    """One sentence on the variants that will not fit (or are tight), with what to change."""
    parts = [
        f"{name} {'needs about' if i == 0 else 'about'} {n / MiB:,.0f} MiB" for i, (name, n) in enumerate(needs.items())
    ]
    need = ", ".join(parts) + f" and {available / MiB:,.0f} MiB are free"
    they = "it" if len(needs) == 1 else "they"
    if verdict == WONT_FIT:
        return f"{need}, so {they} will not fit: choose {WHAT_TO_CHANGE}"
    return f"{need}, which is tight: close other work or choose {WHAT_TO_CHANGE}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is the device running out of memory (CUDA's, MPS's or the CPU allocator's)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
