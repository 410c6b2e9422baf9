"""What a study searches, kept in the study itself so a worker joining needs nothing else: the base settings,
the grid or the search space (ranges over rank, targets, bits, the 4-bit settings, alpha, learning rate and
dropout, and where given the adapter's init and LoRA+'s ratio), the seeds, and the score and cost its trials
are judged by.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.core.config import INITS, RunConfig, same_settings
from workbench.experiments.seeds import seed_values
from workbench.experiments.study.storage import open_storage, quiet_optuna, redacted
from workbench.experiments.sweep import SweepGrid, SweepPoint, check_init_bits, check_inits, point_dir

SCORES = {"exact_match": ("accuracy", "maximize"), "perplexity": ("perplexity", "minimize")}
COSTS = ("memory", "time")


def span(name: str, values, kind=float, low_ok: float = 0.0) -> tuple:
    values = tuple(values) if isinstance(values, (list, tuple)) else (values, values)
    if len(values) != 2:
        raise ValueError(f"{name}: give a range as two values, low and high; got {values!r}")
    lo, hi = values
    if isinstance(lo, bool) or isinstance(hi, bool) or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name}: the range must be two numbers; got {values!r}")
    if kind is int and not all(float(v).is_integer() for v in values):
        raise ValueError(f"{name}: the range must be whole numbers; got {values!r}")
    if not low_ok <= lo <= hi:
        raise ValueError(f"{name}: the range must run from at least {low_ok:g} up (low <= high); got {lo:g}-{hi:g}")
    return (kind(lo), kind(hi))


@dataclass
class SearchSpace:
    """The ranges a search samples: each trial one setting from them (all but the seed)."""

    trials: int = field(default=16, metadata={"help": "How many settings to try (each trained once a seed)."})
    ranks: tuple = field(default=(1, 64), metadata={"help": "LoRA rank r, low and high, sampled on a log scale."})
    targets: list = field(
        default_factory=lambda: [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear"],
        metadata={"help": "Target-module sets to choose from."},
    )
    bits: list = field(default_factory=lambda: [16, 8, 4], metadata={"help": "Bits of the frozen base: 16, 8, 4."})
    quant_types: list = field(default_factory=lambda: ["nf4", "fp4"], metadata={"help": "4-bit types: nf4, fp4."})
    double_quants: list = field(
        default_factory=lambda: [True, False], metadata={"help": "Double quantization at 4 bits: on, off."}
    )
    alpha: tuple = field(default=(4.0, 64.0), metadata={"help": "LoRA alpha, low and high, log scale."})
    lr: tuple = field(default=(1e-4, 3e-3), metadata={"help": "Learning rate, low and high, log scale."})
    dropout: tuple = field(default=(0.0, 0.1), metadata={"help": "LoRA dropout, low and high."})
    minimize: str = field(default="memory", metadata={"help": "The cost to push down: memory (peak) or time."})
    max_memory_mib: float | None = field(
        default=None,
        metadata={"help": "Never load a setting estimated above this peak (MiB); default: the memory free."},
    )
    # None: the base's (a search saved before these choices reads so, and keeps its study's name)
    inits: list | None = field(
        default=None, metadata={"help": "Inits to choose from (each only at the bits it works on); None: the base's."}
    )
    loraplus_ratio: tuple | None = field(
        default=None, metadata={"help": "LoRA+ ratio, low and high, log scale; None: the base's."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= 10_000:
            raise ValueError(
                f"search: the number of trials must be a whole number from 1 to 10000; got {self.trials!r}"
            )
        self.ranks = span("ranks", self.ranks, int, 1)
        grid = SweepGrid(
            ranks=[self.ranks[0]],
            targets=self.targets,
            bits=self.bits,
            quant_types=self.quant_types,
            double_quants=self.double_quants,
        )  # the same checks and spellings as a grid's
        self.targets, self.bits, self.quant_types, self.double_quants = (
            grid.targets,
            grid.bits,
            grid.quant_types,
            grid.double_quants,
        )
        self.alpha = span("alpha", self.alpha, float, 1e-6)
        self.lr = span("lr", self.lr, float, 1e-9)
        self.dropout = span("dropout", self.dropout, float, 0.0)
        if self.dropout[1] >= 1:
            raise ValueError(f"dropout: the range must stay below 1; got up to {self.dropout[1]:g}")
        if self.minimize not in COSTS:
            raise ValueError(f"minimize: {self.minimize!r} is not one of {', '.join(COSTS)}")
        if self.max_memory_mib is not None and not self.max_memory_mib > 0:
            raise ValueError(f"max memory: give a positive number of MiB; got {self.max_memory_mib!r}")
        self.inits = check_inits(self.inits)
        check_init_bits(self.inits, self.bits)
        if self.loraplus_ratio is not None:
            self.loraplus_ratio = span("loraplus_ratio", self.loraplus_ratio, float, 1e-6)
            if self.loraplus_ratio[1] > 1000:
                raise ValueError(
                    f"loraplus_ratio: the range must stay at most 1000; got up to {self.loraplus_ratio[1]:g}"
                )

    def inits_at(self, bits: int) -> list[str]:
        """The inits a trial at `bits` chooses from: those that work on such a base."""
        return [i for i in self.inits or [] if bits in INITS[i].bits]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = [t if isinstance(t, str) else list(t) for t in self.targets]
        for key in ("inits", "loraplus_ratio"):  # only when given: an older search's dict, and name, stay as they were
            if d[key] is None:
                del d[key]
        return d


@dataclass
class StudyDef:
    """What a study is: kept in the study (its user attributes), so a worker anywhere can join it."""

    base: RunConfig
    seeds: int = 1
    grid: SweepGrid | None = None
    space: SearchSpace | None = None

    @property
    def kind(self) -> str:
        return "search" if self.space is not None else "grid"

    @property
    def score(self) -> str:
        from workbench.data import task_for

        return SCORES.get(task_for(self.base).scoring, SCORES["perplexity"])[0]

    @property
    def cost(self) -> str:
        return self.space.minimize if self.space is not None else "memory"

    @property
    def directions(self) -> list[str]:
        return [dict(SCORES.values())[self.score], "minimize"]

    def to_dict(self) -> dict:
        return json.loads(
            json.dumps(
                {
                    "kind": self.kind,
                    "base": self.base.to_dict(),
                    "seeds": self.seeds,
                    "grid": self.grid.to_dict() if self.grid else None,
                    "space": self.space.to_dict() if self.space else None,
                }
            )
        )

    @classmethod
    def from_dict(cls, d: dict) -> StudyDef:
        return cls(
            RunConfig.from_dict(d["base"]),
            d.get("seeds", 1),
            SweepGrid(**d["grid"]) if d.get("grid") else None,
            SearchSpace(**d["space"]) if d.get("space") else None,
        )

    def default_name(self) -> str:
        """A name from the definition: the same sweep finds its study again, a changed one starts its own."""
        d = self.to_dict()
        d["base"] = same_settings(d["base"])  # a preset's eval size marked or not, the same sweep
        digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.kind}-{digest}"

    def grid_runs(self, out_dir: Path) -> dict[str, tuple[SweepPoint, int]]:
        """A grid's (setting, seed) pairs by their run folder's name, in grid order."""
        assert self.grid is not None
        seeds = seed_values(self.base, self.seeds)
        return {point_dir(out_dir, p, s, self.base.train.seed).name: (p, s) for p in self.grid.points() for s in seeds}

    def grid_space(self) -> dict[str, list]:
        """The grid sampler's space: each setting by its label, and each seed."""
        assert self.grid is not None
        return {"setting": [p.label for p in self.grid.points()], "seed": seed_values(self.base, self.seeds)}


def open_study(definition: StudyDef, storage: str, name: str | None = None, *, create: bool = True):
    """The study `name` in `storage` (made if new and create): refused when it holds another sweep's definition."""
    import optuna

    name = name or definition.default_name()
    store = open_storage(storage)
    wanted = definition.to_dict()
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        if not create:
            raise ValueError(f"study: {name!r} is not in {redacted(storage)}; start the sweep there first") from None
        with quiet_optuna():
            study = optuna.create_study(
                study_name=name, storage=store, directions=definition.directions, load_if_exists=True
            )
        if "definition" not in study.user_attrs:
            study.set_user_attr("definition", wanted)
            study.set_user_attr("objectives", [definition.score, definition.cost])
    held = study.user_attrs.get("definition")
    if held is not None and held != wanted:
        raise ValueError(
            f"study: {name!r} in {redacted(storage)} is another sweep (other settings); give a new --study name, "
            "or the same settings to join it"
        )
    return study


def definition_of(study) -> StudyDef:
    held = study.user_attrs.get("definition")
    if held is None:
        raise ValueError(f"study: {study.study_name!r} was not made by workbench sweep; it has no definition to join")
    return StudyDef.from_dict(held)
