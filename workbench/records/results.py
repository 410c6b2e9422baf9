"""What a comparison produced. VariantResult is one variant's result and the one home of the result
fields: what the variant is, what it cost and how it scored. It gives every form a result takes: the row
of results.json and results.csv, the readable tables of the CLI and the Results panel, and the points
and labels of the plots. CompareResult holds a whole comparison: its variants, answers and steps.

Long because: the fields, their checks on reading (ROW_CHECKS, DOC_CHECKS: a class's runs folder is anyone's to
edit) and their readable forms are one fact, kept in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from reprlib import repr as shown  # a value in a message, cut short
from typing import TYPE_CHECKING, Any

from workbench.core.config import INITS, VARIANTS, check_choice, check_float, check_int
from workbench.core.events import MetricEvent
from workbench.core.stats import Interval, accuracy_interval, difference_interval, mean_interval

if TYPE_CHECKING:  # for annotations only: generate sits higher up
    from workbench.engine.generate import Generation

MiB = 1024**2


@dataclass
class VariantResult:
    name: str
    bits: int
    rank: int | None = None  # None for base: no adapter
    target_modules: list[str] | str | None = None
    trainable_params: int = 0
    total_params: int = 0
    weight_bytes: int = 0
    peak_memory_bytes: int = 0
    estimated_peak_bytes: int = 0
    train_seconds: float | None = None
    tokens_per_second: float | None = None
    final_train_loss: float | None = None
    eval_loss: float | None = None
    perplexity: float | None = None
    accuracy: float | None = None  # None when the task is scored by perplexity
    steps_done: int | None = None
    status: str = "done"  # or "stopped", or "out of memory"
    base_dtype: str | None = None  # what the frozen base is held in: bfloat16, float32, int8, nf4, fp4
    general_loss: float | None = None  # loss on the shipped general text (data/general) no task trains on
    forgetting: float | None = None  # general_loss minus its base's (adapter off): what tuning cost elsewhere
    error: str | None = None  # why the variant did not finish (out of memory), with what to change
    # how sure each score is (workbench.core.stats): the number of eval examples and 95% intervals; None in runs
    # from before they were kept, and where a score has none (a perplexity task has no accuracy)
    eval_examples: int | None = None
    accuracy_low: float | None = None  # Wilson
    accuracy_high: float | None = None
    eval_loss_low: float | None = None  # bootstrap over the eval examples
    eval_loss_high: float | None = None
    perplexity_low: float | None = None  # exp of the eval loss's
    perplexity_high: float | None = None
    forgetting_low: float | None = None  # paired bootstrap over the blocks of general text
    forgetting_high: float | None = None
    eval_seconds: float | None = None  # scoring the eval split: what a plan prices an eval example at
    # how the adapter started (LoraSettings.init; None for base and in runs from before inits), what it took, and
    # on a 4-bit base ||W - what the layers compute|| / ||W|| over the adapted layers (W: the 16-bit weights) as
    # loaded and at step 0 with this start (None where not measured: gaussian and EVA leave it as loaded)
    init: str | None = None
    init_seconds: float | None = None
    init_error_before: float | None = None
    init_error_after: float | None = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """The row of results.json and results.csv."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> VariantResult:
        """A row of results.json, each field checked (a run folder is anyone's to edit): a field from before it
        was kept takes its default; a wrong type, a number out of range, an unknown field (another version's)
        or a missing name or bits is a ValueError naming the field."""
        if not isinstance(row, dict):
            raise ValueError(f"a variant must be a dict of fields; got {shown(row)}")
        unknown = [k for k in row if k not in ROW_CHECKS]
        if unknown:
            raise ValueError(f"unknown field {shown(unknown[0])}")
        for name in ("name", "bits"):
            if name not in row:
                raise ValueError(f"a variant has no {name}")
        for name, value in row.items():
            if value is not None or name in ("name", "bits"):
                ROW_CHECKS[name](name, value)
        return cls(**row)

    @property
    def trained(self) -> bool:
        return self.rank is not None

    @property
    def targets_label(self) -> str | None:
        t = self.target_modules
        return ",".join(t) if isinstance(t, (list, tuple)) else t

    def label(self) -> str:
        """How a plot's legend names the variant: 'lora (bfloat16, r=8, all-linear)'."""
        base = self.base_dtype or f"{self.bits}-bit"
        if not self.trained:
            return f"{self.name} ({base})" if self.base_dtype else self.name
        return f"{self.name} ({base}, r={self.rank}, {self.targets_label})"

    def interval(self, score: str) -> Interval | None:
        """The 95% interval of a score (accuracy, eval_loss, perplexity, forgetting); None where there is none."""
        low, high = getattr(self, f"{score}_low", None), getattr(self, f"{score}_high", None)
        return None if low is None or high is None else Interval(low, high)

    def with_text(self, score: str, scale: float = 1.0, digits: int = 1) -> str | None:
        """A score and its interval as a table shows it: "80.0 (69.1–88.0)"; the score alone without one."""
        value = getattr(self, score)
        if value is None:
            return None
        ci = self.interval(score)
        text = f"{value * scale:.{digits}f}"
        return text if ci is None else f"{text} ({ci.low * scale:.{digits}f}–{ci.high * scale:.{digits}f})"

    def memory(self, key: str) -> int | None:
        """A memory figure by field name (peak_memory_bytes, weight_bytes, estimated_peak_bytes)."""
        if key not in MEMORY_FIELDS:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_FIELDS)}; got {key!r}")
        return getattr(self, key)


