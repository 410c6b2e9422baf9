"""Files written whole or not at all: a temp file beside the target, then os.replace.

A crash, a Stop or a full disk never leaves a half-written results table, figure or adapter behind.
This is the ground floor: it imports nothing of workbench, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def check_writable_dir(path: Path, what: str = "out") -> Path:
    """Refuse, before any work, a folder that cannot be made or written (a file in the way, no permission, a
    read-only filesystem, /proc). Raises ValueError with what to do; leaves nothing behind."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what}: {probe} is a file, so {path} cannot be a folder; choose another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {probe} is not writable, so {path} cannot be made there; choose another folder")
    # access() says yes to root everywhere but on a read-only mount, and /proc or /sys say yes and then refuse
    # every mkdir: only making a folder and a file in it proves it. The probe is a folder of its own, uniquely
    # named, in the nearest folder that exists, so processes checking one path at once (a launcher's ranks)
    # never make or remove each other's folders; it is removed again.
    try:
        folder = tempfile.mkdtemp(prefix=".workbench-probe.", dir=probe)
        try:
            fd, tmp = tempfile.mkstemp(dir=folder)
            os.close(fd)
            os.unlink(tmp)
        finally:
            os.rmdir(folder)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ValueError(f"{what}: {path} cannot be made or written there ({why}); choose another folder") from None
    return path


def _umask() -> int:
    """The process's umask (read from /proc where it can be: setting it to read it back is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tmp_beside(path: Path, suffix: str = "") -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    # mkstemp makes the file 0600; the file it becomes follows the umask, as any other file would (a class
    # reading one shared runs folder needs to read it)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


def write_bytes(path: Path, content: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    try:
        tmp.write_bytes(content)
        # no fsync: a killed process's writes are in the page cache already, so the rename is safe against a kill
        # (tests/scenarios/test_kill_writes.py); only a power cut could still leave the new name on a short file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: lists joined with commas, None blank."""
    if value is None:
        return ""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({k: csv_cell(row.get(k)) for k in fields})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure saved atomically (the format from the file's suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path, suffix=path.suffix)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(path: Path, *, replace: bool = True):
    """Yield a temp folder beside `path`; when the block succeeds it takes `path`'s name.

    With replace=False an existing `path` wins (another process finished first) and the new
    folder is dropped. On any failure the temp folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the folder it becomes follows the umask
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif replace:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# the names tmp_beside and atomic_dir give their temp files and folders: ".<target>.<8 of tempfile's [a-z0-9_]>"
# (then the figure's own suffix and ".tmp" for a file; ".<target>.old.<8>" for a replaced folder's old copy)
_TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(\.[^.]+)?\.tmp$")
_TEMP_DIR = re.compile(r"^\.(?P<target>.+?)(?P<old>\.old)?\.[a-z0-9_]{8}$")


def remove_stale_temps(root: Path, older_than_s: float = 3600, max_depth: int = 4) -> list[Path]:
    """Remove the temp files and folders that a killed process left beside their targets (a kill can't run the
    cleanup in a finally), under root and up to max_depth folders down; returns what it removed or restored.

    Only those older than older_than_s go: a younger one may be another process's write in progress. A replaced
    folder's old copy whose new one never took the name (killed between atomic_dir's two renames) is moved
    back under its name rather than removed."""
    now = time.time()
    done: list[Path] = []
    folders = [(Path(root), 0)]
    while folders:
        folder, depth = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            is_dir = entry.is_dir(follow_symlinks=False)
            if not entry.name.startswith("."):
                if is_dir and depth < max_depth:
                    folders.append((path, depth + 1))
                continue
            match = (_TEMP_DIR if is_dir else _TEMP_FILE).match(entry.name)
            try:
                if not match or entry.is_symlink() or now - entry.stat().st_mtime < older_than_s:
                    continue
                copy = path / match["target"]
                if is_dir and match["old"] and copy.is_dir() and not (folder / match["target"]).exists():
                    os.replace(copy, folder / match["target"])
                if is_dir:
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:
                continue  # gone already (another process cleaning), or not ours to remove: leave it
            done.append(path)
    return done
