"""`workbench sweep`: one adapter per setting of a grid (or of a search) as an Optuna study, here or in worker
processes; then the sweep's table, its chart and the trial log."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli.options import add_run_options, folder, listed, overrides, span_option
from workbench.cli.output import print_eval_plan
from workbench.cli.stopping import staged_stop, terminal
from workbench.core.config import INITS

NO_NEW_TRIAL = "\nno new trial will start; the running ones finish (Ctrl-C again: stop them)"
STOP_TRIALS = "\nstopping the running trials after their step (Ctrl-C again to abort)..."


def add_parser(sub) -> None:
    w = sub.add_parser(
        "sweep",
        help="train one adapter per setting of a grid (or of a search) as an Optuna study; chart accuracy vs memory",
    )
    add_run_options(w, sweep=True)
    w.add_argument("--ranks", help="Comma list of LoRA ranks to try (default 2,8,32); a search's range: 1,64.")
    w.add_argument(
        "--target-sets",
        help="Target-module sets to try, separated by ';' (default 'q_proj,v_proj;all-linear'; a search also "
        "tries q_proj,k_proj,v_proj,o_proj).",
    )
    w.add_argument("--bits", help="Comma list of base bits to try: 16, 8, 4 (default 16,4; a search: 16,8,4).")
    w.add_argument("--quant-types", help="4-bit types to try: nf4, fp4 or nf4,fp4 (default nf4; a search: both).")
    w.add_argument(
        "--double-quant", help="Double quantization at 4 bits: on, off or on,off (default on; a search: both)."
    )
    w.add_argument(
        "--inits",
        help=f"Comma list of adapter inits to try ({', '.join(INITS)}; default: --init's one); each only at the bits "
        "it works on (loftq 4; pissa, olora 16 and 4), the other combinations left out with a note. A search "
        "chooses among them.",
    )
    w.add_argument(
        "--loraplus-ratios",
        help="Comma list of LoRA+ ratios to try (1 = plain LoRA; default: --loraplus-ratio's one); a search's "
        "range, LOW,HIGH on a log scale.",
    )
    w.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="Train each point this many times with the seed and the ones after it (default 1): the table and the "
        "chart show each point's mean, its spread across seeds and its interval.",
    )
    w.add_argument(
        "--search",
        type=int,
        metavar="N",
        help="Instead of a grid, try N settings chosen by Optuna's multi-objective sampler from ranges (rank on a "
        "log scale, targets, bits, 4-bit type, double quantization, alpha, learning rate, dropout): score up, "
        "memory (or time) down; a setting whose estimate will not fit is never loaded.",
    )
    w.add_argument("--alpha-range", help="A search's LoRA alpha range, LOW,HIGH (default 4,64; log scale).")
    w.add_argument("--lr-range", help="A search's learning-rate range, LOW,HIGH (default 1e-4,3e-3; log scale).")
    w.add_argument("--dropout-range", help="A search's LoRA dropout range, LOW,HIGH (default 0,0.1).")
    w.add_argument(
        "--minimize", choices=["memory", "time"], help="A search's cost to push down: peak memory (default) or time."
    )
    w.add_argument(
        "--max-memory",
        type=float,
        metavar="MIB",
        help="A search never loads a setting estimated above this peak (default: the memory free).",
    )
    w.add_argument(
        "--storage",
        help="Where the study lives: an SQLAlchemy URL (postgresql://user:pass@host/db, mysql://...), sqlite:///FILE "
        "or journal:FILE for a shared filesystem (default: sqlite in --out). Workers anywhere that give the same "
        "--storage and --study share the trials.",
    )
    w.add_argument(
        "--study", help="The study's name (default: made from the settings, so the same sweep finds its study)."
    )
    w.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Worker processes on this machine (default 1): one a visible GPU, or on a CPU the cores split "
        "between them. Ctrl-C once: no new trial starts; twice: the running ones stop after their step.",
    )
    w.add_argument("--plan", action="store_true", help="Print the grid, its estimates and its time; train nothing.")
    w.add_argument(
        "--out", type=folder, default="runs/sweep", help="Folder for the points' run folders (default runs/sweep)."
    )


def run(a: argparse.Namespace) -> int:
    from workbench.core.config import preset_config
    from workbench.experiments.seeds import check_seeds
    from workbench.experiments.study.space import SearchSpace, StudyDef
    from workbench.experiments.study.storage import dashboard_command, default_storage, open_storage, redacted
    from workbench.experiments.sweep import SweepGrid, plan

    check_seeds(a.seeds)
    if isinstance(a.workers, bool) or not 1 <= a.workers <= 64:
        raise ValueError(f"--workers: give a whole number from 1 to 64; got {a.workers}")
    choices = sweep_choices(a)
    search_only = {"--alpha-range": a.alpha_range, "--lr-range": a.lr_range, "--dropout-range": a.dropout_range}
    search_only.update({"--minimize": a.minimize, "--max-memory": a.max_memory})
    if a.search is None:
        given = [name for name, value in search_only.items() if value is not None]
        if given:
            raise ValueError(f"{given[0]}: only a search takes it; add --search N")
        grid = SweepGrid(**choices)
        space = None
    else:
        if "ranks" in choices:
            choices["ranks"] = (min(choices["ranks"]), max(choices["ranks"]))
        if "loraplus_ratios" in choices:  # a search samples the ratio from the range the values span
            ratios = choices.pop("loraplus_ratios")
            choices["loraplus_ratio"] = (min(ratios), max(ratios))
        for key, option in (("alpha", "--alpha-range"), ("lr", "--lr-range"), ("dropout", "--dropout-range")):
            span = span_option(option, search_only[option])
            if span is not None:
                choices[key] = span
        if a.minimize:
            choices["minimize"] = a.minimize
        if a.max_memory is not None:
            choices["max_memory_mib"] = a.max_memory
        space, grid = SearchSpace(trials=a.search, **choices), None
    base = preset_config(a.preset, sweep_overrides(a))
    check_run_inputs(base, a.out)
    storage = a.storage or default_storage(a.out)
    if a.storage:  # a database given: reached (or refused in one line) before anything is planned or loaded
        open_storage(a.storage)
    definition = StudyDef(base, a.seeds, grid=grid, space=space)
    study_name = a.study or definition.default_name()
    sweep = None
    if grid is not None:
        sweep = plan(grid, base, a.out, runs_root=Path(a.out).parent, seeds=a.seeds)
        print(sweep.describe())
        for p in sweep.points:
            how = "on disk" if p.cached else f"~{p.estimated_seconds:.0f} s"
            print(f"  {p.label:<40} estimated peak {p.estimated_peak_bytes / 2**20:7,.0f} MiB ({p.fit})  {how}")
    else:
        print_eval_plan(base, Path(a.out).parent, a.seeds, base=False)
        print(describe_space(space, a.seeds))
    print(f"study {study_name!r} in {redacted(storage)}; to watch it: {dashboard_command(storage)}")
    if a.plan:
        return 0
    return run_sweep_study(a, definition, sweep, storage, study_name)


def sweep_choices(a: argparse.Namespace) -> dict:
    """The grid's (or the search's) values the options give; the ones not given are left to the defaults."""
    switches = {"on": True, "off": False}
    out: dict = {}
    if a.ranks is not None:
        out["ranks"] = listed("--ranks", a.ranks, int)
    if a.target_sets is not None:
        out["targets"] = listed("--target-sets", a.target_sets, sep=";")
    if a.bits is not None:
        out["bits"] = listed("--bits", a.bits, int)
    if a.quant_types is not None:
        out["quant_types"] = listed("--quant-types", a.quant_types)
    if a.double_quant is not None:
        bad = [v for v in listed("--double-quant", a.double_quant) if v not in switches]
        if bad:
            raise ValueError(f"--double-quant: {bad[0]!r} is not on or off")
        out["double_quants"] = [switches[v] for v in listed("--double-quant", a.double_quant)]
    if a.inits is not None:
        out["inits"] = listed("--inits", a.inits)
    elif getattr(a, "lora.init", None) not in (None, "gaussian"):  # --init alone: the points' names show it
        out["inits"] = [getattr(a, "lora.init")]
    if a.loraplus_ratios is not None:
        out["loraplus_ratios"] = listed("--loraplus-ratios", a.loraplus_ratios, float)
    return out


def sweep_overrides(a: argparse.Namespace) -> dict:
    """The base config's overrides. Every point sets its own variant, so the base's list follows --init: the
    preset's base,lora,qlora would refuse an init made for 4 bits alone before a point is planned."""
    from workbench.core.config import VARIANT_TABLE

    out = overrides(a)
    init = out["lora"].get("init")
    if init is not None:
        out["variants"] = ["base"] + [v.name for v in VARIANT_TABLE if v.trained and v.bits in INITS[init].bits]
    return out


