"""`workbench compare | sweep | train | estimate | preview | model-path | export | notebooks | app`: the same
work as the notebook panels, headless.

Input a user can get wrong exits with status 2 and one line that names the field.

Long because: one parser for every command keeps each option defined once, with its help read from the
config field it sets, and compare and sweep share their run options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

from workbench.core.config import (
    DEFAULT_MODEL,
    DTYPES,
    VARIANT_TABLE,
    LoraSettings,
    ModelSettings,
    QuantSettings,
    TrainSettings,
)
from workbench.core.config import help_for as _field_help

EXIT_USAGE = 2


def help_for(cls: type, name: str) -> str:
    """A field's help text for argparse, which %-formats help strings ("30% slower" would garble --help)."""
    return _field_help(cls, name).replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse reads only -1 and -.5 as numbers: "--lr -1e-3" and "--dropout -inf" ended in "expected one
        # argument" instead of the field's own message about the value
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)

    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(EXIT_USAGE, f"workbench: error: {message}\n")


def _folder(text: str) -> str:
    """An --out folder: an empty one (an unset shell variable) would write the run into the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a folder, not an empty value")
    return text


def _add_model(p: argparse.ArgumentParser, default=None) -> None:
    p.add_argument(
        "--model",
        default=default,
        help=f"Local folder, Hugging Face name, or the embedded default ({DEFAULT_MODEL}, offline).",
    )


def _add_lora(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    if not sweep:  # a sweep chooses these per point
        p.add_argument("--rank", type=int, help=help_for(LoraSettings, "rank"))
        p.add_argument("--targets", help=help_for(LoraSettings, "target_modules"))
    p.add_argument("--alpha", type=float, help=help_for(LoraSettings, "alpha"))
    p.add_argument("--dropout", type=float, help=help_for(LoraSettings, "dropout"))
    p.add_argument("--rslora", action="store_true", default=None, help=help_for(LoraSettings, "use_rslora"))
    p.add_argument("--dora", action="store_true", default=None, help=help_for(LoraSettings, "use_dora"))
    _add_experts(p)


def _add_experts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-experts",
        action="store_true",
        default=None,
        help="Leave a mixture of experts' expert weights unadapted. " + help_for(LoraSettings, "adapt_experts"),
    )


def _add_train_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help=help_for(TrainSettings, "batch_size"))
    p.add_argument("--seq-len", type=int, help=help_for(TrainSettings, "seq_len"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description="Explore LoRA and QLoRA fine-tuning, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("compare", help="train and compare base, LoRA and QLoRA on one task")
    _add_run_options(c, sweep=False)
    c.add_argument(
        "--out",
        type=_folder,
        default="runs/latest",
        help="Folder for results, plots and adapters (default runs/latest).",
    )
    c.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="Train each variant this many times, with the seed and the ones after it, on the same eval examples "
        "(into OUT/seed-N): the results give each score's mean, its spread across seeds and its interval, and "
        "the comparisons pool every seed's examples (default 1).",
    )
    c.add_argument(
        "--resume",
        metavar="RUN",
        help="Continue a stopped or finished run folder up to --steps steps in all (default: the steps it asked "
        "for), from its saved adapters and optimizer state; the other options are the run's own.",
    )

    w = sub.add_parser(
        "sweep",
        help="train one adapter per setting of a grid (or of a search) as an Optuna study; chart accuracy vs memory",
    )
    _add_run_options(w, sweep=True)
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
        "--out", type=_folder, default="runs/sweep", help="Folder for the points' run folders (default runs/sweep)."
    )
    return _add_other_commands(parser, sub)


def _add_run_options(c: argparse.ArgumentParser, sweep: bool) -> None:
    """The options of one run, shared by compare and sweep (a sweep sets rank, targets and bits per point)."""
    _add_model(c)
    src = c.add_mutually_exclusive_group()
    src.add_argument("--task", help="Built-in task (see data/).")
    src.add_argument(
        "--data",
        help="Your own data: .jsonl/.json/.csv with prompt/answer (or response, "
        "completion), instruction/input/output or messages columns, or plain .txt.",
    )
    c.add_argument("--eval-data", help="A separate file to evaluate on (default: hold out --eval-fraction).")
    c.add_argument("--eval-fraction", type=float, help="Share of --data held out for evaluation (default 0.15).")
    c.add_argument("--columns", help="Map your column names: prompt=question,answer=label.")
    c.add_argument(
        "--skip-bad-rows",
        action="store_true",
        default=None,
        help="Skip unusable rows and report how many, instead of stopping at the first.",
    )
    _add_lora(c, sweep)
    if not sweep:
        c.add_argument(
            "--variants",
            help="Comma list of "
            + "; ".join(f"{v.name} ({v.help})" for v in VARIANT_TABLE)
            + ". Default base,lora,qlora.",
        )
    c.add_argument("--steps", type=int, help=help_for(TrainSettings, "steps"))
    _add_train_shape(c)
    c.add_argument("--lr", type=float, help=help_for(TrainSettings, "lr"))
    c.add_argument("--grad-accum", type=int, help=help_for(TrainSettings, "grad_accum"))
    c.add_argument("--warmup-steps", type=int, help=help_for(TrainSettings, "warmup_steps"))
    c.add_argument("--seed", type=int, help=help_for(TrainSettings, "seed"))
    c.add_argument("--eval-examples", type=int, help=help_for(TrainSettings, "eval_examples"))
    c.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help=help_for(TrainSettings, "gradient_checkpointing"),
    )
    if not sweep:
        c.add_argument("--quant-type", choices=["nf4", "fp4"], help=help_for(QuantSettings, "quant_type"))
        c.add_argument("--no-double-quant", action="store_true", default=None, help="Turn double quantization off.")
    c.add_argument(
        "--compute-dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help=help_for(QuantSettings, "compute_dtype"),
    )
    c.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="auto (default), cpu, cuda or mps.")
    c.add_argument("--dtype", choices=list(DTYPES), help=help_for(ModelSettings, "dtype"))
    c.add_argument("--preset", help="Start from a preset (cpu-demo, quickstart); explicit options override its values.")
    c.add_argument(
        "--skip-fit-check",
        action="store_true",
        help="Run even when a variant's estimated peak is more than the free memory (by default it is refused).",
    )


def _add_other_commands(parser: argparse.ArgumentParser, sub) -> argparse.ArgumentParser:
    e = sub.add_parser("estimate", help="print the memory breakdown of a variant without loading weights")
    e.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Local folder, Hugging Face name, a config shipped in "
        "data/model_configs/ or its short name (llama-2-7b, llama-65b, llama-3.1-8b, mistral-7b, "
        f"qwen2.5-7b, smollm2-1.7b, ...; offline, no weights). Default {DEFAULT_MODEL}.",
    )
    e.add_argument("--bits", type=int, default=4, help=help_for(QuantSettings, "bits"))
    e.add_argument("--rank", type=int, default=8, help=help_for(LoraSettings, "rank"))
    e.add_argument("--targets", default="all-linear", help=help_for(LoraSettings, "target_modules"))
    _add_experts(e)
    e.add_argument("--batch-size", type=int, default=8, help=help_for(TrainSettings, "batch_size"))
    e.add_argument("--seq-len", type=int, default=128, help=help_for(TrainSettings, "seq_len"))
    e.add_argument(
        "--gradient-checkpointing", action="store_true", help=help_for(TrainSettings, "gradient_checkpointing")
    )
    e.add_argument(
        "--no-double-quant",
        action="store_true",
        help="Turn double quantization off. " + help_for(QuantSettings, "double_quant"),
    )
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Device type to estimate for.")
    e.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype of the unquantized base and its activations (default: on cpu what this CPU's runs get, "
        "bfloat16 at 16 bits where it multiplies bfloat16 natively, else float32; bfloat16 on cuda).",
    )
    e.add_argument("--json", action="store_true", help="Print bytes per component and the total as JSON.")

    v = sub.add_parser("preview", help="show examples exactly as the model will see them, with statistics")
    _add_model(v, DEFAULT_MODEL)
    src = v.add_mutually_exclusive_group()
    src.add_argument("--task", help="Built-in task (default sentiment).")
    src.add_argument("--data", help="Your own data file (same formats as compare).")
    v.add_argument("--columns", help="Map your column names: prompt=question,answer=label.")
    v.add_argument("--eval-data", help="A separate file to evaluate on.")
    v.add_argument("--eval-fraction", type=float, default=0.15, help="Share of --data held out (default 0.15).")
    v.add_argument("--skip-bad-rows", action="store_true", help="Skip unusable rows and report how many.")
    v.add_argument("--seq-len", type=int, default=128, help=help_for(TrainSettings, "seq_len"))
    v.add_argument("-n", "--examples", type=int, default=3, help="How many examples to show.")

    t = sub.add_parser(
        "train", help="train one experiment (one variant, its settings in a YAML file); runs under accelerate/torchrun"
    )
    t.add_argument("config", help="The experiment's YAML file (the Train tab's Export run writes one).")
    t.add_argument(
        "--out", type=_folder, help="Folder for the run (default: beside the config, named after it, without .yaml)."
    )
    t.add_argument(
        "--skip-fit-check",
        action="store_true",
        help="Run even when the estimated peak is more than the free memory (by default it is refused).",
    )

    m = sub.add_parser("model-path", help="print the local folder a model name resolves to")
    m.add_argument("name", nargs="?", default=DEFAULT_MODEL)

    x = sub.add_parser("export", help="write a run's adapter with a model card, or the model merged (--merge)")
    x.add_argument("run", help="The run folder (from compare, a sweep point or the Train tab).")
    x.add_argument("--variant", default="lora", help="Which adapter: lora, lora8 or qlora (default lora).")
    x.add_argument(
        "--merge",
        action="store_true",
        help="Merge the adapter into its base (dequantized for 8 and 4 bits) and write a model folder that plain "
        "transformers loads; the gap to the adapter model is measured on the run's eval examples.",
    )
    x.add_argument("--dtype", default="bfloat16", help="Dtype of a merged model: bfloat16 (default), float16, float32.")
    x.add_argument("--out", required=True, help="A new folder to write to.")
    n = sub.add_parser("notebooks", help="copy the shipped notebooks into a folder, to open in JupyterLab")
    n.add_argument("dir", type=_folder, help="The folder to copy them into (made if missing; files there are kept).")
    _add_app_command(sub)
    return parser


def _add_app_command(sub) -> None:
    from workbench.cli.app_page import DEFAULT_PORT, TABS

    p = sub.add_parser("app", help="serve the workbench as a web page (Voila): the panels, no code cells")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port to serve on (default {DEFAULT_PORT}).")
    p.add_argument(
        "--runs",
        default=os.environ.get("WORKBENCH_RUNS") or "runs",
        help="Runs folder the page trains into and reads (default $WORKBENCH_RUNS, else runs): a class shares one.",
    )
    p.add_argument("--tabs", help=f"Comma list of tabs to show (default all): {','.join(TABS)}.")
    p.add_argument("--preset", default="quickstart", help="Preset the page starts from (default quickstart).")
    p.add_argument("--no-browser", action="store_true", help="Do not open a browser (the default with no screen).")
    p.add_argument(
        "--ip",
        default="127.0.0.1",
        help="Address to serve on (default 127.0.0.1: this machine only). Any other, e.g. 0.0.0.0 for a class on "
        "the network, is served with a token, printed in the link to give the class.",
    )
    p.add_argument("--token", help="The token the page asks for (default: one is made when --ip is not loopback).")


def _overrides(a: argparse.Namespace) -> dict:
    def pick(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    o: dict = {
        "model": pick(name=a.model, device=a.device, dtype=a.dtype),
        "lora": pick(
            rank=getattr(a, "rank", None),
            alpha=a.alpha,
            dropout=a.dropout,
            target_modules=getattr(a, "targets", None),
            use_rslora=a.rslora,
            use_dora=a.dora,
            adapt_experts=False if getattr(a, "no_experts", None) else None,
        ),
        "quant": pick(
            quant_type=getattr(a, "quant_type", None),
            double_quant=False if getattr(a, "no_double_quant", None) else None,
            compute_dtype=a.compute_dtype,
        ),
        "train": pick(
            steps=a.steps,
            batch_size=a.batch_size,
            seq_len=a.seq_len,
            lr=a.lr,
            seed=a.seed,
            grad_accum=a.grad_accum,
            warmup_steps=a.warmup_steps,
            eval_examples=a.eval_examples,
            gradient_checkpointing=a.gradient_checkpointing,
        ),
    }
    if getattr(a, "variants", None) is not None:
        o["variants"] = a.variants
    for key in ("eval_data", "eval_fraction", "columns", "skip_bad_rows"):
        if getattr(a, key) is not None:
            o[key] = getattr(a, key)
    if a.data is not None:
        o["data"], o["task"] = a.data, None
    elif a.task is not None:
        o["task"] = a.task
    return o


@contextlib.contextmanager
def _watched(what: str):
    """What a long command runs under: tqdm bars for every phase, status lines on stderr, and Ctrl-C: the
    first sets the stop flag (the work ends after its current step and keeps what it made), a second aborts.
    Yields the keyword arguments run_compare and run_sweep take for them."""
    from workbench.core.events import ProgressBars

    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print(f"\nstopping {what} (Ctrl-C again to abort)...", file=sys.stderr)
        stop.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    bars = ProgressBars()
    try:
        yield {
            "sinks": [bars.metric],
            "on_progress": bars,
            "stop": stop,
            "on_status": lambda msg: print(f"[workbench] {msg}", file=sys.stderr, flush=True),
        }
    finally:
        signal.signal(signal.SIGINT, old)
        bars.close()


def cmd_compare(a: argparse.Namespace) -> int:
    from workbench.core.config import preset_config
    from workbench.experiments.comparison import continue_run
    from workbench.experiments.seeds import check_seeds, run_seeds, seed_dir, seed_values
    from workbench.records.results import results_frame

    check_seeds(a.seeds)
    if a.resume:
        if a.seeds != 1:
            raise ValueError("seeds: --resume continues one run; give --seeds with a new run, not with --resume")
        a.out = a.resume
    cfg = None if a.resume else preset_config(a.preset, _overrides(a))
    if cfg is not None:
        from workbench.core.files import check_writable_dir

        seed_values(cfg, a.seeds)  # the last seed in range, before anything loads
        check_writable_dir(Path(a.out))  # a folder that cannot be made is the one thing said, not after a plan
        _print_eval_plan(cfg, Path(a.out).parent, a.seeds)
    with _watched("after this step") as watch:
        watch["fit_check"] = not a.skip_fit_check
        watch["command"] = a.command_line
        if a.resume:
            results = [continue_run(a.resume, a.steps, **watch)]
        else:
            results = run_seeds(cfg, a.out, a.seeds, **watch)
    import pandas as pd

    from workbench.analysis.eval_plan import seed_spread
    from workbench.records.runs import Run

    folders = [Path(a.out)] if a.seeds == 1 else [seed_dir(Path(a.out), s) for s in seed_values(cfg, a.seeds)]
    folders = folders[: len(results)]
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 40):
        for result, folder in zip(results, folders):
            if len(results) > 1:
                print(f"\nseed {result.config['train']['seed']} ({folder}):")
            print(results_frame(result.variants).to_string())
        if len(results) > 1:
            print(f"\nover {len(results)} seeds (mean, spread across seeds, 95% interval of the mean):")
            print(_seeds_table(results, folders).to_string(index=False))
    for result in results:
        for v in result.variants:
            if v.error:
                print(f"{v.name}: {v.status}: {v.error}")
    spread = seed_spread(results[0].config, Path(a.out).parent) if len(folders) == 1 else None
    _print_verdicts([Run(f).scores() for f in folders], [v.name for v in results[0].variants], spread)
    last = results[-1]
    allocator = f"; allocator: {last.allocator}" if last.allocator else ""
    print(f"\ndevice: {last.device}{allocator}; model: {last.model_path}")
    print(f"wrote {Path(a.out).resolve()}" + (" (stopped early)" if any(r.stopped for r in results) else ""))
    return 0


def _seeds_table(results, folders):
    from workbench.analysis.settings import settings, settings_frame

    rows = [(r.config, v, str(f), r.user) for r, f in zip(results, folders) for v in r.variants if v.error is None]
    return settings_frame(settings(rows), label=lambda g: g.first.name)


def _print_verdicts(seed_scores: list[dict], names: list[str], spread=None) -> None:
    """The paired comparisons of a run, one sentence each: over several seeds, verdicts on the settings that count
    the seeds' spread and the examples'; over one, on the trained models, with the task's seed `spread`."""
    from workbench.analysis.verdicts import across_seeds, short_titles, verdicts_what

    pairings = across_seeds(seed_scores, names, short_titles(names), spread)
    if not pairings:
        return
    print(f"\nis the difference real? ({verdicts_what(len(seed_scores))})")
    for p in pairings:
        for sentence in p.sentences():
            print(f"- {sentence}")


