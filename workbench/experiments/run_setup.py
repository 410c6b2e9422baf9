"""The first phase of a run, before any weights load: the task read and checked (a mistake in the data should
not wait for a model), the device picked, the model found and each split encoded once, into a RunSetup; each
variant's estimate checked against free memory (check_fit); and the result a run starts from, or the row of a
variant that did not finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import Hooks
from workbench.data import Encoded, Example, Task, TextSource, encode, general_text, task_for
from workbench.engine import inits, models
from workbench.engine.estimator import EstimateShapes, variant_estimate
from workbench.engine.generate import EVAL_BATCH_SIZE, GENERAL_BATCH_SIZE, DecodeSettings
from workbench.engine.layout import ModelLayout
from workbench.engine.resolve import resolve_model
from workbench.machine import admission, allocator, memory
from workbench.records.results import CompareResult, VariantResult, first_line


@dataclass(frozen=True)
class VariantStart:
    """Told to on_variant as a variant starts, so a live memory plot can draw its estimate before step 1."""

    name: str
    bits: int
    estimated_peak_bytes: int
    device_type: str


def planned_stages(cfg: RunConfig) -> int:
    """How many phases run_compare goes through: per base precision a load; base: evaluate and answer;
    each trained variant: train, evaluate and answer."""
    loads = len({VARIANTS[n].bits for n in cfg.variants})
    return loads + sum(3 if VARIANTS[n].trained else 2 for n in cfg.variants)


@dataclass
class RunSetup:
    """Everything a comparison needs before the first model loads."""

    cfg: RunConfig
    task: Task
    choice: models.DeviceChoice
    path: Path
    tokenizer: object
    layout: ModelLayout
    train_rows: Encoded
    eval_set: list[Example] | TextSource  # the eval split, cut to eval_examples
    eval_rows: Encoded
    decode: DecodeSettings
    notes: list[str]
    general_rows: Encoded | None = None  # the general text forgetting is measured on (None: not shipped)
    init_batches: list[dict] | None = None  # EVA's activation pass: a few training batches (None: another init)

    @property
    def shapes(self) -> EstimateShapes:
        return EstimateShapes.of(
            self.train_rows,
            self.eval_rows,
            self.cfg.train.batch_size,
            EVAL_BATCH_SIZE,
            self.general_rows,
            GENERAL_BATCH_SIZE,
        )

    @property
    def prompts(self) -> list[str]:
        return self.task.sample_prompts[:3]

    def groups(self) -> dict[int, list[str]]:
        """The variants by the bits of their base, one model load each, in the config's order."""
        out: dict[int, list[str]] = {}
        for name in self.cfg.variants:
            out.setdefault(VARIANTS[name].bits, []).append(name)
        return out

    def choice_for(self, bits: int) -> models.DeviceChoice:
        """The device and dtype a base loaded at `bits` gets here (on a CPU with native bfloat16, 16 and 4 differ)."""
        return models.pick_device(self.cfg.model.device, self.cfg.model.dtype, bits)

    def dtype_for(self, bits: int) -> str:
        return self.choice_for(bits).dtype_name

    def base_dtype(self, bits: int) -> str:
        """What a result row says the base's weights are in: its dtype at 16 bits, int8, or the 4-bit type."""
        return {16: self.dtype_for(16), 8: "int8"}.get(bits, self.cfg.quant.quant_type)

    def estimate(self, name: str) -> int:
        bits, trained = VARIANTS[name].bits, VARIANTS[name].trained
        attached = trained or any(VARIANTS[n].trained for n in self.cfg.variants if VARIANTS[n].bits == bits)
        return variant_estimate(
            self.layout,
            self.cfg,
            bits,
            trained,
            self.choice.type,
            self.shapes,
            attached,
            self.dtype_for(bits),
            allocator.current(),  # this process trains: the estimate is for the allocator it runs on
        )


