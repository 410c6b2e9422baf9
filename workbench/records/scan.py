"""Reading a runs folder back: every run under it as result rows (the Results tab, the class's view, a sweep's
points on disk), the folders that cannot be read named with why, and a cache of what was read keyed by each
run's files, so a class's folder of hundreds of runs is not read again on every look.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.files import write_bytes
from workbench.core.paths import workbench_home
from workbench.records.results import VariantResult, first_line
from workbench.records.runs import RESULT_FIELDS, RESULTS_FILE, Run


def find_runs(root: Path) -> list[Run]:
    """Finished runs under root (and one level deeper, as sweeps write them), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for pattern in (f"*/{RESULTS_FILE}", f"*/*/{RESULTS_FILE}") for p in root.glob(pattern)}

    def written(folder: Path) -> float:
        try:
            return (folder / RESULTS_FILE).stat().st_mtime
        except OSError:  # removed since the glob (another kernel tidying a shared folder)
            return 0.0

    return [Run(p) for p in sorted(found, key=written, reverse=True)]


@dataclass
class ResultRow:
    """One variant of one run on disk, with what the Results table says of its run."""

    run: str  # the folder, relative to the runs root
    finished: str
    task: str | None
    device: str | None
    steps: int | None  # steps asked for
    quant_type: str | None  # the 4-bit type, for a 4-bit variant
    result: VariantResult
    not_run: tuple[str, ...] = ()  # variants the run was asked for and never ran (stopped before them)
    user: str = ""  # who made the run (blank for runs from before names were kept)
    config: dict = field(default_factory=dict, repr=False, compare=False)  # its run's settings, as written
    adapters: tuple[str, ...] = ()  # the variants whose adapter its run saved

    CONTEXT = ("run", "user", "finished", "task", "device", "steps", "quant_type", "not_run")

    @classmethod
    def field_names(cls) -> list[str]:
        return [*cls.CONTEXT, *RESULT_FIELDS]

    def to_dict(self) -> dict:
        row = {**{k: getattr(self, k) for k in self.CONTEXT}, **self.result.to_dict()}
        row["not_run"] = "+".join(self.not_run)
        return row

    @property
    def steps_text(self) -> str:
        """Steps done of steps asked ("4 of 30"), blank for a variant that does not train."""
        done = self.result.steps_done
        if done is None:
            return ""
        return f"{done}" if done == self.steps or self.steps is None else f"{done} of {self.steps}"

    @property
    def status_text(self) -> str:
        """The variant's status, and, on a stopped run, which variants never ran."""
        status = self.result.status or ""
        if status == "stopped" and self.not_run:
            return f"stopped ({'+'.join(self.not_run)} not run)"
        return status


@dataclass(frozen=True)
class Unreadable:
    """A folder under the runs root that looks like a run and cannot be read as one, and why."""

    run: str  # the folder, relative to the runs root
    reason: str


# what marks a folder as a run's, finished or not (a sweep's own folder holds only run folders and sweep.csv)
RUN_MARKS = (RESULTS_FILE, "metrics.csv", "adapters")


def rows_of(run: Run, root: Path) -> list[ResultRow]:
    """The Results rows of one run; ValueError (with the reason) when it cannot be read as this version's."""
    try:
        doc = run.read()
        when = run.finished_at()
    except UnicodeDecodeError:
        raise ValueError(f"{RESULTS_FILE} is not text (damaged)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{RESULTS_FILE} is damaged: {exc.msg} at line {exc.lineno}") from None
    except OSError as exc:
        raise ValueError(f"{RESULTS_FILE} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, OverflowError) as exc:  # the layout (check_run_doc), or a date no clock gives
        raise ValueError(f"{RESULTS_FILE}: {first_line(exc)}") from None
    try:
        cfg = run.config()
        results = run.results()
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"written by another version of the workbench: {str(exc).splitlines()[0]}") from None
    ran = {r.name for r in results}
    not_run = tuple(v for v in cfg.variants if v not in ran)
    adapters = tuple(run.trained_variants())
    return [
        ResultRow(
            run=str(run.path.relative_to(root)),
            finished=when,
            task=doc.get("task"),
            device=doc.get("device"),
            steps=cfg.train.steps,
            quant_type=cfg.quant.quant_type if r.bits == 4 else None,
            result=r,
            not_run=not_run,
            user=str(doc.get("user") or ""),
            config=doc["config"],
            adapters=adapters,
        )
        for r in results
    ]