def _print_eval_plan(cfg, runs_root: Path, runs: int = 1, base: bool = True) -> None:
    """What the eval size (and `runs` seeds of each setting) can tell apart, and what it costs, before anything
    loads; with `base`, whether the base's scores come from the score cache (a sweep's points score no base)."""
    from workbench.analysis.eval_plan import eval_plan
    from workbench.experiments.kept_scores import kept_sentence

    line = eval_plan(cfg, runs_root, runs=runs)
    kept = kept_sentence(cfg) if line and base else ""
    if line:
        print(f"[workbench] {line}" + (f"; {kept}" if kept else ""), file=sys.stderr)


def _listed(option: str, text: str, kind=str, sep: str = ",") -> list:
    values = [v.strip() for v in text.split(sep) if v.strip()]
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a {sep!r}-separated list of {kind.__name__} values") from None


def _check_run_inputs(cfg, out: str) -> None:
    """What plan does not read: the data and the output folder (each point would fail on them alone)."""
    from workbench.core.files import check_writable_dir
    from workbench.data import task_for

    check_writable_dir(Path(out))
    task_for(cfg)


def _span_option(option: str, text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    values = _listed(option, text, float)
    if len(values) not in (1, 2):
        raise ValueError(f"{option}: give LOW,HIGH (or one value to fix it); got {text!r}")
    return (values[0], values[-1])


def _sweep_choices(a: argparse.Namespace) -> dict:
    """The grid's (or the search's) values the options give; the ones not given are left to the defaults."""
    switches = {"on": True, "off": False}
    out: dict = {}
    if a.ranks is not None:
        out["ranks"] = _listed("--ranks", a.ranks, int)
    if a.target_sets is not None:
        out["targets"] = _listed("--target-sets", a.target_sets, sep=";")
    if a.bits is not None:
        out["bits"] = _listed("--bits", a.bits, int)
    if a.quant_types is not None:
        out["quant_types"] = _listed("--quant-types", a.quant_types)
    if a.double_quant is not None:
        bad = [v for v in _listed("--double-quant", a.double_quant) if v not in switches]
        if bad:
            raise ValueError(f"--double-quant: {bad[0]!r} is not on or off")
        out["double_quants"] = [switches[v] for v in _listed("--double-quant", a.double_quant)]
    return out


def cmd_sweep(a: argparse.Namespace) -> int:
    from workbench.core.config import preset_config
    from workbench.experiments.seeds import check_seeds
    from workbench.experiments.study.space import SearchSpace, StudyDef
    from workbench.experiments.study.storage import dashboard_command, default_storage, open_storage, redacted
    from workbench.experiments.sweep import SweepGrid, plan

    check_seeds(a.seeds)
    if isinstance(a.workers, bool) or not 1 <= a.workers <= 64:
        raise ValueError(f"--workers: give a whole number from 1 to 64; got {a.workers}")
    choices = _sweep_choices(a)
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
        for key, option in (("alpha", "--alpha-range"), ("lr", "--lr-range"), ("dropout", "--dropout-range")):
            span = _span_option(option, search_only[option])
            if span is not None:
                choices[key] = span
        if a.minimize:
            choices["minimize"] = a.minimize
        if a.max_memory is not None:
            choices["max_memory_mib"] = a.max_memory
        space, grid = SearchSpace(trials=a.search, **choices), None
    base = preset_config(a.preset, _overrides(a))
    _check_run_inputs(base, a.out)
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
        _print_eval_plan(base, Path(a.out).parent, a.seeds, base=False)
        print(_describe_space(space, a.seeds))
    print(f"study {study_name!r} in {redacted(storage)}; to watch it: {dashboard_command(storage)}")
    if a.plan:
        return 0
    return _run_sweep_study(a, definition, sweep, storage, study_name)


def _describe_space(space, seeds: int) -> str:
    from workbench.experiments.sweep import targets_label

    bits = ", ".join(map(str, space.bits))
    repeats = f" x {seeds} seeds" if seeds > 1 else ""
    return (
        f"search: {space.trials} settings{repeats}, score up and {space.minimize} down; rank {space.ranks[0]}-"
        f"{space.ranks[1]} (log), targets {' | '.join(targets_label(t) for t in space.targets)}, bits {bits}, "
        f"alpha {space.alpha[0]:g}-{space.alpha[1]:g}, lr {space.lr[0]:g}-{space.lr[1]:g}, "
        f"dropout {space.dropout[0]:g}-{space.dropout[1]:g}"
    )


def _run_sweep_study(a: argparse.Namespace, definition, sweep, storage: str, study_name: str) -> int:
    """Work on the study (here or in --workers processes), then print and write the table, the chart and the
    trial log. The first Ctrl-C starts no new trial; the second stops the running ones after their step."""
    import pandas as pd

    from workbench.analysis.settings import settings_frame
    from workbench.experiments.study.reading import counts, finished_points, write_trials
    from workbench.experiments.study.storage import dashboard_command
    from workbench.experiments.study.workers import in_plan_order, run_study
    from workbench.experiments.sweep import point_settings, sweep_frame, write_sweep

    finish, stop = threading.Event(), threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        if finish.is_set():
            print("\nstopping the running trials after their step (Ctrl-C again to abort)...", file=sys.stderr)
            stop.set()
        else:
            print("\nno new trial will start; the running ones finish (Ctrl-C again: stop them)", file=sys.stderr)
            finish.set()

    from datetime import datetime

    from workbench.core.events import ProgressBars

    began = datetime.now()
    old = signal.signal(signal.SIGINT, on_sigint)
    bars = ProgressBars() if a.workers == 1 else None
    try:
        st, done = run_study(
            definition,
            a.out,
            storage=storage,
            study=study_name,
            workers=a.workers,
            stop=stop,
            finish=finish,
            on_status=lambda msg: print(f"[workbench] {msg}", file=sys.stderr, flush=True),
            on_progress=bars,
            sinks=[bars.metric] if bars else (),
            fit_check=not a.skip_fit_check,
        )
    finally:
        signal.signal(signal.SIGINT, old)
        if bars:
            bars.close()
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
        + (" (stopped early)" if finish.is_set() or stop.is_set() else "")
    )
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """One experiment; under a launcher every process runs this, and rank 0 alone prints and writes."""
    from workbench.experiments.experiment import check_launch, from_yaml, run_experiment, trained_variant
    from workbench.machine.distributed import World, join
    from workbench.records.results import results_frame

    cfg = from_yaml(a.config)
    trained_variant(cfg)  # before any process group opens: every process refuses the same config alike
    check_launch()
    out = a.out or str(Path(a.config).with_suffix(""))
    from workbench.core.files import check_writable_dir

    check_writable_dir(Path(out))  # before a process group opens or any data is read
    world = World.from_env()
    with join(world, cfg.model.device) as backend, _watched("after this step") as watch:
        if not world.is_main:  # one set of bars and status lines, not one per process
            watch = {"stop": watch["stop"]}
        result = run_experiment(
            cfg, out, fit_check=not a.skip_fit_check, command=a.command_line, backend=backend, **watch
        )
    if result is None:
        return 0
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(results_frame(result.variants).to_string())
    for v in result.variants:
        if v.error:
            print(f"{v.name}: {v.status}: {v.error}")
    allocator = f"; allocator: {result.allocator}" if result.allocator else ""
    print(f"\n{result.describe_batch()}")
    print(f"device: {result.device}{allocator}; model: {result.model_path}")
    print(f"wrote {Path(out).resolve()}" + (" (stopped early)" if result.stopped else ""))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from workbench.engine.export import export

    with _watched("the export") as watch:
        done = export(a.run, a.variant, a.out, merge=a.merge, dtype=a.dtype, status=watch["on_status"])
    print(f"wrote {done.out.resolve()}" + (f" (merged, {done.dtype})" if done.merged else " (adapter and model card)"))
    if done.gap is not None:
        print(f"merge gap: {done.gap.describe()}")
    return 0