# --------------------------------------------------------------------------- what a results.json may hold

TEXT_LIMIT = 200  # a name, a dtype, a status, a device: anything longer is not one a run wrote
MESSAGE_LIMIT = 2_000  # an error or a note: a sentence or two with what to change
COMMAND_LIMIT = 20_000  # the command line that made a run
BIG = 2**63 - 1  # bytes and counts beyond this are damage (and overflow a float in the tables)
STATUSES = ("done", "stopped", "out of memory", "failed")


def check_text(name: str, value: Any, limit: int = TEXT_LIMIT) -> None:
    """Text a page can show: a str of at most `limit` characters that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text; got {shown(value)}")
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit:,} characters; got {len(value):,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be text; got {shown(value)}, which is not valid Unicode") from None


def _count(name: str, value: Any) -> None:
    check_int(name, value, 0, BIG)


def _amount(name: str, value: Any) -> None:  # bytes or seconds: a median over repeats may not be whole
    check_float(name, value, 0, BIG)


def _share(name: str, value: Any) -> None:
    check_float(name, value, 0, 1)


def _signed(name: str, value: Any) -> None:  # forgetting: tuning can also improve the general text
    check_float(name, value, -BIG, BIG)


def _targets(name: str, value: Any) -> None:
    if isinstance(value, str):
        return check_text(name, value)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be all-linear or a list of module names; got {shown(value)}")
    check_text(name, ",".join(value), MESSAGE_LIMIT)  # the chart's legend writes them out whole


def _bits(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (16, 8, 4):
        raise ValueError(f"{name} must be 16, 8 or 4; got {shown(value)}")


# each field of a results.json row with its check (None passes wherever a field's default is None)
ROW_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "name": lambda n, v: check_choice(n, v, tuple(VARIANTS)),
    "bits": _bits,
    "rank": lambda n, v: check_int(n, v, 1, BIG),
    "target_modules": _targets,
    "trainable_params": _count,
    "total_params": _count,
    "weight_bytes": _amount,
    "peak_memory_bytes": _amount,
    "estimated_peak_bytes": _amount,
    "train_seconds": _amount,
    "tokens_per_second": _amount,
    "final_train_loss": _amount,
    "eval_loss": _amount,
    "perplexity": _amount,
    "accuracy": _share,
    "steps_done": _count,
    "status": lambda n, v: check_choice(n, v, STATUSES),
    "base_dtype": check_text,
    "general_loss": _amount,
    "forgetting": _signed,
    "error": lambda n, v: check_text(n, v, MESSAGE_LIMIT),
    "eval_examples": _count,
    "accuracy_low": _share,
    "accuracy_high": _share,
    "eval_loss_low": _amount,
    "eval_loss_high": _amount,
    "perplexity_low": _amount,
    "perplexity_high": _amount,
    "forgetting_low": _signed,
    "forgetting_high": _signed,
    "eval_seconds": _amount,
    "init": lambda n, v: check_choice(n, v, tuple(INITS)),
    "init_seconds": _amount,
    "init_error_before": _amount,
    "init_error_after": _amount,
}


def _notes(name: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) > 100:
        raise ValueError(f"{name} must be a list of sentences; got {shown(value)}")
    for item in value:
        check_text(name, item, MESSAGE_LIMIT)


def _optional_text(limit: int) -> Callable[[str, Any], None]:
    return lambda n, v: None if v is None else check_text(n, v, limit)


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {shown(value)}")


# each key of a results.json beside "variants" with its check: CompareResult.to_json's, then those
# experiment.ExperimentResult.to_json adds (a test holds both to this table)
DOC_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "config": lambda n, v: None,  # a dict (check_run_doc), whose settings RunConfig.from_dict checks
    "device": _optional_text(TEXT_LIMIT),
    "device_type": _optional_text(TEXT_LIMIT),
    "model_path": _optional_text(4_096),
    "task": _optional_text(TEXT_LIMIT),
    "scoring": _optional_text(TEXT_LIMIT),
    "notes": _notes,
    "stopped": _flag,
    "allocator": _optional_text(TEXT_LIMIT),
    "command": _optional_text(COMMAND_LIMIT),
    "user": _optional_text(TEXT_LIMIT),
    "world_size": _count,
    "backend": _optional_text(TEXT_LIMIT),
    "per_device_batch": _count,
    "grad_accum": _count,
    "global_batch": _count,
}


def check_run_doc(doc: Any) -> None:
    """A results.json as read, checked whole before anything shows it (any student can write to a class's runs
    folder): ValueError with the first thing wrong. Its settings are checked by RunConfig.from_dict."""
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("config"), dict)
        or not isinstance(doc.get("variants"), list)
    ):
        raise ValueError("no settings or variants: written by an older workbench, or damaged")
    try:
        unknown = [k for k in doc if k not in DOC_CHECKS and k != "variants"]
        if unknown:
            raise ValueError(f"unknown field {shown(unknown[0])}")
        for key, value in doc.items():
            if key != "variants":
                DOC_CHECKS[key](key, value)
        if len(doc["variants"]) > len(VARIANTS):
            raise ValueError(f"variants: {len(doc['variants'])} rows, and a run has at most {len(VARIANTS)}")
        names = []
        for i, row in enumerate(doc["variants"]):
            try:
                names.append(VariantResult.from_dict(row).name)
            except ValueError as exc:
                raise ValueError(f"variants[{i}]: {exc}") from None
        if len(set(names)) != len(names):
            raise ValueError("variants: a variant is listed twice")
    except ValueError as exc:
        raise ValueError(f"written by another version of the workbench, or damaged: {exc}") from None


INTERVAL_SCORES = ("accuracy", "eval_loss", "perplexity", "forgetting")


def interval_fields(eval_scores: dict | None, general: dict | None = None) -> dict:
    """The VariantResult fields of how sure its scores are, from what scores.json keeps of one variant: the eval
    split's per-example losses, answer tokens and right/wrong (`eval_scores`), and the general text's per-block
    losses with its base's (`general`, for forgetting)."""
    import math

    out: dict = {}
    if eval_scores and eval_scores.get("losses"):
        losses, tokens = eval_scores["losses"], eval_scores["tokens"]
        out["eval_examples"] = len(losses)
        correct = eval_scores.get("correct")
        if correct:
            ci = accuracy_interval(sum(bool(c) for c in correct), len(correct))
            out["accuracy_low"], out["accuracy_high"] = ci.low, ci.high
        ci = mean_interval(losses, tokens)
        if ci is not None:
            out["eval_loss_low"], out["eval_loss_high"] = ci.low, ci.high
            ci = ci.map(lambda v: math.exp(min(v, 50.0)))
            out["perplexity_low"], out["perplexity_high"] = ci.low, ci.high
    if general and general.get("base_losses"):
        ci = difference_interval(general["losses"], general["base_losses"], general["tokens"])
        if ci is not None:
            out["forgetting_low"], out["forgetting_high"] = ci.low, ci.high
    return out


