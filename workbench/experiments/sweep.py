"""A sweep: one trained variant per point of a grid of settings, each in its own run folder.

`plan` says before anything loads what the grid holds: its points, the ones already on disk with the
same settings (read back, not retrained), each point's estimated peak memory and the time the rest will
take at the speed this machine measured. `workers.run_sweep` then trains the points as an Optuna study
(workbench.experiments.study); this module holds the grid, the plan and the sweep's table and chart.
`workbench sweep`, the Sweep tab and notebooks/03 all call these functions.

Long because: the grid, its plan and its table are one description of a point (its settings, its folder's name,
its estimate and its row); split, a new axis such as the init would have to be added in three places.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from workbench.analysis.eval_plan import FIRST_GUESS_EVAL_S, eval_pace, eval_plan, eval_size
from workbench.analysis.settings import settings
from workbench.core.config import (
    INITS,
    QUANT_TYPES,
    LoraSettings,
    RunConfig,
    check_float,
    help_for,
    parse_targets,
    same_settings,
    variant_for_bits,
)
from workbench.engine.estimator import estimate, init_cost_for
from workbench.engine.layout import ModelLayout
from workbench.experiments.seeds import seed_values, with_seed
from workbench.machine import allocator, memory
from workbench.records.results import VariantResult
from workbench.records.runs import Run
from workbench.records.scan import all_results

BITS_CHOICES = (16, 8, 4)
# tokens/s to plan with before this machine has trained at those bits (the embedded model on a 2-core CPU,
# docs/demo.md); a GPU is far faster, so its first plan overstates the time
FIRST_GUESS_TOKENS_PER_S = {16: 250.0, 8: 60.0, 4: 210.0}


def targets_label(targets) -> str:
    targets = parse_targets(targets)
    return targets if targets == "all-linear" else "+".join(targets)


@dataclass(frozen=True)
class SweepPoint:
    """One setting of the grid: the base's bits (and, at 4 bits, its type), the adapter's rank and targets, and
    where a grid tries them, the adapter's start (init) and LoRA+'s ratio."""

    bits: int
    rank: int
    targets: tuple[str, ...] | str
    quant_type: str = "nf4"
    double_quant: bool = True
    # a search also samples these (a grid keeps the base's): None is the base's value
    alpha: float | None = None
    lr: float | None = None
    dropout: float | None = None
    # a grid's or a search's init and LoRA+ ratio axes: None is the base's (old points, saved without them)
    init: str | None = None
    loraplus_ratio: float | None = None

    @property
    def target_modules(self) -> list[str] | str:
        return self.targets if isinstance(self.targets, str) else list(self.targets)

    @property
    def label(self) -> str:
        quant = f"-{self.quant_type}{'' if self.double_quant else '-nodq'}" if self.bits == 4 else ""
        tuned = "".join(
            f"-{key}{value:g}"
            for key, value in (("a", self.alpha), ("lr", self.lr), ("do", self.dropout))
            if value is not None
        )
        # the default start and ratio add nothing, so a sweep's points saved before these axes keep their names
        start = f"-{self.init}" if self.init not in (None, "gaussian") else ""
        start += f"-lp{self.loraplus_ratio:g}" if self.loraplus_ratio not in (None, 1.0) else ""
        return f"{self.bits}bit{quant}-r{self.rank}-{targets_label(self.target_modules)}{start}{tuned}"

    def config(self, base: RunConfig) -> RunConfig:
        """`base` with this point's settings and its one trained variant (16: lora, 8: lora8, 4: qlora)."""
        d = base.to_dict()
        d["lora"] = {**d["lora"], "rank": self.rank, "target_modules": parse_targets(self.target_modules)}
        for key, value in (
            ("alpha", self.alpha),
            ("dropout", self.dropout),
            ("init", self.init),
            ("loraplus_ratio", self.loraplus_ratio),
        ):
            if value is not None:
                d["lora"][key] = value
        if self.lr is not None:
            d["train"] = {**d["train"], "lr": self.lr}
        d["quant"] = {**d["quant"], "bits": 4, "quant_type": self.quant_type, "double_quant": self.double_quant}
        d["variants"] = [variant_for_bits(self.bits)]
        return RunConfig.from_dict(d)