def cmd_estimate(a: argparse.Namespace) -> int:
    from workbench.engine.estimator import estimate
    from workbench.engine.layout import ModelLayout
    from workbench.machine import allocator

    if a.bits not in (16, 8, 4):
        raise ValueError(f"bits must be 16, 8 or 4; got {a.bits}")
    lora = LoraSettings(rank=a.rank, target_modules=a.targets, adapt_experts=not a.no_experts)
    TrainSettings(batch_size=a.batch_size, seq_len=a.seq_len)  # validates both
    layout = ModelLayout.for_model(a.model)
    layout.check_targets(lora.target_modules)  # an estimate for layers the model lacks would be a wrong one
    layout.check_rank(lora.rank)
    if a.dtype is None:  # what a run here would get (models.cpu_dtype), or a GPU's bfloat16
        from workbench.engine.models import cpu_dtype

        a.dtype = str(cpu_dtype(a.bits)).replace("torch.", "") if a.device == "cpu" else "bfloat16"
    est = estimate(
        layout,
        bits=a.bits,
        rank=lora.rank,
        targets=lora.target_modules,
        batch_size=a.batch_size,
        seq_len=a.seq_len,
        gradient_checkpointing=a.gradient_checkpointing,
        device_type=a.device,
        double_quant=not a.no_double_quant,
        dtype=a.dtype,
        adapt_experts=lora.adapt_experts,
        allocator=allocator.current(),  # what `workbench compare` here would run on (main() preloaded the same)
    )
    if a.json:
        print(
            json.dumps(
                {
                    "model": a.model,
                    "bits": a.bits,
                    "rank": a.rank,
                    "targets": lora.target_modules,
                    "batch_size": a.batch_size,
                    "seq_len": a.seq_len,
                    "device": a.device,
                    "dtype": a.dtype,
                    "gradient_checkpointing": a.gradient_checkpointing,
                    "double_quant": not a.no_double_quant,
                    "adapt_experts": lora.adapt_experts,
                    "adapter_params": layout.adapter_params(lora.rank, lora.target_modules, lora.adapt_experts),
                    **est.to_dict(),
                },
                indent=2,
            )
        )
    else:
        print(
            f"{a.model}: {a.bits}-bit base, LoRA r={a.rank} on {a.targets}, batch {a.batch_size} x "
            f"{a.seq_len} tokens, {a.device}"
        )
        print(est.table())
        for note in est.notes:
            print(f"note: {note}")
    return 0


