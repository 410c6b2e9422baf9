"""Runs take turns for memory: one admission ledger a machine, an SQLite file in $WORKBENCH_HOME.

Thirty kernels started in the same minute all see the same free memory; each checking it alone, all of them
load. So every run, from a kernel, the page or the CLI, reserves its estimated peak in the ledger before it
loads anything, and waits in line (first come, first served) while the reservations of the runs already going
would not leave room for it. Finishing, a Stop, an error or a killed process gives the reservation back (a
dead process's is dropped by the next run that looks). On the CPU the runs admitted together also split the
cores: at most one run a core, each with its share of torch's threads.

SQLite because it is in the standard library and its transactions are the lock: `BEGIN IMMEDIATE` lets one
process at a time decide, across kernels and users' processes that share the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from workbench.core.paths import workbench_home
from workbench.machine import memory

LEDGER_FILE = "admission.sqlite"
POLL_S = 0.5  # how often a waiting run looks again
KEEP_FINISHED_S = 7 * 24 * 3600  # finished runs kept this long: their durations give the estimated start
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    born REAL NOT NULL,          -- the process's start time: a pid the system gave again is not the same run
    device TEXT NOT NULL,        -- cpu, cuda:0, ...
    bytes INTEGER NOT NULL,      -- the estimated peak it reserves
    base INTEGER NOT NULL DEFAULT 0,  -- what the process held when admitted (the CPU's growth is counted above it)
    label TEXT NOT NULL DEFAULT '',
    queued REAL NOT NULL,
    admitted REAL,               -- NULL while it waits
    released REAL                -- NULL while it waits or runs
)
"""


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


@dataclass(frozen=True)
class Place:
    """Where a waiting run stands: its place in line, the runs going now and when it may start."""

    position: int  # 1: next
    running: int
    reserved: int  # bytes the runs going now reserved
    eta_s: float | None  # estimated seconds until it starts (None before any run on this device has finished)

    def text(self) -> str:
        when = f", about {max(1, round(self.eta_s / 60))} min" if self.eta_s is not None else ""
        return (
            f"waiting for its turn: {ordinal(self.position)} in line{when} ({self.running} run"
            f"{'s' if self.running != 1 else ''} going, {self.reserved / 2**30:.1f} GiB reserved)"
        )


