"""Compare base, LoRA and QLoRA on one task: the loop that runs experiments.phases in order, one base precision
at a time, writing the run folder as it goes (`workbench compare`, the Train tab, a sweep's trials), and its
continuation (continue_run) in the same folder.
"""

from __future__ import annotations

from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import Hooks
from workbench.core.files import check_writable_dir
from workbench.data import Task
from workbench.engine.generate import DecodeSettings
from workbench.engine.train import TrainState
from workbench.experiments.phases import load_group, run_base, run_trained
from workbench.experiments.run_setup import (
    RunSetup,
    VariantStart,
    check_fit,
    planned_stages,
    setup,
    start_result,
    unfinished_result,
)
from workbench.experiments.skeleton import RunWriter, run_skeleton
from workbench.machine import admission, memory
from workbench.records.results import CompareResult
from workbench.records.runs import Run, check_user, default_user


def run_compare(
    cfg: RunConfig,
    out_dir: str | Path,
    hooks: Hooks | None = None,
    *,
    decode: DecodeSettings | None = None,
    task: Task | None = None,
    resume: bool = False,
    fit_check: bool = True,
    command: str = "",
    user: str | None = None,
) -> CompareResult:
    """Run every variant of cfg in turn and write the run folder. Only one model is in memory at a time.

    `hooks` (core.events.Hooks): the sinks every training step goes to, the stop event, and who hears of the
    status, the progress of every phase (load, evaluate, train, answer) and each variant's start.
    `task` overrides cfg.task/cfg.data with data already loaded (e.g. from a DataFrame via
    workbench.data.load_data_task). With `resume`, out_dir is a run to continue (see continue_run): each
    trained variant saved there picks up its adapter and training state and trains on to cfg.train.steps; the
    rest run as new; every variant is scored again (the base's scores may come from the score cache).
    With `fit_check`, a variant whose estimated peak will not fit in the device's free memory is refused before
    anything loads (ValueError); a variant that runs out of memory all the same is marked "out of memory" in
    the results and the next precision runs. `command`: the command line that started it, kept with the run;
    `user`: who made it (default records.runs.default_user(): WORKBENCH_USER or the login name)."""
    run = Run(check_writable_dir(out_dir))  # before any data is read or weights load
    who = check_user(user) if user else default_user()
    earlier = saved_states(run) if resume else {}
    hooks = (hooks or Hooks()).counted(planned_stages(cfg))
    s = setup(cfg, task=task, decode=decode, hooks=hooks)
    tight = check_fit(s) if fit_check else []
    # the machine's runs take turns (machine.admission): this one waits until its largest variant fits
    peak = max(s.estimate(name) for name in cfg.variants)
    ticket = admission.take_turn(peak, s.choice.device, f"{who}: {run.path.name}", hooks.status, hooks.stop)
    if hooks.stop.is_set():  # stopped while it waited: nothing was made
        if ticket is not None:
            ticket.release()
        return start_result(s, tight, command=command, user=who, stopped=True)
    result = start_result(s, tight, command=command, user=who)
    with run_skeleton(run, result, ticket, kept_metrics(run, earlier) if resume else []) as writer:
        for note in result.notes:
            hooks.status(note)
        run_groups(s, writer, earlier, hooks.adding([writer.metrics, result.metrics.append]), ticket)
    return result


def run_groups(s: RunSetup, writer: RunWriter, earlier: dict[str, TrainState], hooks: Hooks, ticket) -> None:
    """Each base precision in turn, the memory freed between them; out of memory ends that precision only (its
    variants get a row saying so), anything else ends the run (the variant it was in gets a row saying why)."""
    result, current = writer.result, None  # the variant running now: a failure is marked on its row

    def started(name: str) -> None:
        nonlocal current
        current = name
        admission.share_cores(ticket)
        if hooks.on_variant:
            hooks.on_variant(VariantStart(name, VARIANTS[name].bits, s.estimate(name), s.choice.type))

    monitor = None
    try:
        for bits, names in s.groups().items():
            if hooks.stop.is_set():
                break
            memory.release()
            monitor = memory.MemoryMonitor(s.choice.device).start()
            try:
                run_group(s, writer, bits, names, monitor, started, hooks, earlier)
            except Exception as exc:
                done = {v.name for v in result.variants}
                if not memory.is_out_of_memory(exc):
                    if current and current not in done:  # marked in the results, then raised
                        result.variants.append(unfinished_result(s, current, exc))
                    raise
                for name in (n for n in names if n not in done):
                    result.variants.append(unfinished_result(s, name, exc))
                    hooks.status(result.variants[-1].error)
            # the model lived in run_group's frame: with the exception handled, the next group's release() (or
            # the one in finally) frees it
            monitor.stop()
        result.stopped = hooks.stop.is_set()
    except KeyboardInterrupt:  # a kernel interrupt outside a training step: what finished is written, as stopped
        result.stopped = True
        raise
    finally:
        if monitor is not None:
            monitor.stop()  # also when a variant failed: a running monitor would keep counting
        memory.release()


def run_group(
    s: RunSetup,
    writer: RunWriter,
    bits: int,
    names: list[str],
    monitor: memory.MemoryMonitor,
    started,
    hooks: Hooks,
    earlier: dict[str, TrainState],
) -> None:
    """One base precision: load it (with the adapter to continue, if any), then each of its variants."""
    again = next((n for n in names if earlier.get(n) is not None), None)
    model = load_group(s, bits, names, hooks, writer.run.adapter_dir(again) if again else None)
    if "base" in names:
        started("base")
        writer.keep("base", run_base(s, model, monitor, hooks))
    for name in (n for n in names if VARIANTS[n].trained):
        started(name)
        adapter_dir = writer.run.adapter_dir(name)
        done = run_trained(s, model, name, monitor, hooks, adapter_dir=adapter_dir, resume=earlier.get(name))
        writer.keep(name, done)


def saved_states(run: Run) -> dict[str, TrainState]:
    """The training state saved with each of a run's adapters (the ones a continuation picks up)."""
    states = {v: run.training_state(v) for v in run.trained_variants()}
    return {v: st for v, st in states.items() if st is not None}


def kept_metrics(run: Run, states: dict[str, TrainState] | None = None) -> list:
    """The steps of a run that a continuation keeps: those of the adapters it picks up (`states`, read from the
    run when not given), up to their state."""
    states = saved_states(run) if states is None else states
    return [e for e in run.metrics() if e.variant in states and e.step <= states[e.variant].step]


def continue_run(run_dir: str | Path, steps: int | None = None, **kw) -> CompareResult:
    """Continue a stopped (or finished) run in its own folder up to `steps` steps in all (default: the steps
    it asked for): its adapters train on from their saved state, variants it never reached run as new.
    Keyword arguments as run_compare's (hooks, fit_check, command, ...)."""
    run = Run(run_dir)
    if not run.finished:
        raise ValueError(f"resume: {run.path} holds no finished run (no results.json); give a run folder")
    cfg = run.config()
    saved = saved_states(run)
    if run.trained_variants() and not saved:
        raise ValueError(f"resume: {run.path} was saved without its training state (an older run); start a new run")
    d = cfg.to_dict()
    d["train"]["steps"] = steps or cfg.train.steps
    done = max((st.step for st in saved.values()), default=0)
    if d["train"]["steps"] < done:
        raise ValueError(f"steps: the run has done {done} steps already; ask for more than that to continue it")
    kw.setdefault("user", run.read().get("user") or None)  # a continued run stays its maker's
    return run_compare(RunConfig.from_dict(d), run.path, resume=True, **kw)
