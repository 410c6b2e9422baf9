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
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from workbench.core.config import TRAINED_VARIANTS, RunConfig
from workbench.core.events import MetricEvent
from workbench.core.files import atomic_dir, write_csv, write_json, write_text
from workbench.core.paths import EMBEDDED_DIRNAME
from workbench.records.results import CompareResult, VariantResult, check_run_doc

RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 10 * 2**20  # a run's results.json is a few KiB: one far larger is damage, not read
# per variant, example by example: {"eval": {keys, losses, tokens, correct}, "general": {..., base_losses}}
SCORES_FILE = "scores.json"
RESULT_FIELDS = VariantResult.field_names()


@dataclass
class TrainState:
    """Where training stands after its last step: with the adapter's weights, enough to continue it exactly
    (the same batches, dropout masks and AdamW moments as one uninterrupted run)."""

    step: int  # steps done
    optimizer: dict  # AdamW's state_dict: its moments and step counts
    torch_rng: torch.Tensor  # noqa: F821 - only annotated: records do not import torch at import  # the CPU generator, which draws LoRA's dropout masks
    python_rng: tuple

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer,
            "torch_rng": self.torch_rng,
            "python_rng": self.python_rng,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        rng = d["python_rng"]  # saved as lists: random.setstate wants tuples
        return cls(int(d["step"]), d["optimizer"], d["torch_rng"], (rng[0], tuple(rng[1]), rng[2]))


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
        """The TrainState saved with a variant's adapter; None for a run from before it was saved."""
        path = self.adapter_dir(variant) / TRAINING_STATE
        if not path.is_file():
            return None
        import torch

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


TRAINING_STATE = "training_state.pt"  # beside a saved adapter: where its training stands (TrainState)
# beside a saved adapter whose init changed the base (PiSSA, OLoRA, LoftQ): its weights at step 0, from which the
# export makes a plain LoRA adapter for the original base (peft's path_initial_model_for_weight_conversion)
ADAPTER_START = "adapter_start.safetensors"


def save_adapter(model, path: Path, state=None, start: dict | None = None) -> Path:
    """peft's save_pretrained (and the training state, to continue from, and the adapter's starting weights when
    given), swapped in under the final name only when complete: the adapter and its state are always of the same
    step."""
    with atomic_dir(path) as tmp:
        if state is not None:
            import torch

            torch.save(state.to_dict(), Path(tmp) / TRAINING_STATE)
        if start is not None:
            from safetensors.torch import save_file

            save_file(start, str(Path(tmp) / ADAPTER_START))
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
    """results.json/csv, generations.md, and each variant's answers (predictions.json) and
    per-example scores (scores.json): each written atomically. scores.json goes before results.json, which
    marks the run finished: a finished run's intervals can always be paired."""
    run = run if isinstance(run, Run) else Run(run)
    if scores:
        write_json(run.path / SCORES_FILE, scores)
    write_results(run, result.to_json(), result.variants)
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