def _born(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return 0


def cpu_slots() -> int:
    """Runs that may go at once on the CPU: one a core this process may use, or $WORKBENCH_RUNS_AT_ONCE."""
    chosen = os.environ.get("WORKBENCH_RUNS_AT_ONCE", "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"WORKBENCH_RUNS_AT_ONCE must be a whole number of at least 1; got {chosen!r}")
        return int(chosen)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no affinity: every core
        return max(1, os.cpu_count() or 1)


class Ledger:
    """The machine's runs and their reservations. `path`: the SQLite file (default $WORKBENCH_HOME/admission.sqlite);
    `free`: what a device has free now (memory.available_bytes); `slots`: how many CPU runs may go at once."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        free: Callable[[str], int | None] | None = None,
        slots: int | None = None,
    ):
        self.path = Path(path) if path else workbench_home() / LEDGER_FILE
        self.free = free or _free
        self.slots = slots or cpu_slots()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the ledger, closed after; statements outside BEGIN commit as they run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")  # no -wal side files: the ledger may sit on a shared mount
            db.executescript(SCHEMA)
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _drop_dead(self, db: sqlite3.Connection, now: float) -> None:
        """Runs whose process is gone (killed, or a kernel restarted) give their reservation back."""
        for row_id, pid, born in db.execute("SELECT id, pid, born FROM runs WHERE released IS NULL").fetchall():
            alive = _born(pid)
            if alive is None or abs(alive - born) > 1.0:
                db.execute("UPDATE runs SET released = ? WHERE id = ?", (now, row_id))
        db.execute("DELETE FROM runs WHERE released IS NOT NULL AND released < ?", (now - KEEP_FINISHED_S,))

    def _going(self, db: sqlite3.Connection, device: str) -> list[tuple]:
        return db.execute(
            "SELECT id, pid, bytes, base, admitted FROM runs WHERE device = ? AND admitted IS NOT NULL "
            "AND released IS NULL",
            (device,),
        ).fetchall()

    def _still_to_take(self, going: list[tuple], device: str) -> int:
        """What the runs going now may still take on top of what they hold. On the CPU each one's growth is
        read from its process (its reservation less what it grew by); a GPU's use by process is not known
        here, so there each reservation counts whole (safe: at worst runs take turns that could have shared)."""
        if not device.startswith("cpu"):
            return sum(b for _, _, b, _, _ in going)
        return sum(max(0, b - max(0, _rss(pid) - base)) for _, pid, b, base, _ in going)

    def held(self, device: str) -> int:
        """What the runs going now hold above what their processes held when admitted: memory that comes back
        when they end (a run that could never fit is told against what is free plus this)."""
        with self._db() as db:
            going = self._going(db, device)
        if not device.startswith("cpu"):
            return sum(b for _, _, b, _, _ in going)
        return sum(max(0, _rss(pid) - base) for _, pid, _, base, _ in going)

    def _eta(self, db: sqlite3.Connection, device: str, going: list[tuple], ahead: int, now: float) -> float | None:
        """When a run with `ahead` runs before it may start: each going run ends after the median duration of
        the finished ones, and the runs ahead take the first slots freed (memory aside)."""
        done = db.execute(
            "SELECT released - admitted FROM runs WHERE device = ? AND admitted IS NOT NULL AND released IS NOT NULL "
            "ORDER BY released DESC LIMIT 20",
            (device,),
        ).fetchall()
        if not done:
            return None
        typical = statistics.median(d for (d,) in done)
        ends = sorted(max(0.0, adm + typical - now) for *_, adm in going) or [0.0]
        for _ in range(ahead):
            ends.sort()
            ends[0] += typical
        return min(ends)

    def reserve(
        self,
        nbytes: int,
        device: str = "cpu",
        label: str = "",
        *,
        on_wait: Callable[[Place], None] | None = None,
        stop: threading.Event | None = None,
    ) -> Ticket | None:
        """Wait in line until `nbytes` fit beside the runs going now (and, on the CPU, a core is free), then hold
        them. None when `stop` was set while waiting (nothing was held). `on_wait(Place)` is told where the run
        stands whenever that changes."""
        pid = os.getpid()
        born = _born(pid) or time.time()
        with self._db() as db:
            row_id = db.execute(
                "INSERT INTO runs (pid, born, device, bytes, label, queued) VALUES (?, ?, ?, ?, ?, ?)",
                (pid, born, device, int(nbytes), label[:200], time.time()),
            ).lastrowid
        told = None
        try:
            while True:
                place = self._try_admit(row_id, device, int(nbytes))
                if place is None:
                    return Ticket(self, row_id, device)
                if on_wait and place != told:
                    on_wait(place)
                    told = place
                if stop is not None and stop.wait(POLL_S):
                    self._release(row_id)
                    return None
                if stop is None:
                    time.sleep(POLL_S)
        except BaseException:  # an interrupt while waiting: out of the line
            self._release(row_id)
            raise

    def _try_admit(self, row_id: int, device: str, nbytes: int) -> Place | None:
        """Admit the run if it is first in line and fits (None), or say where it stands."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # one process decides at a time
            now = time.time()
            self._drop_dead(db, now)
            ahead = db.execute(
                "SELECT COUNT(*) FROM runs WHERE device = ? AND admitted IS NULL AND released IS NULL AND id < ?",
                (device, row_id),
            ).fetchone()[0]
            going = self._going(db, device)
            free = self.free(device)
            # a run with none going beside it goes: waiting would free nothing (whether it fits at all was decided
            # before it queued, compare.check_fit, or skipped on purpose)
            room = free is None or not going or nbytes + self._still_to_take(going, device) <= free
            core = not device.startswith("cpu") or len(going) < self.slots
            if ahead == 0 and room and core:
                db.execute(
                    "UPDATE runs SET admitted = ?, base = ? WHERE id = ?",
                    (now, _rss(os.getpid()) if device.startswith("cpu") else 0, row_id),
                )
                db.execute("COMMIT")
                return None
            eta = self._eta(db, device, going, ahead, now)
            db.execute("COMMIT")
            return Place(ahead + 1, len(going), sum(b for _, _, b, _, _ in going), eta)

    def _release(self, row_id: int) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET released = ? WHERE id = ? AND released IS NULL", (time.time(), row_id))

    def going(self, device: str = "cpu") -> int:
        """How many runs are going on a device now (dead processes' reservations dropped first)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            self._drop_dead(db, time.time())
            n = len(self._going(db, device))
            db.execute("COMMIT")
            return n

    def waiting(self, device: str = "cpu") -> list[str]:
        """The labels of the runs waiting on a device, first in line first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT label FROM runs WHERE device = ? AND admitted IS NULL AND released IS NULL ORDER BY id",
                (device,),
            ).fetchall()
        return [label for (label,) in rows]


class Ticket:
    """A run's admission: hold it while the run goes (`with ticket:`), release it at the end."""

    def __init__(self, ledger: Ledger, row_id: int, device: str):
        self.ledger, self.id, self.device = ledger, row_id, device
        self.released = False

    def threads(self, wanted: int) -> int:
        """This run's share of the cores: the cores split between the CPU runs going now, at most `wanted`."""
        if not self.device.startswith("cpu"):
            return wanted
        return max(1, min(wanted, self.ledger.slots // max(1, self.ledger.going(self.device))))

    def release(self) -> None:
        if not self.released:
            self.ledger._release(self.id)
            self.released = True
            if self.device.startswith("cpu") and _STARTED_THREADS:  # the kernel's own work gets every core again
                import torch

                torch.set_num_threads(_STARTED_THREADS)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _free(device: str) -> int | None:
    kind = device.split(":")[0]
    return memory.available_bytes(kind, device if kind == "cuda" else None)


def device_key(device) -> str:
    """The ledger's name of a torch device: cpu, or cuda:N (each GPU has a line of its own)."""
    text = str(device)
    if text == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return text


# --------------------------------------------------------------------------- a run's turn

_STARTED_THREADS: int | None = None  # torch's threads before any run took its share of the cores


def enabled() -> bool:
    """Whether runs take turns (WORKBENCH_ADMISSION=off: each checks the free memory alone, as before)."""
    return os.environ.get("WORKBENCH_ADMISSION", "on").strip().lower() not in ("off", "0", "no", "false")


def take_turn(
    peak: int, device, label: str, status: Callable[[str], None], stop: threading.Event | None
) -> Ticket | None:
    """Wait for this run's turn on its device and hold its estimated `peak` (bytes) until the ticket is released;
    on the CPU the run then takes its share of the cores. None when runs do not take turns, or when `stop` was
    set while it waited (nothing is held then)."""
    if not enabled():
        return None
    ledger = Ledger()
    try:
        ticket = ledger.reserve(peak, device_key(device), label, on_wait=lambda p: status(p.text()), stop=stop)
    except (OSError, sqlite3.Error) as exc:  # a read-only home, say: the run goes, checked against free memory alone
        status(f"this run does not take turns with the machine's others: {ledger.path} cannot be used ({exc})")
        return None
    share_cores(ticket)
    return ticket


def share_cores(ticket: Ticket | None) -> None:
    """This run's share of torch's threads on the CPU: the cores split between the runs going now (as each
    variant starts, so a run alone again takes every core)."""
    global _STARTED_THREADS
    if ticket is None or not ticket.device.startswith("cpu"):
        return
    import torch

    if _STARTED_THREADS is None:
        _STARTED_THREADS = torch.get_num_threads()
    torch.set_num_threads(ticket.threads(_STARTED_THREADS))


def held_by_runs(device) -> int:
    """What the runs going on a device hold and will give back: a run is refused at once only when it would not
    fit even then."""
    if not enabled():
        return 0
    try:
        return Ledger().held(device_key(device))
    except (OSError, sqlite3.Error):  # no ledger to read: as if no run were going
        return 0
