"""The phases of one comparison, the way torchtune splits its recipes into setup, train and cleanup:

- `setup` reads the task (first: a mistake in the data should not wait for a model), picks the device, finds
  the model and encodes each split once, into a RunSetup;
- `load_group` loads one base precision, with the adapter attached when a variant there trains;
- `run_base` and `run_trained` do one variant's work and return its VariantOutcome.

experiments.comparison runs them in order (`workbench compare`, the Train tab), experiments.experiment for one
variant in one or many processes, and bench/bench_memory.py calls them one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import Hooks
from workbench.data import Encoded, Example, Task, TextSource, encode, general_text, task_for
from workbench.engine import models, score_cache
from workbench.engine.estimator import EstimateShapes, variant_estimate
from workbench.engine.generate import (
    EVAL_BATCH_SIZE,
    GENERAL_BATCH_SIZE,
    DecodeSettings,
    EvalResult,
    GeneralScores,
    Generation,
    evaluate,
    general_scores,
    generate,
)
from workbench.engine.layout import ModelLayout
from workbench.engine.resolve import resolve_model
from workbench.engine.train import TrainResult, TrainState, seed_everything, train
from workbench.experiments.kept_scores import base_keys, keep_adapter_scores
from workbench.machine import admission, allocator, memory
from workbench.records.results import CompareResult, VariantResult, first_line, interval_fields
from workbench.records.runs import save_adapter


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
        base_dtype=_base_dtype(s, VARIANTS[name].bits),
        rank=s.cfg.lora.rank if VARIANTS[name].trained else None,
        target_modules=s.cfg.lora.target_modules if VARIANTS[name].trained else None,
        estimated_peak_bytes=s.estimate(name),
        status=status,
        error=error,
    )


@dataclass
class VariantOutcome:
    """What one variant produced: its result row, its per-example answers and its side-by-side answers."""

    result: VariantResult
    predictions: list[dict] | None = None
    answers: dict[str, Generation] = field(default_factory=dict)  # prompt -> answer
    trained: TrainResult | None = None
    scores: dict | None = None  # per-example scores for scores.json: what paired comparisons read


def load_group(s: RunSetup, bits: int, names: list[str], hooks: Hooks | None = None, adapter_from: Path | None = None):
    """The base at `bits` bits, with a LoRA adapter attached (seeded) when one of `names` trains; with
    `adapter_from`, the adapter gets that saved adapter's weights (to continue training it)."""
    hooks = hooks or Hooks()
    hooks.status(f"loading {s.path.name} at {bits} bits on {s.choice.describe()}")
    tell = hooks.begin("load", f"the {bits}-bit base", 1, "models")
    model, _ = models.load_model(
        s.path, bits=bits, quant=s.cfg.quant, device=s.cfg.model.device, dtype=s.cfg.model.dtype
    )
    if any(VARIANTS[n].trained for n in names):
        seed_everything(s.cfg.train.seed)  # LoRA's random init too: same seed, same losses
        model = models.attach_lora(model, s.cfg.lora, bits, s.cfg.train.gradient_checkpointing)
        if adapter_from is not None:
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(model, load_peft_weights(str(adapter_from)))
    tell(1)
    return model


def _answers(s: RunSetup, model, base: bool, tell: Callable[..., None]) -> dict[str, Generation]:
    # one prompt at a time, so each answer's time and tokens/s are its own
    out = {}
    for i, p in enumerate(s.prompts, 1):
        out[p] = generate(model, s.tokenizer, [p], s.decode, base=base, chat=s.task.chat)[0]
        tell(i)
    return out


def _base_dtype(s: RunSetup, bits: int) -> str:
    return {16: s.dtype_for(16), 8: "int8"}.get(bits, s.cfg.quant.quant_type)


def _result(
    s: RunSetup,
    name: str,
    model,
    peak: int,
    tr: TrainResult | None,
    ev: EvalResult | None,
    general: GeneralScores | None = None,
) -> VariantResult:
    trainable, total = models.parameter_counts(model)
    trained = tr is not None
    sure = interval_fields(ev.scores() if ev else None, general.scores() if general else None)
    return VariantResult(
        name=name,
        bits=VARIANTS[name].bits,
        base_dtype=_base_dtype(s, VARIANTS[name].bits),
        rank=s.cfg.lora.rank if trained else None,
        target_modules=s.cfg.lora.target_modules if trained else None,
        trainable_params=trainable if trained else 0,
        total_params=total,
        weight_bytes=models.weight_bytes(model),
        peak_memory_bytes=peak,
        estimated_peak_bytes=s.estimate(name),
        train_seconds=tr.train_seconds if tr else None,
        tokens_per_second=tr.tokens_per_second if tr else None,
        final_train_loss=tr.final_loss if tr else None,
        eval_loss=ev.eval_loss if ev else None,
        perplexity=ev.perplexity if ev else None,
        accuracy=ev.accuracy if ev else None,
        steps_done=tr.steps_done if tr else None,
        status="stopped" if (tr and tr.stopped) else "done",
        general_loss=general.loss if general else None,
        forgetting=general.forgetting if general else None,
        eval_seconds=ev.seconds if ev else None,
        **sure,
    )