# Results at class scale (a class's folder holds a thousand runs): each run is read once and kept, in memory and
# in $WORKBENCH_HOME/scan, under what changes when it is rewritten; a scan reads again only what changed.
SCAN_CACHE_VERSION = 1
scanned: dict[str, dict[str, tuple[tuple, list[ResultRow] | str]]] = {}


def _stamp(run: Run) -> tuple:
    """What changes when a run is rewritten: its results.json's size, time and inode (an atomic write makes a new
    file, where two writes in one tick of the file system's clock could keep the time), and its adapters' time."""
    st = run.results_file.stat()
    try:
        adapters = (run.path / "adapters").stat().st_mtime_ns
    except OSError:
        adapters = 0
    return (st.st_size, st.st_mtime_ns, st.st_ino, adapters)


def scan_cache_file(root: Path) -> Path:
    return workbench_home() / "scan" / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]}.pickle"


def _load_scan_cache(root: Path) -> dict:
    """The scan kept on disk for root ({} when there is none, it is another version's, or it is not safe)."""
    path = scan_cache_file(root)
    try:
        st = path.stat()
        # a pickle runs code as it loads: only one this user wrote and nobody else can change
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return {}
        doc = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - missing, damaged or from another version: scan afresh
        return {}
    ok = isinstance(doc, dict) and doc.get("version") == SCAN_CACHE_VERSION and doc.get("root") == str(root.resolve())
    return doc["entries"] if ok and isinstance(doc.get("entries"), dict) else {}


def _save_scan_cache(root: Path, entries: dict) -> None:
    doc = {"version": SCAN_CACHE_VERSION, "root": str(root.resolve()), "entries": entries}
    try:
        path = scan_cache_file(root)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes(path, pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL))
        path.chmod(0o600)
    except OSError:  # a read-only home: the scan still works, it is only not kept for the next kernel
        pass


def scan(root: Path) -> tuple[list[ResultRow], list[Unreadable]]:
    """Every run under root (one level deep, or two as sweeps write them): the rows of those that can be read,
    newest first, and the folders that cannot, each with its reason (damaged, from another version, or
    incomplete: still running, or killed before it wrote its results)."""
    root = Path(root)
    if not root.is_dir():
        return [], []
    rows: list[ResultRow] = []
    bad: list[Unreadable] = []
    found = find_runs(root)
    key = str(root.resolve())
    if key not in scanned:
        scanned[key] = _load_scan_cache(root)
    kept, now, changed = scanned[key], {}, False
    for run in found:
        rel = str(run.path.relative_to(root))
        try:
            stamp = _stamp(run)
        except OSError:  # removed since find_runs (another kernel tidying a shared folder)
            continue
        if rel in kept and kept[rel][0] == stamp:
            read = kept[rel][1]
        else:
            try:
                read = rows_of(run, root)
            except ValueError as exc:
                read = str(exc)
            changed = True
        now[rel] = (stamp, read)
        if isinstance(read, str):
            bad.append(Unreadable(rel, read))
        else:
            rows.extend(read)
    if changed or len(now) != len(kept):
        scanned[key] = now
        _save_scan_cache(root, now)
    finished = {run.path for run in found}
    for pattern in ("*/", "*/*/"):
        for folder in sorted(root.glob(pattern)):
            if folder.name.startswith(".") or folder.parent.name.startswith(".") or folder in finished:
                continue  # temp folders of atomic writes are dot-named
            if not (folder / RESULTS_FILE).exists() and any((folder / m).exists() for m in RUN_MARKS):
                reason = "incomplete: no results yet (still running, or stopped by a crash before it wrote them)"
                bad.append(Unreadable(str(folder.relative_to(root)), reason))
    return rows, bad


def all_results(root: Path) -> list[ResultRow]:
    """One row per variant of every readable run under root (scan gives the unreadable ones and why)."""
    return scan(root)[0]