MEMORY_FIELDS = {
    "peak_memory_bytes": "peak memory",
    "weight_bytes": "weight memory",
    "estimated_peak_bytes": "estimated peak memory",
}


@dataclass
class CompareResult:
    """What one comparison produced: the settings, where it ran, every variant's result, the side-by-side
    answers and every training step."""

    config: dict
    device: str  # for people: "cpu (float32)", "cuda (NVIDIA H200, bfloat16)"
    device_type: str  # for code: cpu, cuda or mps
    model_path: str
    task: str
    scoring: str = "exact_match"
    notes: list[str] = field(default_factory=list)
    variants: list[VariantResult] = field(default_factory=list)
    generations: dict[str, dict[str, Generation]] = field(default_factory=dict)
    metrics: list[MetricEvent] = field(default_factory=list)
    stopped: bool = False
    allocator: str = ""  # the C allocator on the CPU (workbench.machine.allocator): tcmalloc, glibc, ...
    command: str = ""  # the command line that made it (CLI runs), for a model card
    user: str = ""  # who made it: a class sharing one runs folder colours and filters by it

    def to_json(self) -> dict:
        """results.json less its variants (runs.write_results adds them)."""
        return {
            "config": self.config,
            "device": self.device,
            "device_type": self.device_type,
            "model_path": self.model_path,
            "task": self.task,
            "scoring": self.scoring,
            "notes": self.notes,
            "stopped": self.stopped,
            "allocator": self.allocator,
            "command": self.command,
            "user": self.user,
        }


