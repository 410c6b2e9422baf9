"""A run on disk: one folder holding its settings and results (results.json, results.csv), its metrics
per step (metrics.csv), its figures, its answers (generations.md, predictions.json) and one adapter per
trained variant (adapters/<variant>/). `Run` is the one place that knows that layout. Every file is
written whole or not at all (workbench.core.files), so a crash or a Stop never leaves half a file behind.

Long because: the layout, the writers and the readers of a run folder (scan lists every run under a runs
folder, and the damaged ones with their reason) are one fact, kept in one place.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from workbench.analysis import plots
from workbench.core.config import TRAINED_VARIANTS, RunConfig
from workbench.core.events import MetricEvent
from workbench.core.files import atomic_dir, save_figure, write_bytes, write_csv, write_json, write_text
from workbench.core.paths import workbench_home
from workbench.engine.resolve import EMBEDDED_DIRNAME
from workbench.records.results import CompareResult, VariantResult, check_run_doc, first_line

RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 10 * 2**20  # a run's results.json is a few KiB: one far larger is damage, not read
# per variant, example by example: {"eval": {keys, losses, tokens, correct}, "general": {..., base_losses}}
SCORES_FILE = "scores.json"
RESULT_FIELDS = VariantResult.field_names()


class Run:
    """A run folder: its config as a RunConfig, its status, its trained variants, their adapters, its results."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._doc: dict | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def finished(self) -> bool:
        """Whether the run wrote its results (it ended: done, stopped, or failed after some variants)."""
        return self.results_file.is_file()

    def read(self) -> dict:
        """results.json as written (cached), checked against this version's layout (results.check_run_doc);
        OSError or ValueError when it is missing, damaged or another version's."""
        if self._doc is None:
            size = self.results_file.stat().st_size
            if size > MAX_RESULTS_BYTES:
                raise ValueError(f"{RESULTS_FILE} is {size / 2**20:,.0f} MiB, far more than a run writes (damaged)")
            try:
                doc = json.loads(self.results_file.read_text(encoding="utf-8"))
            except RecursionError:  # nested thousands deep: json's parser recurses
                raise ValueError(f"{RESULTS_FILE} is nested too deeply to be a run's (damaged)") from None
            check_run_doc(doc)
            self._doc = doc
        return self._doc

    def scores(self) -> dict[str, dict]:
        """scores.json: each variant's per-example scores ({} for a run from before they were kept, or damaged)."""
        try:
            doc = json.loads((self.path / SCORES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.read()["config"])

    def results(self) -> list[VariantResult]:
        return [VariantResult.from_dict(v) for v in self.read().get("variants", [])]

    @property
    def status(self) -> str:
        """done, stopped, or incomplete (no results yet: still running, or killed)."""
        if not self.finished:
            return "incomplete"
        return "stopped" if self.read().get("stopped") else "done"

    @property
    def model_path(self) -> str | None:
        return self.read().get("model_path")

    @property
    def device_type(self) -> str:
        doc = self.read()
        return doc.get("device_type") or str(doc.get("device", "cpu")).split(" ", 1)[0]  # older runs: a description

    def adapter_dir(self, variant: str) -> Path:
        """Where a trained variant's peft adapter is (or will be) saved."""
        return self.path / "adapters" / variant

    def has_adapter(self, variant: str) -> bool:
        return (self.adapter_dir(variant) / "adapter_config.json").is_file()

    def training_state(self, variant: str):
        """The train.TrainState saved with a variant's adapter; None for a run from before it was saved."""
        path = self.adapter_dir(variant) / TRAINING_STATE
        if not path.is_file():
            return None
        import torch

        from workbench.engine.train import TrainState

        return TrainState.from_dict(torch.load(path, weights_only=True))

    def trained_variants(self) -> list[str]:
        """The variants whose adapter this run saved, in the teaching order."""
        return [v for v in TRAINED_VARIANTS if self.has_adapter(v)]

    def finished_at(self) -> str:
        return datetime.fromtimestamp(self.results_file.stat().st_mtime).strftime("%Y-%m-%d %H:%M")

    def metrics(self) -> list[MetricEvent]:
        """The run's steps as metrics.csv holds them (a row cut short by a crash is skipped)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        kinds = {f.name: f.type for f in dataclasses.fields(MetricEvent)}
        out = []
        text = path.read_text(encoding="utf-8", errors="replace")
        if text and not text.endswith("\n"):  # each row is written whole with its newline: one without is cut
            text = text[: text.rfind("\n") + 1]
        for row in csv.DictReader(io.StringIO(text, newline="")):
            try:
                out.append(MetricEvent(**{k: (str if kinds[k] == "str" else _number)(v) for k, v in row.items()}))
            except (TypeError, ValueError, KeyError):
                continue
        return out


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def settings_table(runs: list[Run], only_differences: bool = False):
    """The settings of several runs side by side: one row per setting ("lora.rank"), one column per run;
    with only_differences, the rows where the runs disagree."""
    import pandas as pd

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = ",".join(map(str, v)) if isinstance(v, list) else v
        return out

    columns = {run.name: flat(run.read().get("config", {})) for run in runs}
    frame = pd.DataFrame(columns).astype(object)
    frame = frame.where(frame.notna(), "")
    if only_differences and len(columns) > 1:
        frame = frame[frame.astype(str).nunique(axis=1) > 1]
    return frame


TRAINING_STATE = "training_state.pt"  # beside a saved adapter: where its training stands (train.TrainState)


def save_adapter(model, path: Path, state=None) -> Path:
    """peft's save_pretrained (and the training state, to continue from), swapped in under the final name
    only when complete: the adapter and its state are always of the same step."""
    with atomic_dir(path) as tmp:
        if state is not None:
            import torch

            torch.save(state.to_dict(), Path(tmp) / TRAINING_STATE)
        model.save_pretrained(tmp)
    return Path(path)


def write_results(run: Run, doc: dict, results: list[VariantResult]) -> None:
    """results.json (the run's settings and every variant) and results.csv (the variants), each atomically."""
    # the csv first: results.json marks a run finished, so a finished run always has its csv as well
    write_csv(run.path / "results.csv", [r.to_dict() for r in results], RESULT_FIELDS)
    write_json(run.results_file, {**doc, "variants": [r.to_dict() for r in results]})
    run._doc = None


def write_run(
    run: Run | Path,
    result: CompareResult,
    predictions: dict[str, list[dict]] | None = None,
    scores: dict[str, dict] | None = None,
) -> None:
    """results.json/csv, the three figures, generations.md, and each variant's answers (predictions.json) and
    per-example scores (scores.json): each written atomically. scores.json goes before results.json, which
    marks the run finished: a finished run's intervals can always be paired."""
    run = run if isinstance(run, Run) else Run(run)
    if scores:
        write_json(run.path / SCORES_FILE, scores)
    write_results(run, result.to_json(), result.variants)
    save_figure(plots.loss_figure(result.metrics), run.path / "loss.png")
    save_figure(plots.memory_figure(result.variants, result.device_type), run.path / "memory.png")
    save_figure(plots.accuracy_memory_figure(result.variants), run.path / "accuracy_vs_memory.png")
    write_text(run.path / "generations.md", generations_markdown(result))
    if predictions:
        write_json(run.path / "predictions.json", predictions)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def generations_markdown(result: CompareResult) -> str:
    names = [v.name for v in result.variants if any(v.name in g for g in result.generations.values())]
    lines = [
        f"# Side-by-side answers ({result.task})",
        "",
        f"Model: `{result.model_path}` on {result.device}. Same prompt, decoding settings and seed for "
        "every column; base is the LoRA model with its adapter disabled.",
        "",
    ]
    if EMBEDDED_DIRNAME in result.model_path:
        lines += [
            "The embedded weights are a dequantized Q4_1 copy of SmolLM2-135M-Instruct, so the "
            "16-bit baseline is that dequantized model.",
            "",
        ]
    for prompt, answers in result.generations.items():
        lines += [
            "## Prompt",
            "",
            "> " + prompt.replace("\n", "\n> "),
            "",
            "| " + " | ".join(names) + " |",
            "|" + "---|" * len(names),
            "| " + " | ".join(_cell(answers[n].text) if n in answers else "" for n in names) + " |",
            "| " + " | ".join(answers[n].summary() if n in answers else "" for n in names) + " |",
            "",
        ]
    return "\n".join(lines)


class MetricsCSV:
    """A sink that appends one row per event to metrics.csv and flushes it, so a crash keeps every step."""

    FIELDS = MetricEvent.field_names()

    def __init__(self, path: Path, earlier: list[MetricEvent] = ()):
        """`earlier`: rows to start with (a continued run's steps so far)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=self.FIELDS)
        self._w.writeheader()
        for event in earlier:
            self._w.writerow(event.to_dict())
        self._f.flush()

    def __call__(self, event: MetricEvent) -> None:
        self._w.writerow(event.to_dict())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


USER_CHARS = re.compile(r"^[\w .'-]{1,40}$")  # letters (any script), digits, spaces and . ' - _


def default_user() -> str:
    """Who makes a run when nobody says: WORKBENCH_USER, else the login name (a class's names by default), as a
    name check_user accepts (it goes into folder names): other characters become _, and it is cut to 40."""
    import getpass

    name = os.environ.get("WORKBENCH_USER", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name in some containers
            name = ""
    # nobody chose these names for the workbench, so they are mended, not refused: a run must still start
    name = re.sub(r"[^\w .'-]", "_", " ".join(name.split()))[:40].strip()
    return name if USER_CHARS.match(name) else "someone"


def check_user(name: str) -> str:
    """A person's name as runs record it: 1 to 40 letters, digits, spaces or . ' - _ (it goes into folder
    names). Raises ValueError with what to do."""
    name = " ".join(str(name).split())
    if not USER_CHARS.match(name):
        raise ValueError("name: use 1 to 40 letters, digits, spaces or . ' - _ (it names your runs)")
    return name


def user_slug(name: str) -> str:
    """A name as part of a folder name: no spaces."""
    return re.sub(r"\s+", "_", name)


def claim_run_dir(root: Path, stem: str) -> Path:
    """A new, empty run folder under root named `stem` (or stem-2, stem-3, ...), made with one exclusive mkdir,
    so kernels sharing one runs folder (a class) that start a run in the same second never share a folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()  # atomic: of two processes asking for one name, exactly one gets it
            return path
        except FileExistsError:
            continue
    raise ValueError(f"runs: {root} already holds 10,000 runs named {stem}; choose another runs folder")


def drop_if_empty(path: Path) -> None:
    """Remove a claimed run folder nothing was written to (a run refused before it began)."""
    try:
        Path(path).rmdir()
    except OSError:  # not empty (it keeps what it made), or already gone
        pass


def load_results(out_dir: Path) -> dict:
    """A run folder's results.json, as written."""
    return Run(out_dir).read()


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


def _rows_of(run: Run, root: Path) -> list[ResultRow]:
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
_scanned: dict[str, dict[str, tuple[tuple, list[ResultRow] | str]]] = {}


def _stamp(run: Run) -> tuple:
    """What changes when a run is rewritten: its results.json's size, time and inode (an atomic write makes a new
    file, where two writes in one tick of the file system's clock could keep the time), and its adapters' time."""
    st = run.results_file.stat()
    try:
        adapters = (run.path / "adapters").stat().st_mtime_ns
    except OSError:
        adapters = 0
    return (st.st_size, st.st_mtime_ns, st.st_ino, adapters)


def _scan_cache_file(root: Path) -> Path:
    return workbench_home() / "scan" / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]}.pickle"


def _load_scan_cache(root: Path) -> dict:
    """The scan kept on disk for root ({} when there is none, it is another version's, or it is not safe)."""
    path = _scan_cache_file(root)
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
        path = _scan_cache_file(root)
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
    if key not in _scanned:
        _scanned[key] = _load_scan_cache(root)
    kept, now, changed = _scanned[key], {}, False
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
                read = _rows_of(run, root)
            except ValueError as exc:
                read = str(exc)
            changed = True
        now[rel] = (stamp, read)
        if isinstance(read, str):
            bad.append(Unreadable(rel, read))
        else:
            rows.extend(read)
    if changed or len(now) != len(kept):
        _scanned[key] = now
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
