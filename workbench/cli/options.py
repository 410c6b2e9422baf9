"""The options the commands share, each defined once, and the overrides a command's options make to a preset.

A run option's dest names the config field it sets ("lora.rank", "train.steps", or a top-level field such as
"task"), and its help is that field's own unless it says more: `overrides` reads the fields back from the
parsed options, so a new option needs no second list.
"""

from __future__ import annotations

import argparse
import dataclasses

from workbench.core.config import DEFAULT_MODEL, DTYPES, INIT_TABLE, SECTIONS, VARIANT_TABLE, RunConfig
from workbench.core.config import help_for as field_help

# RunConfig's own fields outside its sections: an option with one of these dests sets it
TOP_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig)) - set(SECTIONS)


def help_for(cls: type, name: str) -> str:
    """A field's help text for argparse, which %-formats help strings ("30% slower" would garble --help)."""
    return field_help(cls, name).replace("%", "%%")


def folder(text: str) -> str:
    """An --out folder: an empty one (an unset shell variable) would write the run into the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a folder, not an empty value")
    return text


def field_option(p, flag: str, dest: str, help: str | None = None, **kw) -> None:
    """`flag` sets the config field `dest`; its help is the field's own unless given."""
    if help is None:
        section, _, name = dest.rpartition(".")
        help = help_for(SECTIONS[section] if section else RunConfig, name)
    if "action" not in kw and "choices" not in kw:  # --rank RANK in --help, as argparse names it from the flag
        kw["metavar"] = flag.lstrip("-").replace("-", "_").upper()
    p.add_argument(flag, dest=dest, help=help, **kw)


def switch(p, flag: str, dest: str, help: str | None = None) -> None:
    """A switch that sets `dest`: True, or False for a --no-* one; None (the preset's value) when not given."""
    value = not flag.startswith("--no-")
    field_option(p, flag, dest, help, action="store_const", const=value, default=None)


def overrides(a: argparse.Namespace) -> dict:
    """What the options given set, nested as preset_config takes it: {"lora": {"rank": 4}, "task": ...}."""
    # every section, even when empty: from_dict reads an empty quant as QuantSettings() (16 bits), not RunConfig's
    # default (4 bits), and the runs and studies made so far were named from configs made that way
    out: dict = {section: {} for section in SECTIONS}
    for dest, value in vars(a).items():
        section, _, name = dest.rpartition(".")
        if value is None or not (section in SECTIONS or (not section and dest in TOP_FIELDS)):
            continue
        if section:
            out[section][name] = value
        else:
            out[dest] = value
    if out.get("data") is not None:  # your own data instead of the preset's task
        out["task"] = None
    return out


def add_model(p, default=None) -> None:
    field_option(
        p,
        "--model",
        "model.name",
        f"Local folder, Hugging Face name, or the embedded default ({DEFAULT_MODEL}, offline).",
        default=default,
    )


def add_experts(p) -> None:
    switch(
        p,
        "--no-experts",
        "lora.adapt_experts",
        "Leave a mixture of experts' expert weights unadapted. " + help_for(SECTIONS["lora"], "adapt_experts"),
    )


def add_lora(p, sweep: bool = False) -> None:
    if not sweep:  # a sweep chooses these per point
        field_option(p, "--rank", "lora.rank", type=int)
        field_option(p, "--targets", "lora.target_modules")
    field_option(p, "--alpha", "lora.alpha", type=float)
    field_option(p, "--dropout", "lora.dropout", type=float)
    switch(p, "--rslora", "lora.use_rslora")
    switch(p, "--dora", "lora.use_dora")
    add_init(p)
    add_experts(p)


def add_init(p) -> None:
    """How the adapter starts (a sweep's --inits tries several; this one is every point's otherwise) and LoRA+."""
    field_option(p, "--init", "lora.init", choices=[i.name for i in INIT_TABLE])
    field_option(p, "--loftq-iter", "lora.loftq_iter", type=int)
    field_option(p, "--pissa-niter", "lora.pissa_niter", type=int)
    field_option(p, "--loraplus-ratio", "lora.loraplus_ratio", type=float)


def add_train_shape(p) -> None:
    field_option(p, "--batch-size", "train.batch_size", type=int)
    field_option(p, "--seq-len", "train.seq_len", type=int)


def add_run_options(c, sweep: bool) -> None:
    """The options of one run, shared by compare and sweep (a sweep sets rank, targets and bits per point)."""
    add_model(c)
    src = c.add_mutually_exclusive_group()
    field_option(src, "--task", "task", "Built-in task (see data/).")
    field_option(
        src,
        "--data",
        "data",
        "Your own data: .jsonl/.json/.csv with prompt/answer (or response, "
        "completion), instruction/input/output or messages columns, or plain .txt.",
    )
    field_option(c, "--eval-data", "eval_data", "A separate file to evaluate on (default: hold out --eval-fraction).")
    field_option(
        c, "--eval-fraction", "eval_fraction", "Share of --data held out for evaluation (default 0.15).", type=float
    )
    field_option(c, "--columns", "columns", "Map your column names: prompt=question,answer=label.")
    switch(
        c,
        "--skip-bad-rows",
        "skip_bad_rows",
        "Skip unusable rows and report how many, instead of stopping at the first.",
    )
    add_lora(c, sweep)
    if not sweep:
        variants = "; ".join(f"{v.name} ({v.help})" for v in VARIANT_TABLE)
        field_option(c, "--variants", "variants", f"Comma list of {variants}. Default base,lora,qlora.")
    field_option(c, "--steps", "train.steps", type=int)
    add_train_shape(c)
    field_option(c, "--lr", "train.lr", type=float)
    field_option(c, "--grad-accum", "train.grad_accum", type=int)
    field_option(c, "--warmup-steps", "train.warmup_steps", type=int)
    field_option(c, "--seed", "train.seed", type=int)
    field_option(c, "--eval-examples", "train.eval_examples", type=int)
    switch(c, "--gradient-checkpointing", "train.gradient_checkpointing")
    if not sweep:
        field_option(c, "--quant-type", "quant.quant_type", choices=["nf4", "fp4"])
        switch(c, "--no-double-quant", "quant.double_quant", "Turn double quantization off.")
    field_option(c, "--compute-dtype", "quant.compute_dtype", choices=["auto", "float32", "bfloat16", "float16"])
    field_option(
        c, "--device", "model.device", "auto (default), cpu, cuda or mps.", choices=["auto", "cpu", "cuda", "mps"]
    )
    field_option(c, "--dtype", "model.dtype", choices=list(DTYPES))
    c.add_argument("--preset", help="Start from a preset (cpu-demo, quickstart); explicit options override its values.")
    c.add_argument(
        "--skip-fit-check",
        action="store_true",
        help="Run even when a variant's estimated peak is more than the free memory (by default it is refused).",
    )


def listed(option: str, text: str, kind=str, sep: str = ",") -> list:
    """A comma (or `sep`) list of `kind` values; a value that is not one is refused naming `option`."""
    values = [v.strip() for v in text.split(sep) if v.strip()]
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a {sep!r}-separated list of {kind.__name__} values") from None


def span_option(option: str, text: str | None) -> tuple[float, float] | None:
    """A search's range, LOW,HIGH (or one value to fix it), checked as the search space checks its ranges."""
    from workbench.experiments.study.space import span

    if text is None:
        return None
    values = listed(option, text, float)
    return span(option, values[0] if len(values) == 1 else values)