def _round(digits: int) -> Callable[[Any], Any]:
    return lambda v: None if v is None else round(float(v), digits)


def _mib(v: Any) -> Any:
    return None if v is None else round(v / MiB, 1)


# field -> (heading, readable value) for the tables people read
COLUMNS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "name": ("variant", lambda v: v),
    "bits": ("bits", lambda v: v),
    "base_dtype": ("base", lambda v: v),
    "rank": ("rank", lambda v: v),
    "target_modules": ("targets", lambda v: ",".join(v) if isinstance(v, (list, tuple)) else v),
    "trainable_params": ("trainable", lambda v: f"{v:,}" if v else "-"),
    "total_params": ("parameters", lambda v: f"{v:,}" if v else "-"),
    "weight_bytes": ("weights MiB", _mib),
    "peak_memory_bytes": ("peak MiB", _mib),
    "estimated_peak_bytes": ("est. peak MiB", _mib),
    "train_seconds": ("train s", _round(1)),
    "tokens_per_second": ("tok/s", _round(1)),
    "final_train_loss": ("train loss", _round(4)),
    "eval_loss": ("eval loss", _round(4)),
    "perplexity": ("ppl", _round(3)),
    "accuracy": ("accuracy %", lambda v: None if v is None else round(100 * v, 1)),
    "forgetting": ("forgetting", _round(4)),
    "eval_examples": ("eval examples", lambda v: v),
    "general_loss": ("general-text loss", _round(4)),
    "steps_done": ("steps done", lambda v: v),
    "status": ("status", lambda v: v),
    "init": ("init", lambda v: v),
    "init_seconds": ("init s", _round(1)),
    "init_error_before": ("4-bit error as loaded %", lambda v: None if v is None else round(100 * v, 2)),
    "init_error_after": ("4-bit error at step 0 %", lambda v: None if v is None else round(100 * v, 2)),
}