def variant_scores(ev: EvalResult | None, general: GeneralScores | None) -> dict | None:
    """One variant's entry in scores.json: its eval split and its general text, example by example."""
    if ev is None:
        return None
    return {"eval": ev.scores(), "general": general.scores() if general else None}


def train_variant(
    s: RunSetup,
    model,
    name: str,
    monitor: memory.MemoryMonitor,
    hooks: Hooks | None = None,
    resume: TrainState | None = None,
) -> TrainResult:
    """Train the attached adapter on the encoded training split (from a saved state, when given)."""
    hooks = hooks or Hooks()
    first = resume.step if resume else 0
    hooks.status(f"training {name} ({s.cfg.train.steps} steps{f', from step {first}' if first else ''})")
    tell = hooks.begin("train", name, s.cfg.train.steps, "steps")
    if first:
        tell(first)  # a continued run starts where it stopped
    return train(
        model,
        s.tokenizer,
        s.train_rows,
        s.cfg.train,
        variant=name,
        sinks=[*hooks.sinks, lambda e: tell(e.step)],
        stop=hooks.stop,
        monitor=monitor,
        resume=resume,
    )


def score_variant(
    s: RunSetup, model, *, base: bool, name: str | None = None, hooks: Hooks | None = None
) -> tuple[EvalResult, dict[str, Generation]]:
    """Evaluate on the encoded eval split, then answer the sample prompts (adapter off for base)."""
    hooks = hooks or Hooks()
    name = name or ("base" if base else "adapter")
    tell = hooks.begin("evaluate", name, len(s.eval_rows.rows), "examples")
    ev = evaluate(
        model,
        s.tokenizer,
        s.eval_set,
        seq_len=s.cfg.train.seq_len,
        base=base,
        scoring=s.task.scoring,
        encoded=s.eval_rows,
        progress=tell,
    )
    return ev, _answers(s, model, base, hooks.begin("answer", name, len(s.prompts), "prompts"))


def run_base(s: RunSetup, model, monitor: memory.MemoryMonitor, hooks: Hooks | None = None) -> VariantOutcome:
    """The base variant: the loaded model with its adapter (if any) switched off, evaluated and asked. Its scores
    come from the score cache (engine.score_cache) when this model, loaded this way, was scored on these
    examples before, in any run or process, and go into it when not; its answers to the prompts are asked anew."""
    hooks = hooks or Hooks()
    keys = base_keys(s, model)
    kept = score_cache.load(keys["eval"])
    kept_general = score_cache.load(keys["general"]) if "general" in keys else None
    if kept is None:
        hooks.status("evaluating base (adapter disabled)")
        ev, answers = score_variant(s, model, base=True, name="base", hooks=hooks)
        score_cache.store(keys["eval"], ev, monitor.peak())
    else:
        n = len(s.eval_rows.rows)
        hooks.status(kept.said("base", f"{n} examples" + (" and the general text" if kept_general else "")))
        # the phase is counted as every other run counts it (its examples, all done); the line above says why
        hooks.begin("evaluate", "base", n, "examples")(n)
        ev = kept.result
        answers = _answers(s, model, True, hooks.begin("answer", "base", len(s.prompts), "prompts"))
    if kept_general is not None:
        general = GeneralScores(kept_general.result.eval_loss, None, kept_general.result, None)
    else:
        general = general_scores(model, s.tokenizer, s.general_rows, base=True)
        if general is not None:
            score_cache.store(keys["general"], general.on, monitor.peak())
    # eval_seconds stays what scoring took when it ran (the kept result's own), so results.json reads as it always
    # did and eval_plan prices an example at a real scoring's pace. The peak is the larger of what this run held
    # and what scoring held then: the row says what scoring the base takes, beside an estimate made for scoring,
    # not what loading it alone took.
    peak = max([monitor.peak()] + [k.peak_memory_bytes or 0 for k in (kept, kept_general) if k is not None])
    result = _result(s, "base", model, peak, None, ev, general)
    return VariantOutcome(result, ev.predictions, answers, scores=variant_scores(ev, general))


def run_trained(
    s: RunSetup,
    model,
    name: str,
    monitor: memory.MemoryMonitor,
    hooks: Hooks | None = None,
    *,
    adapter_dir: Path | None = None,
    resume: TrainState | None = None,
) -> VariantOutcome:
    """Train one variant's adapter, save it with its training state (when adapter_dir is given), then
    evaluate and ask it, unless training was stopped."""
    hooks = hooks or Hooks()
    tr = train_variant(s, model, name, monitor, hooks, resume=resume)
    if adapter_dir is not None:
        save_adapter(model, adapter_dir, tr.state)
    ev, answers, general = None, {}, None
    if not tr.stopped:
        hooks.status(f"evaluating {name}")
        ev, answers = score_variant(s, model, base=False, name=name, hooks=hooks)
        general = general_scores(model, s.tokenizer, s.general_rows, base=False)
        if adapter_dir is not None:
            keep_adapter_scores(s, model, name, adapter_dir, ev)
    result = _result(s, name, model, monitor.peak(), tr, ev, general)
    return VariantOutcome(result, ev.predictions if ev else None, answers, tr, variant_scores(ev, general))
