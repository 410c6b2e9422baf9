"""What a comparison produced. VariantResult is one variant's result and the one home of the result
fields: what the variant is, what it cost and how it scored. It gives every form a result takes: the row
of results.json and results.csv, the readable tables of the CLI and the Results panel, and the points
and labels of the plots. CompareResult holds a whole comparison: its variants, answers and steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .events import MetricEvent
from .stats import Interval, accuracy_interval, difference_interval, mean_interval

if TYPE_CHECKING:  # for annotations only: generate sits higher up
    from .generate import Generation

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
    # how sure each score is (workbench.stats): the number of eval examples and 95% intervals; None in runs
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

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """The row of results.json and results.csv."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> VariantResult:
        """A row of results.json; fields a newer version added are left at their defaults, unknown ones dropped."""
        known = set(cls.field_names())
        return cls(**{k: v for k, v in row.items() if k in known})

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
    allocator: str = ""  # the C allocator on the CPU (workbench.allocator): tcmalloc, glibc, ...
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

    names = names or SUMMARY_FIELDS
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