# what the CLI prints after a run
SUMMARY_FIELDS = [
    "name",
    "base_dtype",
    "trainable_params",
    "weight_bytes",
    "peak_memory_bytes",
    "estimated_peak_bytes",
    "train_seconds",
    "tokens_per_second",
    "final_train_loss",
    "eval_loss",
    "perplexity",
    "accuracy",
    "forgetting",
    "eval_examples",
]


# scores a table shows with their 95% interval beside them: (heading, scale, digits)
WITH_INTERVAL = {
    "accuracy": ("accuracy % (95% CI)", 100.0, 1),
    "eval_loss": ("eval loss (95% CI)", 1.0, 4),
    "perplexity": ("ppl (95% CI)", 1.0, 3),
    "forgetting": ("forgetting (95% CI)", 1.0, 3),
}


def heading(name: str) -> str:
    return WITH_INTERVAL[name][0] if name in WITH_INTERVAL else COLUMNS[name][0]


def readable(result: VariantResult, names: list[str]) -> dict:
    """Some fields of a result under their headings, in readable units; a score with its interval beside it
    ("80.0 (69.1–88.0)") where the run kept one."""
    out = {}
    for name in names:
        if name in WITH_INTERVAL:
            _, scale, digits = WITH_INTERVAL[name]
            out[heading(name)] = result.with_text(name, scale, digits)
        else:
            out[heading(name)] = COLUMNS[name][1](getattr(result, name))
    return out


def results_frame(results: list[VariantResult], names: list[str] | None = None):
    """A pandas DataFrame of results in readable units, indexed by variant (the CLI's table)."""
    import pandas as pd

    if names is None:
        names = SUMMARY_FIELDS
        if any(r.init not in (None, "gaussian") for r in results):  # what the adapter's start did, where it did
            names = names + ["init", "init_seconds", "init_error_before", "init_error_after"]
    return pd.DataFrame([readable(r, names) for r in results], columns=[heading(n) for n in names]).set_index(
        heading("name")
    )


def first_line(exc: BaseException) -> str:
    """What a row or a message says of a failure: the exception's first line, or its type where it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shorten(text: str, width: int = 32) -> str:
    """Long names (a run folder's) cut in the middle to `width` characters, so the start (when) and the end
    (what) both show: tables and legends give the whole name on hover or in a list beside them."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 2] + "…" + text[len(text) - keep // 2 :]


def as_written(text: str) -> str:
    """Text from a run folder (a name, a module, a person) drawn as written: matplotlib reads what stands between
    two $ as a formula, and one it cannot parse ("$\\foo{$") raises when the figure is drawn."""
    return text.replace("$", r"\$")


def default_score(results) -> str:
    """What a chart or frontier scores results by: accuracy where the task has one, else perplexity."""
    return "accuracy" if any(r.accuracy is not None for r in results) else "perplexity"


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats: none with less (or equal) cost and a better (or equal)
    score, one of them strictly. Cost is x (memory, time), the score y (accuracy; or loss with
    higher_is_better=False). Sorted by cost: the frontier a chart draws as a line."""
    sign = 1 if higher_is_better else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], None
    for i in order:
        score = sign * points[i][1]
        if best is None or score > best:
            front.append(i)
            best = score
    return front


def best_and_worst(predictions: list[dict], n: int = 3) -> tuple[list[dict], list[dict]]:
    """The n held-out examples a variant scored best (lowest answer loss) and worst (highest), worst first."""
    scored = sorted((p for p in predictions if p.get("loss") is not None), key=lambda p: p["loss"])
    return scored[:n], scored[::-1][:n]
