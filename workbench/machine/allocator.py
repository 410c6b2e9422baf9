"""Which C allocator serves the tensors on the CPU, and starting a process with a fast one.

glibc's malloc lets the memory of freed activations pile up in a fragmented heap (peaks 19-37% above the
tensors' own), and the cure used before, a fixed mmap threshold, gave every step fresh pages to fault in
(1.5-2x slower steps). tcmalloc and mimalloc reuse freed memory without either cost (docs/benchmarks.md,
"Allocators"). One can only be chosen when a process starts (LD_PRELOAD), so `make lab`, `make app` and the
`workbench` command start their processes with one when it is installed: mimalloc from PyPI's cmeel-mimalloc
wheel, which `make setup` installs on Linux x86-64 and aarch64 without root, or tcmalloc from the system
(Debian/Ubuntu: libtcmalloc-minimal4); PREFERRED says which wins where both are.

WORKBENCH_ALLOCATOR chooses: `auto` (default: the fast one when installed, else glibc as it is), `system`
(never preload), or `limit` (glibc with the fixed mmap threshold: the tightest peak, the slowest steps). A process
on glibc as it is gets an estimate for glibc (workbench.engine.estimator, `allocator=`).

This module imports nothing heavy, so the CLI can decide before torch loads.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from pathlib import Path

ENV = "WORKBENCH_ALLOCATOR"
CHOICES = ("auto", "system", "limit")
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
# mimalloc: PyPI's cmeel-mimalloc wheel (Linux x86-64 and aarch64; `make setup` installs it, no root needed) puts
# it under site-packages/cmeel.prefix/lib; Debian's libmimalloc2.0 under the system's lib folders
MIMALLOC_WHEEL = ("cmeel.prefix", "lib", "libmimalloc.so")
MIMALLOC_NAMES = ("libmimalloc.so.2", "libmimalloc.so")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# which fast allocator wins where both are installed (docs/benchmarks.md, "Allocators": bench/bench_allocators.py)
PREFERRED = ("tcmalloc", "mimalloc")
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}; got {value!r}")
    return value


def tcmalloc_path() -> str | None:
    """The installed tcmalloc library, if any."""
    for folder in LIB_DIRS:
        for name in TCMALLOC_NAMES:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def mimalloc_path() -> str | None:
    """mimalloc from the PyPI wheel in this environment, else an installed system one, if any."""
    for folder in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]):
        if folder and Path(folder, *MIMALLOC_WHEEL).is_file():
            return str(Path(folder, *MIMALLOC_WHEEL))
    for folder in LIB_DIRS:
        for name in MIMALLOC_NAMES:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def fast_path() -> str | None:
    """The allocator a process should start with: the first of PREFERRED that is installed."""
    for name in PREFERRED:
        path = {"tcmalloc": tcmalloc_path, "mimalloc": mimalloc_path}[name]()
        if path:
            return path
    return None


def in_use() -> str:
    """tcmalloc, mimalloc, jemalloc or glibc (or system, where /proc cannot tell: macOS, Windows)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "system"
    for name in ("tcmalloc", "mimalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc"


def current() -> str:
    """The allocator as results record it (configure()'s answer), without changing anything: for the estimate."""
    name = in_use()
    return "glibc (mmap threshold fixed)" if name == "glibc" and choice() == "limit" else name


def preload_env(env: dict | None = None) -> dict:
    """A copy of env (default os.environ) that starts a child process with the fast allocator (fast_path), when
    one is installed and WORKBENCH_ALLOCATOR is auto; otherwise the env unchanged."""
    env = dict(os.environ if env is None else env)
    path = fast_path()
    if env.get(ENV, "auto").strip().lower() in ("", "auto") and path and path not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
    return env


def reexec_with_fast_allocator(argv: list[str]) -> None:
    """Start this program again with the fast allocator preloaded, when one is installed and not in use yet
    (returns when there is nothing to do). Called by the CLI before anything heavy is imported."""
    if sys.platform != "linux" or choice() != "auto" or in_use() != "glibc" or os.environ.get("_WORKBENCH_REEXEC"):
        return
    env = preload_env()
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return  # no fast allocator here
    env["_WORKBENCH_REEXEC"] = "1"  # once: never a loop, whatever the loader did
    os.execve(sys.executable, [sys.executable, *argv], env)


def configure() -> str:
    """Apply WORKBENCH_ALLOCATOR in this process (idempotent): with `limit` on glibc, fix the mmap threshold so
    freed tensor memory goes back to the OS at once. Returns the allocator in use, as results record it."""
    name = in_use()
    if name == "glibc" and choice() == "limit":
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            return name
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
            return "glibc (mmap threshold fixed)"
    return name


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the OS (between runs: the next one's memory starts clean)."""
    name = in_use()
    try:
        if name == "tcmalloc":
            ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory()
        elif name == "mimalloc":
            ctypes.CDLL(None).mi_collect(ctypes.c_bool(True))
        elif name == "glibc":
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
