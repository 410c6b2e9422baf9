"""A sweep as an Optuna study: each trial is one setting and one seed, trained into its own run folder.

The study lives in a storage Optuna opens: an SQLite file in the sweep's folder by default (nothing to install
or start), any SQLAlchemy URL (PostgreSQL, MySQL) so workers on several machines share it, or a journal file
for a shared filesystem. Its definition (the base settings, the grid or the search space, the seeds) is kept in
the study itself, so a worker joining it needs nothing but the storage, the study's name and a runs folder.

A grid is Optuna's GridSampler over (setting, seed). A search is a multi-objective TPE sampler over ranges
(rank on a log scale, targets, bits, 4-bit type, double quantization, alpha, learning rate, dropout): score up,
peak memory (or training time) down, with the memory estimate as a constraint, so a setting that will not fit
is never loaded. Seeds are repeated trials of one setting.

Many workers: every trial sends a heartbeat (SQL storages); a worker that finds another's trial silent past the
grace period marks it failed and Optuna's RetryFailedTrialCallback queues it again. No setting is trained twice:
a trial whose run another live or finished trial already has stands down (pruned, "duplicate of trial N"),
the lower trial number winning, and a run folder on disk with the same settings is read back, not retrained.

Long because the study's whole life is here: storage, definition, the objective, the worker loop, reading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import socket
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.core.config import RunConfig, same_settings
from workbench.experiments.seeds import seed_values, with_seed
from workbench.experiments.sweep import PointResult, SweepGrid, SweepPoint, point_dir, saved_run, targets_label
from workbench.machine import memory
from workbench.records.results import VariantResult, first_line
from workbench.records.runs import Run, default_user

STUDY_FILE = "study.sqlite3"
# seconds between heartbeats; a trial silent for GRACE_BEATS of them is taken for dead and queued again
HEARTBEAT_S = 30
GRACE_BEATS = 3
MAX_RETRY = 2  # a trial that killed its worker this often is not tried again (a crash, not a lost machine)
POLL_S = 1.0  # how often a worker with nothing to take looks at the study again
SCORES = {"exact_match": ("accuracy", "maximize"), "perplexity": ("perplexity", "minimize")}
COSTS = ("memory", "time")


# --------------------------------------------------------------------------- storage


def default_storage(out_dir: str | Path) -> str:
    """The SQLite file in the sweep's folder: nothing to install, and it travels with the runs."""
    return f"sqlite:///{(Path(out_dir) / STUDY_FILE).resolve()}"


def _heartbeat_s() -> int:
    return max(1, int(os.environ.get("WORKBENCH_HEARTBEAT_S", HEARTBEAT_S)))


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".log", ".journal", ".jsonl"))


def open_storage(url: str):
    """An Optuna storage for a URL: sqlite:///FILE, postgresql://..., mysql://..., or journal:FILE (also a path
    ending in .log or .journal). SQL storages get heartbeats and retry a dead worker's trial; Optuna's journal
    storage has no heartbeat, so there a killed worker's trial stays running until the study is cleaned up."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if is_journal(url):
        path = Path(url.removeprefix("journal:")).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ValueError(
                f"storage: cannot use the journal file {path} ({exc.strerror}); give a writable path"
            ) from None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgres://")):
        url = _postgres_driver(url)
    beat = _heartbeat_s()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with (
            warnings.catch_warnings()
        ):  # heartbeats are "experimental" in Optuna since 2.8; the workbench relies on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=beat,
                grace_period=beat * GRACE_BEATS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "driver"
        raise ValueError(
            f"storage: {redacted(url)} needs the Python package {missing!r} (its database driver); pip install it"
        ) from None
    except (optuna.exceptions.StorageInternalError, ValueError, OSError) as exc:
        raise ValueError(
            f"storage: cannot open {redacted(url)} ({first_line(exc.__cause__ or exc)}); check the URL, that the "
            "database server is running and that this user may connect"
        ) from None
    except Exception as exc:  # SQLAlchemy's own errors (a bad URL, a refused connection) share no base here
        if type(exc).__module__.startswith("sqlalchemy"):
            raise ValueError(
                f"storage: cannot open {redacted(url)} ({first_line(exc)}); check the URL, that the database server "
                "is running and that this user may connect"
            ) from None
        raise


def _postgres_driver(url: str) -> str:
    """postgresql:// means psycopg2 to SQLAlchemy; the workbench installs psycopg 3, so name it where 2 is absent."""
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """A URL as printed: without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def dashboard_command(url: str) -> str:
    """The optuna-dashboard command line that shows this storage's studies in a browser."""
    target = url.removeprefix("journal:") if is_journal(url) else redacted(url)
    return f"optuna-dashboard {shlex.quote(target)}"