def check_run_inputs(cfg, out: str) -> None:
    """What plan does not read: the data and the output folder (each point would fail on them alone)."""
    from workbench.core.files import check_writable_dir
    from workbench.data import task_for

    check_writable_dir(Path(out))
    task_for(cfg)


def describe_space(space, seeds: int) -> str:
    from workbench.experiments.sweep import targets_label

    bits = ", ".join(map(str, space.bits))
    repeats = f" x {seeds} seeds" if seeds > 1 else ""
    return (
        f"search: {space.trials} settings{repeats}, score up and {space.minimize} down; rank {space.ranks[0]}-"
        f"{space.ranks[1]} (log), targets {' | '.join(targets_label(t) for t in space.targets)}, bits {bits}, "
        f"alpha {space.alpha[0]:g}-{space.alpha[1]:g}, lr {space.lr[0]:g}-{space.lr[1]:g}, "
        f"dropout {space.dropout[0]:g}-{space.dropout[1]:g}"
        + (f", init {' | '.join(space.inits)}" if space.inits else "")
        + (
            f", LoRA+ ratio {space.loraplus_ratio[0]:g}-{space.loraplus_ratio[1]:g} (log)"
            if space.loraplus_ratio
            else ""
        )
    )


def run_sweep_study(a: argparse.Namespace, definition, sweep, storage: str, study_name: str) -> int:
    """Work on the study (here or in --workers processes), then print and write the table, the chart and the
    trial log. The first Ctrl-C starts no new trial; the second stops the running ones after their step."""
    from datetime import datetime

    import pandas as pd

    from workbench.analysis.settings import settings_frame
    from workbench.experiments.study.reading import counts, finished_points, write_trials
    from workbench.experiments.study.storage import dashboard_command
    from workbench.experiments.study.workers import in_plan_order, run_study
    from workbench.experiments.sweep import point_settings, sweep_frame, write_sweep

    began = datetime.now()
    with staged_stop(NO_NEW_TRIAL, STOP_TRIALS) as stages, terminal(stages.events[1], bars=a.workers == 1) as hooks:
        st, done = run_study(
            definition,
            a.out,
            hooks,
            storage=storage,
            study=study_name,
            workers=a.workers,
            finish=stages.events[0],
            fit_check=not a.skip_fit_check,
        )
    if sweep is not None:
        points = in_plan_order(sweep, st, {p.label: p for p in done}, began)
    else:
        points = finished_points(st)
    with pd.option_context("display.width", 220, "display.max_columns", 30):
        if points:
            print(sweep_frame(points).to_string(index=False))
        if a.seeds > 1 and points:
            print(f"\nover {a.seeds} seeds (mean, spread across seeds, 95% interval of the mean):")
            groups = point_settings(points)
            print(settings_frame(groups, label=lambda g: Path(g.runs[0]).name).to_string(index=False))
    written = write_sweep(a.out, points) if points else []
    written.append(write_trials(a.out, st))
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts(st).items()))
    print(f"study {study_name!r}: {tally}; to look at it: {dashboard_command(storage)}")
    print(
        f"wrote {Path(a.out).resolve()} ({', '.join(p.name for p in written)})"
        + (" (stopped early)" if stages.stopping else "")
    )
    return 0