def setup(
    cfg: RunConfig, *, task: Task | None = None, decode: DecodeSettings | None = None, hooks: Hooks | None = None
) -> RunSetup:
    """Read and check the data, pick the device, find the model and its tokenizer, encode each split once."""
    hooks = hooks or Hooks()
    from transformers import AutoConfig

    task = task if task is not None else task_for(cfg)
    # an eval size the task cannot give: said before any model is read (a preset's is cut, with a note)
    task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
    choice = models.pick_device(cfg.model.device, cfg.model.dtype)
    hooks.status(f"resolving model {cfg.model.name}")
    path = resolve_model(cfg.model.name)
    tokenizer = models.load_tokenizer(path)
    # continuing plain text greedily, a small model soon loops; a mild penalty keeps the styles comparable
    decode = decode or DecodeSettings(
        max_new_tokens=48, seed=cfg.train.seed, repetition_penalty=1.0 if task.chat else 1.3
    )
    eval_set = task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
    train_rows = encode(tokenizer, task.train, cfg.train.seq_len)
    eval_rows = encode(tokenizer, eval_set, cfg.train.seq_len)
    layout = ModelLayout(AutoConfig.from_pretrained(str(path)))
    if any(VARIANTS[n].trained for n in cfg.variants):  # before any weights load, not after
        layout.check_targets(cfg.lora.target_modules)
        layout.check_rank(cfg.lora.rank)
    for name in cfg.variants:  # a base bitsandbytes cannot quantize: one line now, not a traceback mid-run
        layout.check_bits(VARIANTS[name].bits)
    trained_bits = sorted({VARIANTS[n].bits for n in cfg.variants if VARIANTS[n].trained})
    for bits in trained_bits:  # an init this model cannot take, likewise
        inits.check_init(cfg.lora, path, bits)
    init_batches = None
    if cfg.lora.init == "eva" and trained_bits:
        init_batches = inits.init_batches(tokenizer, train_rows, cfg.train, cfg.lora.rank)
    try:
        general_rows = encode(tokenizer, general_text(), cfg.train.seq_len)
    except OSError:  # a data folder of one's own (WORKBENCH_DATA) without data/general: no forgetting score
        general_rows = None
    return RunSetup(
        cfg,
        task,
        choice,
        path,
        tokenizer,
        layout,
        train_rows,
        eval_set,
        eval_rows,
        decode,
        task.notes + train_rows.length_messages() + _expert_notes(cfg, layout),
        general_rows,
        init_batches,
    )


def _expert_notes(cfg: RunConfig, layout: ModelLayout) -> list[str]:
    """What adapting a mixture of experts does to the settings (dropout 0), said where the run's notes are."""
    trained = any(VARIANTS[n].trained for n in cfg.variants)
    note = layout.expert_dropout_note(cfg.lora.dropout, cfg.lora.adapt_experts) if trained else None
    return ["LoRA: " + note] if note else []


def check_fit(s: RunSetup, sharing: int = 1) -> list[str]:
    """Each variant's estimated peak against what the device has free, before any weights load: ValueError
    for the variants that will not fit, saying what to change; a note on those that are tight. `sharing`: the
    processes loading onto this device at once (distributed.World.sharing): each sees the same free memory,
    so `sharing` times the estimate must fit."""
    available = memory.available_bytes(s.choice.type, s.choice.device)
    if available is not None:  # what the runs going now hold comes back when they end: this run waits for it
        available += admission.held_by_runs(s.choice.device)
    by_verdict: dict[str, dict[str, int]] = {}
    for name in s.cfg.variants:
        estimated = s.estimate(name) * sharing
        said = name if sharing == 1 else f"{name} in {sharing} processes"
        by_verdict.setdefault(memory.fit(estimated, available), {})[said] = estimated
    if memory.WONT_FIT in by_verdict:
        raise ValueError("memory: " + memory.fit_message(by_verdict[memory.WONT_FIT], available, memory.WONT_FIT))
    tight = by_verdict.get(memory.TIGHT)
    return [memory.fit_message(tight, available, memory.TIGHT)] if tight else []


def start_result(s: RunSetup, notes: list[str], cls: type = CompareResult, **fields) -> CompareResult:
    """What a run's result starts as: its settings, where it runs, its model and task, the data's notes and
    `notes` (a tight fit); `fields`: the rest (command, user, and a subclass's own)."""
    return cls(
        config=s.cfg.to_dict(),
        device=s.choice.describe(),
        device_type=s.choice.type,
        model_path=str(s.path),
        allocator=allocator.configure() if s.choice.type == "cpu" else "",
        task=s.task.name,
        scoring=s.task.scoring,
        notes=s.notes + notes,
        **fields,
    )


def unfinished_result(s: RunSetup, name: str, exc: BaseException) -> VariantResult:
    """The row of a variant that did not finish: out of memory (with what to change) or failed (with why)."""
    said = first_line(exc)[:160]
    if memory.is_out_of_memory(exc):
        where = "GPU" if s.choice.type == "cuda" else s.choice.type.upper()
        status, error = "out of memory", f"{name} ran out of {where} memory ({said}): choose {memory.WHAT_TO_CHANGE}"
    else:
        status, error = "failed", f"{name} failed: {type(exc).__name__}: {said}"
    return VariantResult(
        name=name,
        bits=VARIANTS[name].bits,
        base_dtype=s.base_dtype(VARIANTS[name].bits),
        rank=s.cfg.lora.rank if VARIANTS[name].trained else None,
        target_modules=s.cfg.lora.target_modules if VARIANTS[name].trained else None,
        estimated_peak_bytes=s.estimate(name),
        status=status,
        error=error,
    )