# --------------------------------------------------------------------------- what a study searches


def _span(name: str, values, kind=float, low_ok: float = 0.0) -> tuple:
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

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= 10_000:
            raise ValueError(
                f"search: the number of trials must be a whole number from 1 to 10000; got {self.trials!r}"
            )
        self.ranks = _span("ranks", self.ranks, int, 1)
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
        self.alpha = _span("alpha", self.alpha, float, 1e-6)
        self.lr = _span("lr", self.lr, float, 1e-9)
        self.dropout = _span("dropout", self.dropout, float, 0.0)
        if self.dropout[1] >= 1:
            raise ValueError(f"dropout: the range must stay below 1; got up to {self.dropout[1]:g}")
        if self.minimize not in COSTS:
            raise ValueError(f"minimize: {self.minimize!r} is not one of {', '.join(COSTS)}")
        if self.max_memory_mib is not None and not self.max_memory_mib > 0:
            raise ValueError(f"max memory: give a positive number of MiB; got {self.max_memory_mib!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = [t if isinstance(t, str) else list(t) for t in self.targets]
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
        with _quiet():
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


@contextmanager
def _quiet():
    """Optuna's own log lines (a trial finished, a grid exhausted) are said by the workbench's status instead;
    its "experimental" warnings (heartbeats) are not the user's business."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


# --------------------------------------------------------------------------- one trial


class Stood(Exception):
    """A trial that gives way: another has its run, or its setting will not fit (the trial is pruned)."""


@dataclass
class Worker:
    """One worker's part in a study: what it runs with and where it reports."""

    study: object
    definition: StudyDef
    out_dir: Path
    name: str = ""
    stop: threading.Event = field(default_factory=threading.Event)  # the run going ends after its step
    finish: threading.Event = field(default_factory=threading.Event)  # no new trial starts
    fit_check: bool = True
    on_point: Callable[[PointResult], None] | None = None
    on_status: Callable[[str], None] | None = None
    on_progress: object = None
    sinks: tuple = ()
    done: list[PointResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or os.environ.get("WORKBENCH_WORKER") or f"{socket.gethostname()}/{os.getpid()}"
        self.out_dir = Path(self.out_dir).resolve()
        self._grid = self.definition.grid_runs(self.out_dir) if self.definition.grid else {}
        self._points = {p.label: p for p in self.definition.grid.points()} if self.definition.grid else {}

    def say(self, text: str) -> None:
        if self.on_status is not None:
            self.on_status(text)

    # ------------------------------------------------------------ choosing the setting

    def setting(self, trial) -> tuple[SweepPoint, int]:
        d = self.definition
        if d.grid is not None:
            space = d.grid_space()
            label = trial.suggest_categorical("setting", space["setting"])
            return self._points[label], trial.suggest_categorical("seed", space["seed"])
        s = d.space
        bits = trial.suggest_categorical("bits", s.bits)
        quant = (
            (
                trial.suggest_categorical("quant_type", s.quant_types),
                trial.suggest_categorical("double_quant", s.double_quants),
            )
            if bits == 4
            else ("nf4", True)
        )
        point = SweepPoint(
            bits=bits,
            rank=trial.suggest_int("rank", *s.ranks, log=True),
            targets=_targets_value(trial.suggest_categorical("targets", [targets_label(t) for t in s.targets])),
            quant_type=quant[0],
            double_quant=quant[1],
            alpha=round(trial.suggest_float("alpha", *s.alpha, log=True), 1),
            lr=float(f"{trial.suggest_float('lr', *s.lr, log=True):.2g}"),
            dropout=round(trial.suggest_float("dropout", *s.dropout), 2),
        )
        return point, int(trial.user_attrs.get("seed", d.base.train.seed))

    # ------------------------------------------------------------ the objective

    def objective(self, trial):
        import optuna

        point, seed = self.setting(trial)
        cfg = with_seed(point.config(self.definition.base), seed)
        out = point_dir(self.out_dir, point, seed, self.definition.base.train.seed)
        for key, value in (
            ("run", out.name),
            ("out", str(out)),
            ("point", _point_dict(point)),
            ("seed", seed),
            ("worker", self.name),
            ("person", default_user()),
            ("host", socket.gethostname()),
        ):
            trial.set_user_attr(key, value)
        try:
            self._stand_down_for_an_earlier(trial, out.name)
            self._check_fit(trial, cfg, point)
        except Stood as why:
            trial.set_user_attr("status", str(why))
            raise optuna.TrialPruned(str(why)) from None
        trial.set_user_attr("counted", True)  # a search's budget counts the settings that were tried
        self._queue_repeats(trial, seed)
        started = time.perf_counter()
        res = self._train(trial, point, cfg, out, seed)
        res.seconds = time.perf_counter() - started
        self.done.append(res)
        if self.on_point is not None:
            self.on_point(res)
        if res.result is None or res.error or res.status == "stopped":
            reason = res.error or res.status
            trial.set_user_attr("status", f"{res.status}: {reason}" if res.status != reason else res.status)
            raise TrialFailed(reason)
        trial.set_user_attr("status", res.status)
        trial.set_user_attr("result", res.result.to_dict())
        return self._values(res.result)

    def _values(self, r: VariantResult) -> list[float]:
        score = getattr(r, self.definition.score)
        if score is None:
            raise TrialFailed(f"the run has no {self.definition.score} to score it by")
        cost = r.peak_memory_bytes / 2**20 if self.definition.cost == "memory" else r.train_seconds
        return [float(score), float(cost or 0.0)]

    def _train(self, trial, point: SweepPoint, cfg: RunConfig, out: Path, seed: int) -> PointResult:
        from workbench.experiments.comparison import run_compare

        if saved_run(out, cfg) is not None:
            self.say(f"trial {trial.number}: {out.name} is on disk with the same settings: read back")
            return PointResult(point, out, "loaded", Run(out).results()[0], seed=seed)
        self.say(f"trial {trial.number}: training {out.name} ({self.name})")
        try:
            result = run_compare(
                cfg, out, stop=self.stop, on_progress=self.on_progress, sinks=self.sinks, fit_check=self.fit_check
            )
        except (ValueError, RuntimeError, MemoryError, OSError) as exc:  # this trial only; the worker goes on
            return PointResult(point, out, "failed", error=first_line(exc), seed=seed)
        trained = result.variants[0] if result.variants else None
        state = "failed" if trained and trained.error else "stopped" if result.stopped else "trained"
        return PointResult(point, out, state, trained, trained.error if trained else None, seed=seed)

    def _stand_down_for_an_earlier(self, trial, run: str) -> None:
        """Give way to a lower-numbered trial, live or finished, with the same run. Lower trials still choosing
        their setting are waited for (a moment), so two workers never both go ahead."""
        from optuna.trial import TrialState

        deadline = time.monotonic() + _heartbeat_s() * GRACE_BEATS * 2
        while True:
            earlier = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
                if t.number < trial.number
            ]
            undecided = [t for t in earlier if t.state == TrialState.RUNNING and "run" not in t.user_attrs]
            same = [t for t in earlier if t.user_attrs.get("run") == run]
            if same:
                raise Stood(f"duplicate of trial {same[0].number}")
            if not undecided or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def _check_fit(self, trial, cfg: RunConfig, point: SweepPoint) -> None:
        """A search never loads a setting whose estimate is above its budget (the free memory by default)."""
        from workbench.engine.layout import ModelLayout
        from workbench.engine.models import pick_device
        from workbench.experiments.sweep import estimated_peak
        from workbench.machine.admission import held_by_runs

        choice = pick_device(cfg.model.device, cfg.model.dtype, point.bits)
        peak = estimated_peak(ModelLayout.for_model(cfg.model.name), cfg, point.bits, choice)
        trial.set_user_attr("estimated_peak_mib", round(peak / 2**20))
        space = self.definition.space
        if space is None:  # a grid: run_compare's own fit check refuses it, and the point reports why
            return
        if space.max_memory_mib is not None:
            budget = space.max_memory_mib * 2**20
        else:
            free = memory.available_bytes(choice.type, choice.device)
            budget = None if free is None else free + held_by_runs(choice.device)
        over = 0.0 if budget is None else (peak - budget) / 2**20
        trial.set_constraint("memory", over)  # the sampler learns where the budget ends
        if over > 0:
            raise Stood(
                f"will not fit: estimated {peak / 2**20:,.0f} MiB, more than the {budget / 2**20:,.0f} MiB allowed"
            )

    def _queue_repeats(self, trial, seed: int) -> None:
        """A search's setting is tried again with the other seeds, as trials any worker takes."""
        d = self.definition
        if d.space is None or d.seeds == 1 or seed != d.base.train.seed:
            return
        for s in seed_values(d.base, d.seeds)[1:]:
            self.study.enqueue_trial(trial.params, user_attrs={"seed": s, "repeat_of": trial.number})

    # ------------------------------------------------------------ the worker loop

    def left(self, trials) -> int:
        """Trials still to start: a grid's runs nobody has (finished, running or queued), a search's budget."""
        from optuna.trial import TrialState

        live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if self.definition.grid is not None:
            held = {t.user_attrs.get("run") for t in trials if t.state in live}
            choosing = sum(t.state == TrialState.RUNNING and "run" not in t.user_attrs for t in trials)
            return max(0, len(set(self._grid) - held) - choosing) + waiting
        counted = {
            t.user_attrs["run"] for t in trials if t.user_attrs.get("counted") and "repeat_of" not in t.user_attrs
        }
        return max(0, self.definition.space.trials - len(counted)) + waiting

    def queue_unfinished(self) -> None:
        """A grid's runs that failed or stopped before (and that nobody has now) are queued to try again, as
        today's sweep does; so is a finished run whose folder on this machine is gone."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        host = socket.gethostname()
        held, tried = set(), {}
        for t in trials:
            run = t.user_attrs.get("run")
            if run is None:
                continue
            gone = (
                t.state == TrialState.COMPLETE
                and t.user_attrs.get("host") == host
                and not Path(t.user_attrs["out"]).exists()
            )
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) and not gone:
                held.add(run)
            else:
                tried[run] = t
        for run, t in tried.items():
            if run not in held and run in self._grid:
                self.study.enqueue_trial(t.params, user_attrs={"run": run})

    def work(self) -> list[PointResult]:
        """Take trials until none is left to start (waiting while other workers' trials run, so one of theirs
        that dies is retried here), or until finish or stop. Returns what this worker did."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        if self.definition.grid is not None:
            self.queue_unfinished()
        cap = 4 * self._planned() + 10  # a search that only proposes settings that will not fit ends
        asked = 0
        said_waiting = False
        with _quiet():
            self.study.sampler = self._sampler()
            while not (self.finish.is_set() or self.stop.is_set()) and asked < cap:
                fail_stale_trials(self.study)
                trials = self.study.get_trials(deepcopy=False)
                if self.left(trials) > 0:
                    said_waiting = False
                    asked += 1
                    self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
                    continue
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if not running:
                    break
                if not said_waiting:
                    self.say(f"nothing left to start; waiting while {len(running)} trial(s) run on other workers")
                    said_waiting = True
                self.finish.wait(POLL_S)
        return self.done

    def _planned(self) -> int:
        d = self.definition
        return len(self._grid) if d.grid is not None else d.space.trials * d.seeds

    def _sampler(self):
        import optuna

        d = self.definition
        if d.grid is not None:
            return optuna.samplers.GridSampler(d.grid_space(), seed=0)
        # workers sample differently (no fixed seed), and learn from each trial's memory constraint
        return optuna.samplers.TPESampler(
            n_startup_trials=max(4, min(10, d.space.trials // 3)), multivariate=True, group=True, seed=None
        )


class TrialFailed(Exception):
    """The trial's run failed (out of memory, a bad setting, stopped): recorded, and the worker goes on."""


def _targets_value(label: str):
    return label if label == "all-linear" else tuple(label.split("+"))


def _point_dict(point: SweepPoint) -> dict:
    d = asdict(point)
    d["targets"] = point.targets if isinstance(point.targets, str) else list(point.targets)
    return d


# --------------------------------------------------------------------------- reading a study


def trial_point(t) -> PointResult | None:
    """A trial as the sweep's row: its settings, its status and (finished) its result, from the study alone, so
    a study whose folders are on other machines still reads."""
    from optuna.trial import TrialState

    a = t.user_attrs
    if "point" not in a:
        return None
    d = dict(a["point"])
    d["targets"] = d["targets"] if isinstance(d["targets"], str) else tuple(d["targets"])
    point = SweepPoint(**d)
    result = VariantResult.from_dict(a["result"]) if a.get("result") else None
    state = {
        TrialState.COMPLETE: a.get("status", "trained"),
        TrialState.RUNNING: "running",
        TrialState.WAITING: "queued",
        TrialState.PRUNED: a.get("status", "pruned"),
        TrialState.FAIL: "failed",
    }[t.state]
    error = None
    if t.state == TrialState.FAIL:
        status = a.get("status", "")
        error = status.split(": ", 1)[1] if ": " in status else "its worker stopped answering (queued again)"
    seconds = t.duration.total_seconds() if t.duration else 0.0
    return PointResult(point, Path(a["out"]), state, result, error, seconds, a.get("seed"))


def trials_frame(study):
    """The study's trial log: number, state, run, seed, who ran it where, its objectives and how long it took."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "run": a.get("run", ""),
                "seed": a.get("seed"),
                "worker": a.get("worker", ""),
                "person": a.get("person", ""),
                "status": a.get("status", ""),
                "score": None if not t.values else round(t.values[0], 4),
                "cost": None if not t.values else round(t.values[1], 1),
                "started": t.datetime_start.strftime("%H:%M:%S") if t.datetime_start else "",
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            }
        )
    return pd.DataFrame(rows)


def counts(study) -> dict[str, int]:
    """Trials by state: running, finished, failed, queued, pruned."""
    names = {"COMPLETE": "finished", "RUNNING": "running", "FAIL": "failed", "WAITING": "queued", "PRUNED": "pruned"}
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = names[t.state.name]
        out[key] = out.get(key, 0) + 1
    return out


def finished_points(study) -> list[PointResult]:
    """One row per run that finished (the trial that did it), in the order they finished."""
    from optuna.trial import TrialState

    seen, out = set(), []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete):
        p = trial_point(t)
        if p is not None and p.label not in seen:
            seen.add(p.label)
            out.append(p)
    return out


def write_trials(out_dir: str | Path, study) -> Path:
    """The study's trial log as trials.csv beside the sweep's table, written whole."""
    from workbench.core.files import write_csv

    frame = trials_frame(study)
    return write_csv(Path(out_dir) / "trials.csv", frame.to_dict("records"), list(frame.columns))


def studies_in(runs_dir: str | Path) -> list[dict]:
    """The sweeps' studies kept in a runs folder (a study.sqlite3 one folder down): each one's folder, name,
    trials by state and the optuna-dashboard command. A file that is not a readable study is named as such."""
    files = sorted(Path(runs_dir).glob(f"*/{STUDY_FILE}"))
    if not files:
        return []  # Optuna is not even imported
    import optuna

    found = []
    for path in files:
        url = default_storage(path.parent)
        command = dashboard_command(url)
        try:
            with _quiet():
                store = open_storage(url)
                for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
                    st = optuna.load_study(study_name=summary.study_name, storage=store)
                    found.append(
                        {
                            "folder": path.parent.name,
                            "study": summary.study_name,
                            "trials": counts(st),
                            "command": command,
                        }
                    )
        except Exception as exc:  # anything in a shared folder may be damaged: it is named, and the view goes on
            found.append(
                {"folder": path.parent.name, "study": "", "trials": {}, "command": command, "error": first_line(exc)}
            )
    return found
