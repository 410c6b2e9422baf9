"""One worker's part in a study: it asks Optuna for a trial, turns it into one setting and one seed, trains it
into its own run folder and reports the score and the cost, until nothing is left to start.

No setting is trained twice: a trial whose run another live or finished trial already has gives way (pruned,
"duplicate of trial N"), the lower trial number winning, and a run folder on disk with the same settings is
read back, not retrained. A setting whose estimate will not fit is pruned before anything loads.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.core.config import RunConfig
from workbench.core.events import Hooks
from workbench.experiments.seeds import seed_values, with_seed
from workbench.experiments.study.space import StudyDef
from workbench.experiments.study.storage import GRACE_BEATS, heartbeat_s, quiet_optuna
from workbench.experiments.sweep import PointResult, SweepPoint, point_dir, saved_run, targets_label
from workbench.machine import memory
from workbench.records.results import VariantResult, first_line
from workbench.records.runs import Run, default_user

POLL_S = 1.0  # how often a worker with nothing to take looks at the study again


class TrialDeferral(Exception):
    """A trial that gives way: another has its run, or its setting will not fit (the trial is pruned)."""


@dataclass
class Worker:
    """One worker's part in a study: what it runs with and where it reports."""

    study: object
    definition: StudyDef
    out_dir: Path
    name: str = ""
    # its stop ends the run going after its step; its status hears of each trial; its sinks and progress
    # hear of the trial's training
    hooks: Hooks = field(default_factory=Hooks)
    finish: threading.Event = field(default_factory=threading.Event)  # no new trial starts
    fit_check: bool = True
    on_point: Callable[[PointResult], None] | None = None
    done: list[PointResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or os.environ.get("WORKBENCH_WORKER") or f"{socket.gethostname()}/{os.getpid()}"
        self.out_dir = Path(self.out_dir).resolve()
        self._grid = self.definition.grid_runs(self.out_dir) if self.definition.grid else {}
        self._points = {p.label: p for p in self.definition.grid.points()} if self.definition.grid else {}

    def say(self, text: str) -> None:
        self.hooks.status(text)

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
            init=self._init(trial, bits),
            loraplus_ratio=(
                None
                if s.loraplus_ratio is None
                else float(f"{trial.suggest_float('loraplus_ratio', *s.loraplus_ratio, log=True):.2g}")
            ),
        )
        return point, int(trial.user_attrs.get("seed", d.base.train.seed))

    def _init(self, trial, bits: int) -> str | None:
        """The trial's init, from those that work at its bits. Optuna keeps one list of choices a parameter, so
        bits whose list is not the whole one choose under a name of their own (init_16bit)."""
        s = self.definition.space
        if s.inits is None:
            return None
        fits = s.inits_at(bits)
        return trial.suggest_categorical("init" if fits == s.inits else f"init_{bits}bit", fits)

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
        except TrialDeferral as why:
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
            # the run's own phase lines are not the study's: only its steps, progress and stop are handed on
            hooks = Hooks(sinks=self.hooks.sinks, stop=self.hooks.stop, on_progress=self.hooks.on_progress)
            result = run_compare(cfg, out, hooks=hooks, fit_check=self.fit_check)
        except (ValueError, RuntimeError, MemoryError, OSError) as exc:  # this trial only; the worker goes on
            return PointResult(point, out, "failed", error=first_line(exc), seed=seed)
        trained = result.variants[0] if result.variants else None
        state = "failed" if trained and trained.error else "stopped" if result.stopped else "trained"
        return PointResult(point, out, state, trained, trained.error if trained else None, seed=seed)

    def _stand_down_for_an_earlier(self, trial, run: str) -> None:
        """Give way to a lower-numbered trial, live or finished, with the same run. Lower trials still choosing
        their setting are waited for (a moment), so two workers never both go ahead."""
        from optuna.trial import TrialState

        deadline = time.monotonic() + heartbeat_s() * GRACE_BEATS * 2
        while True:
            earlier = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
                if t.number < trial.number
            ]
            undecided = [t for t in earlier if t.state == TrialState.RUNNING and "run" not in t.user_attrs]
            same = [t for t in earlier if t.user_attrs.get("run") == run]
            if same:
                raise TrialDeferral(f"duplicate of trial {same[0].number}")
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
            raise TrialDeferral(
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

    def to_start(self, trials) -> int:
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
        with quiet_optuna():
            self.study.sampler = self._sampler()
            while not (self.finish.is_set() or self.hooks.stop.is_set()) and asked < cap:
                fail_stale_trials(self.study)
                trials = self.study.get_trials(deepcopy=False)
                if self.to_start(trials) > 0:
                    said_waiting = False
                    asked += 1
                    # no collection after each trial: a trial's run frees its own models (memory.release), and one
                    # more full collection with torch loaded costs 0.3-0.4 s, on every pass, pruned trials included
                    self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
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