def _whole_numbers(name: str, values) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: each value must be a whole number of at least 1; got {v!r}")
        out.append(v)
    return out


@dataclass
class SweepGrid:
    """The values to try. Every combination is one point; at 16 and 8 bits the 4-bit settings do not apply."""

    ranks: list[int] = field(default_factory=lambda: [2, 8, 32], metadata={"help": "LoRA ranks r to try."})
    targets: list = field(
        default_factory=lambda: [["q_proj", "v_proj"], "all-linear"],
        metadata={"help": "Target-module sets: lists of module names, or all-linear."},
    )
    bits: list[int] = field(default_factory=lambda: [16, 4], metadata={"help": "Bits of the frozen base: 16, 8, 4."})
    quant_types: list[str] = field(default_factory=lambda: ["nf4"], metadata={"help": "4-bit types: nf4, fp4."})
    double_quants: list[bool] = field(
        default_factory=lambda: [True], metadata={"help": "Double quantization at 4 bits: on, off or both."}
    )
    # None: every point starts as the base config says (a grid saved before these axes reads so)
    inits: list[str] | None = field(default=None, metadata={"help": help_for(LoraSettings, "init")})
    loraplus_ratios: list[float] | None = field(
        default=None, metadata={"help": help_for(LoraSettings, "loraplus_ratio")}
    )

    def __post_init__(self) -> None:
        self.inits, self.loraplus_ratios = check_inits(self.inits), check_ratios(self.loraplus_ratios)
        for name in ("ranks", "targets", "bits", "quant_types", "double_quants"):
            value = getattr(self, name)
            if isinstance(value, (str, int)) and name != "targets":
                value = [value]
            if name == "targets" and isinstance(value, str):
                value = [value]
            if not value:
                raise ValueError(f"{name}: give at least one value to sweep")
            setattr(self, name, list(dict.fromkeys(map(_hashable, value))))
        self.ranks = _whole_numbers("ranks", self.ranks)
        bad = [b for b in self.bits if b not in BITS_CHOICES]
        if bad:
            raise ValueError(f"bits: {bad[0]!r} is not one of 16, 8 or 4")
        bad = [q for q in self.quant_types if q not in QUANT_TYPES]
        if bad:
            raise ValueError(f"quant_types: {bad[0]!r} is not one of {', '.join(QUANT_TYPES)}")
        if any(not isinstance(d, bool) for d in self.double_quants):
            raise ValueError("double_quants: each value must be true or false")
        self.targets = [parse_targets(t if isinstance(t, str) else list(t)) for t in self.targets]
        check_init_bits(self.inits, self.bits)

    def points(self) -> list[SweepPoint]:
        """Every combination but an init at bits it does not work on (left_out says which were left out)."""
        out = []
        for bits in self.bits:
            quant = [(q, d) for q in self.quant_types for d in self.double_quants] if bits == 4 else [("nf4", True)]
            inits = [i for i in self.inits if bits in INITS[i].bits] if self.inits else [None]
            for targets in self.targets:
                for rank in self.ranks:
                    for q, d in quant:
                        for init in inits:
                            for ratio in self.loraplus_ratios or [None]:
                                t = targets if isinstance(targets, str) else tuple(targets)
                                out.append(SweepPoint(bits, rank, t, q, d, init=init, loraplus_ratio=ratio))
        return out

    def left_out(self) -> str:
        """The grid's combinations it leaves out, in one sentence ("" when none): an init at bits it cannot start."""
        gaps = [
            f"{i} at {', '.join(str(b) for b in self.bits if b not in INITS[i].bits)} bits"
            for i in self.inits or []
            if any(b not in INITS[i].bits for b in self.bits)
        ]
        return f"left out: {'; '.join(gaps)} (an init works only on the bases it is made for)" if gaps else ""

    def to_dict(self) -> dict:
        d = {
            "ranks": self.ranks,
            "targets": [t if isinstance(t, str) else list(t) for t in self.targets],
            "bits": self.bits,
            "quant_types": self.quant_types,
            "double_quants": self.double_quants,
        }
        # only when given: a grid without these axes keeps its old dict, and so its study's name
        for key in ("inits", "loraplus_ratios"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def check_inits(inits) -> list[str] | None:
    """A list of init names (None: the base's), each known, each once."""
    if inits is None:
        return None
    if isinstance(inits, str):
        inits = [inits]
    if not isinstance(inits, (list, tuple)) or not inits:
        raise ValueError(f"inits: give at least one of {', '.join(INITS)}; got {inits!r}")
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise ValueError(f"inits: {bad[0]!r} is not one of {', '.join(INITS)}")
    return list(dict.fromkeys(inits))


def check_ratios(ratios) -> list[float] | None:
    """A list of LoRA+ ratios (None: the base's), each as LoraSettings checks one."""
    if ratios is None:
        return None
    if isinstance(ratios, (int, float)):
        ratios = [ratios]
    if not ratios:
        raise ValueError("loraplus_ratios: give at least one ratio (1 = plain LoRA)")
    for r in ratios:
        check_float("loraplus_ratios", r, 0, 1000, lo_open=True)
    return list(dict.fromkeys(float(r) for r in ratios))


def check_init_bits(inits: list[str] | None, bits: list[int]) -> None:
    """Refuse an init that fits none of the bits, or bits that no init fits: the grid would quietly lose them."""
    if not inits:
        return
    for i in inits:
        if not any(b in INITS[i].bits for b in bits):
            works = ", ".join(map(str, INITS[i].bits))
            raise ValueError(f"inits: {i} works on {works}-bit bases only; add those bits or choose another init")
    for b in bits:
        if not any(b in INITS[i].bits for i in inits):
            fits = ", ".join(i for i in INITS if b in INITS[i].bits)
            raise ValueError(f"bits: no init given works at {b} bits; add one of {fits} to the inits or drop {b}")


# --------------------------------------------------------------------------- plan


def saved_run(out: Path, cfg: RunConfig) -> Run | None:
    """The finished run in `out` when it was made with exactly these settings (and neither stopped nor out of
    memory: those are tried again), else None."""
    run = Run(out)
    if not run.finished:
        return None
    try:
        doc = run.read()
        same = same_settings(doc.get("config") or {}) == same_settings(cfg.to_dict())
        failed = any(r.error for r in run.results())
    except (OSError, ValueError, TypeError, AttributeError):  # damaged, or another version's: train it again
        return None
    return run if same and not doc.get("stopped") and not failed else None


@dataclass
class PlannedPoint:
    point: SweepPoint
    config: RunConfig
    out: Path
    cached: bool
    estimated_peak_bytes: int
    estimated_seconds: float  # 0 for a cached point
    fit: str = "fits"  # memory.fit of the estimate against the free memory when planned
    seed: int = 0
    init_line: str = ""  # what the point's init costs before its first step ("" for gaussian's nothing)

    @property
    def label(self) -> str:
        """The point's settings, and its seed where the sweep repeats them."""
        return self.out.name


@dataclass
class SweepPlan:
    points: list[PlannedPoint]
    speeds: dict[int, float]  # tokens/s planned with, per bits
    measured: dict[int, bool]  # whether that speed was measured on this machine (else a first guess)
    eval_line: str = ""  # what the eval size can tell apart, and what scoring it costs
    seeds: int = 1
    # what was planned, so the sweep's study can be made from the plan alone
    grid: SweepGrid | None = None
    base: RunConfig | None = None
    out_dir: Path | None = None

    @property
    def to_train(self) -> list[PlannedPoint]:
        return [p for p in self.points if not p.cached]

    @property
    def estimated_seconds(self) -> float:
        return sum(p.estimated_seconds for p in self.points)

    def describe(self) -> str:
        n, cached = len(self.points), len(self.points) - len(self.to_train)
        mins = self.estimated_seconds / 60
        guessed = [b for b in sorted(self.speeds) if not self.measured.get(b)]
        how = " (a first guess at " + ", ".join(f"{b} bits" for b in guessed) + ": no run here yet)" if guessed else ""
        repeats = f" ({n // self.seeds} settings × {self.seeds} seeds)" if self.seeds > 1 else ""
        text = (
            f"{n} points{repeats}: {cached} already on disk, {n - cached} to train, about {mins:.0f} min{how}; "
            f"estimated peaks {min(p.estimated_peak_bytes for p in self.points) / 2**20:,.0f}–"
            f"{max(p.estimated_peak_bytes for p in self.points) / 2**20:,.0f} MiB"
        )
        gaps = self.grid.left_out() if self.grid is not None else ""
        lines = [text, *self.init_lines(), *([gaps] if gaps else []), *([self.eval_line] if self.eval_line else [])]
        return "\n".join(lines)

    def init_lines(self) -> list[str]:
        """What each init of the plan costs at the start of a run (one line each; none for gaussian's nothing)."""
        seen: dict[str, str] = {}
        for p in self.points:
            if p.init_line and p.config.lora.init not in seen:
                seen[p.config.lora.init] = p.init_line
        return list(seen.values())


def measured_speeds(runs_root: Path, device_type: str) -> dict[int, float]:
    """Median training tokens/s per bits of the runs on disk that ran on this kind of device."""
    speeds: dict[int, list[float]] = {}
    for row in all_results(Path(runs_root)):
        r = row.result
        if r.tokens_per_second and (row.device or "").startswith(device_type):
            speeds.setdefault(r.bits, []).append(r.tokens_per_second)
    return {b: statistics.median(v) for b, v in speeds.items()}


def point_dir(out_dir: Path, point: SweepPoint, seed: int, first_seed: int) -> Path:
    """A point's run folder: its label, with -seed<N> for the repeats after the first seed (so a sweep run again
    with more seeds reads back the points it already has)."""
    return out_dir / (point.label if seed == first_seed else f"{point.label}-seed{seed}")


def plan(
    grid: SweepGrid, base: RunConfig, out_dir: str | Path, *, runs_root: str | Path | None = None, seeds: int = 1
) -> SweepPlan:
    """The grid's points (each `seeds` times) with their configs, folders, cache state, estimated peak and time.
    Loads no weights; a bad value in any point fails here (ValueError), before anything trains."""
    from workbench.engine.models import pick_device

    out_dir = Path(out_dir)
    choice = pick_device(base.model.device, base.model.dtype)
    layout = ModelLayout.for_model(base.model.name)
    root = Path(runs_root) if runs_root else out_dir
    found = measured_speeds(root, choice.type)
    available = memory.available_bytes(choice.type, choice.device)
    speeds = {b: found.get(b, FIRST_GUESS_TOKENS_PER_S[b]) for b in grid.bits}
    size = eval_size(base)
    scored = size[0] if size else 0
    pace = eval_pace(root, choice.type) or FIRST_GUESS_EVAL_S
    t = base.train
    planned = []
    for point, seed in ((p, s) for p in grid.points() for s in seed_values(base, seeds)):
        cfg = with_seed(point.config(base), seed)
        layout.check_targets(cfg.lora.target_modules)
        layout.check_rank(cfg.lora.rank)
        out = point_dir(out_dir, point, seed, base.train.seed)
        cached = saved_run(out, cfg) is not None
        device = pick_device(base.model.device, base.model.dtype, point.bits)
        peak = estimated_peak(layout, cfg, point.bits, device)
        start = init_cost_for(layout, cfg, point.bits, device.type)
        tokens = t.steps * t.batch_size * t.grad_accum * t.seq_len
        seconds = 0.0 if cached else tokens / speeds[point.bits] + scored * pace + ((start and start.seconds) or 0)
        fit = memory.fit(peak, available)
        planned.append(PlannedPoint(point, cfg, out, cached, peak, seconds, fit, seed, start.line() if start else ""))
    line = eval_plan(base, root, choice.type, runs=seeds)
    return SweepPlan(planned, speeds, {b: b in found for b in grid.bits}, line, seeds, grid, base, out_dir)


def estimated_peak(layout: ModelLayout, cfg: RunConfig, bits: int, choice) -> int:
    """A point's estimated peak (bytes) before anything loads, its init's included: what the plan shows and a
    search's budget checks."""
    t = cfg.train
    return estimate(
        layout,
        bits=bits,
        rank=cfg.lora.rank,
        targets=cfg.lora.target_modules,
        batch_size=t.batch_size,
        seq_len=t.seq_len,
        gradient_checkpointing=t.gradient_checkpointing,
        device_type=choice.type,
        double_quant=cfg.quant.double_quant,
        dtype=choice.dtype_name,
        allocator=allocator.current(),  # the points train in this process
        init=init_cost_for(layout, cfg, bits, choice.type),
    ).total


# --------------------------------------------------------------------------- run


@dataclass
class PointResult:
    """What became of one point: trained, loaded (already on disk), failed (the reason) or not run (stopped)."""

    point: SweepPoint
    out: Path
    status: str
    result: VariantResult | None = None
    error: str | None = None
    seconds: float = 0.0
    seed: int | None = None

    @property
    def label(self) -> str:
        """The point's folder name: its settings, and its seed after the first."""
        return self.out.name


def sweep_frame(points: list[PointResult]):
    """One row per point, for a table: settings, status, accuracy, memory and time in readable units."""
    import pandas as pd

    rows = []
    searched = any(p.point.lr is not None or p.point.alpha is not None for p in points)  # a search's points
    # the start's columns when the sweep varies it (a sweep without the axes keeps its old table)
    starts = [
        (name, key)
        for name, key in (("init", "init"), ("LoRA+ ratio", "loraplus_ratio"))
        if any(getattr(p.point, key) is not None for p in points)
    ]
    for p in points:
        r = p.result
        rows.append(
            {
                "point": p.label,
                "seed": p.seed,
                "bits": p.point.bits,
                "4-bit type": p.point.quant_type if p.point.bits == 4 else "",
                "rank": p.point.rank,
                "targets": targets_label(p.point.target_modules),
                **{name: getattr(p.point, key) for name, key in starts},
                **{
                    name: getattr(p.point, key)
                    for name, key in (("alpha", "alpha"), ("lr", "lr"), ("dropout", "dropout"))
                    if searched
                },
                "status": p.status if not p.error else f"failed: {p.error}",
                "accuracy %": None if r is None or r.accuracy is None else round(100 * r.accuracy, 1),
                "accuracy 95% CI": _ci(r, "accuracy", 100, 1),
                "eval loss": None if r is None or r.eval_loss is None else round(r.eval_loss, 4),
                "forgetting": None if r is None or r.forgetting is None else round(r.forgetting, 4),
                "forgetting 95% CI": _ci(r, "forgetting", 1, 3),
                "peak MiB": None if r is None else round(r.peak_memory_bytes / 2**20),
                "weights MiB": None if r is None else round(r.weight_bytes / 2**20, 1),
                "train s": None if r is None or r.train_seconds is None else round(r.train_seconds, 1),
            }
        )
    return pd.DataFrame(rows)


def _ci(r: VariantResult | None, score: str, scale: float, digits: int) -> str | None:
    ci = None if r is None else r.interval(score)
    return None if ci is None else f"{ci.low * scale:.{digits}f}–{ci.high * scale:.{digits}f}"


def point_settings(points: list[PointResult]):
    """The sweep's finished points grouped by setting (their seeds pooled): analysis.settings.Setting, in grid order."""
    return settings(
        [(json.loads(json.dumps(_config_of(p))), p.result, str(p.out), "") for p in points if p.result is not None]
    )


def _config_of(p: PointResult) -> dict:
    try:
        return Run(p.out).read()["config"]
    except (OSError, ValueError, KeyError, TypeError):  # a point read back without its folder: its settings alone
        return {"point": p.point.label, "train": {"seed": p.seed}}


def write_sweep(out_dir: str | Path, points: list[PointResult]) -> list[Path]:
    """The sweep's table (sweep.csv) and its accuracy-against-memory chart with the frontier (sweep.png) in
    out_dir, beside the points' run folders; each written whole."""
    from workbench.analysis import plots
    from workbench.core.files import save_figure, write_csv

    out_dir = Path(out_dir)
    frame = sweep_frame(points)
    table = write_csv(out_dir / "sweep.csv", frame.to_dict("records"), list(frame.columns))
    groups = point_settings(points)
    chart = out_dir / "sweep.png"
    if groups:
        save_figure(plots.settings_figure(groups, label=lambda g: Path(g.runs[0]).name), chart)
    return [table, chart] if groups else [table]
