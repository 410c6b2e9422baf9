"""A run on disk. Every file is written whole or not at all (temp file + os.replace), so a crash or
a Stop never leaves a half-written results table or adapter behind."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .train import MetricEvent

RESULT_FIELDS = [
    "name", "bits", "rank", "target_modules", "trainable_params", "total_params", "weight_bytes",
    "peak_memory_bytes", "estimated_peak_bytes", "train_seconds", "tokens_per_second", "final_train_loss",
    "eval_loss", "perplexity", "accuracy", "steps_done", "status",
]


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_bytes(path: Path, content: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else _cell(row.get(k))) for k in fields})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cell(v: Any) -> Any:
    return ",".join(v) if isinstance(v, (list, tuple)) else v


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path, suffix=path.suffix)
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


def save_adapter(model, path: Path) -> Path:
    """peft's save_pretrained, swapped in under the final name only when complete."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
    return Path(path)


class MetricsCSV:
    """A sink that appends one row per event to metrics.csv and flushes it, so a crash keeps every step."""

    FIELDS = list(MetricEvent.__dataclass_fields__)

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=self.FIELDS)
        self._w.writeheader()
        self._f.flush()

    def __call__(self, event: MetricEvent) -> None:
        self._w.writerow(event.to_dict())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def load_results(out_dir: Path) -> dict:
    path = Path(out_dir) / "results.json"
    return json.loads(path.read_text(encoding="utf-8"))


def find_runs(root: Path) -> list[Path]:
    """Run folders under root (and one level deeper, as sweeps write them), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for pattern in ("*/results.json", "*/*/results.json") for p in root.glob(pattern)}
    return sorted(found, key=lambda p: (p / "results.json").stat().st_mtime, reverse=True)


def all_results(root: Path) -> list[dict]:
    """One row per variant of every run under root, with the run's name, time, task and settings.
    Folders whose results.json cannot be read are skipped (a run still being written, a stray file)."""
    from datetime import datetime

    rows = []
    for run in find_runs(root):
        try:
            res = load_results(run)
        except (OSError, ValueError):
            continue
        cfg = res.get("config", {})
        when = datetime.fromtimestamp((run / "results.json").stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        for v in res.get("variants", []):
            rows.append({"run": str(run.relative_to(root)), "finished": when, "task": res.get("task"),
                         "device": res.get("device"), "steps": cfg.get("train", {}).get("steps"),
                         "quant_type": cfg.get("quant", {}).get("quant_type") if v.get("bits") == 4 else None,
                         **v})
    return rows