def cmd_preview(a: argparse.Namespace) -> int:
    from workbench.core.config import RunConfig
    from workbench.data import preview, task_for
    from workbench.engine.models import load_tokenizer
    from workbench.engine.resolve import resolve_model

    cfg = RunConfig(
        task=None if a.data else (a.task or "sentiment"),
        data=a.data,
        eval_data=a.eval_data,
        eval_fraction=a.eval_fraction,
        columns=a.columns,
        skip_bad_rows=a.skip_bad_rows,
        train=TrainSettings(seq_len=a.seq_len),
    )  # validates them all
    if a.examples < 0:
        raise ValueError(f"examples must be at least 0; got {a.examples}")
    task = task_for(cfg)
    tokenizer = load_tokenizer(resolve_model(a.model))
    print(preview(tokenizer, task, seq_len=a.seq_len, n=a.examples).to_text())
    return 0


def cmd_app(a: argparse.Namespace) -> int:
    from workbench.cli import app_page

    listen = app_page.check_listen(a.ip, a.token)
    env = app_page.check_options(a.port, a.runs, a.tabs, a.preset, listen.ip)  # before any server starts
    return app_page.serve(a.port, env, open_browser=not a.no_browser and app_page.has_screen(), listen=listen)


def cmd_notebooks(a: argparse.Namespace) -> int:
    import shutil

    from workbench.core.files import check_writable_dir
    from workbench.core.paths import notebooks_dir

    out = check_writable_dir(Path(a.dir), "dir")
    out.mkdir(parents=True, exist_ok=True)
    for nb in sorted(notebooks_dir().glob("*.ipynb")):
        target = out / nb.name
        if target.exists():  # a notebook someone has worked in is theirs: never overwritten
            print(f"kept {target} (already there)")
            continue
        shutil.copyfile(nb, target)
        print(f"wrote {target}")
    print(f"open them with: jupyter lab {shlex.quote(str(out))}")
    return 0


def cmd_model_path(a: argparse.Namespace) -> int:
    from workbench.engine.resolve import resolve_model

    print(resolve_model(a.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: start again with the fast allocator when it is installed
        from workbench.machine.allocator import reexec_with_fast_allocator

        reexec_with_fast_allocator(["-m", "workbench.cli", *sys.argv[1:]])
    logging.basicConfig(level=os.environ.get("WORKBENCH_LOG", "WARNING"), format="%(message)s")
    args = build_parser().parse_args(argv)
    args.command_line = "workbench " + shlex.join(sys.argv[1:] if argv is None else argv)  # for the model card
    try:
        commands = {
            "compare": cmd_compare,
            "train": cmd_train,
            "sweep": cmd_sweep,
            "estimate": cmd_estimate,
            "preview": cmd_preview,
            "model-path": cmd_model_path,
            "export": cmd_export,
            "app": cmd_app,
            "notebooks": cmd_notebooks,
        }
        return commands[args.command](args)
    except ValueError as exc:  # one line even when a library's message has several
        print(f"workbench: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("workbench: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
