"""The phases of one comparison after its setup (experiments.run_setup), the way torchtune splits its recipes
into setup, train and cleanup:

- `load_group` loads one base precision, with the adapter attached when a variant there trains;
- `run_base` and `run_trained` do one variant's work (train, evaluate, answer) and return its VariantOutcome.

experiments.comparison runs them in order (`workbench compare`, the Train tab), experiments.experiment for one
variant in one or many processes, and bench/bench_memory.py calls them one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.config import VARIANTS
from workbench.core.events import Hooks
from workbench.engine import inits, models, score_cache
from workbench.engine.generate import (
    EvalResult,
    GeneralScores,
    Generation,
    evaluate,
    general_scores,
    general_text_scores,
    generate,
)
from workbench.engine.train import TrainResult, TrainState, seed_everything, train
from workbench.experiments.kept_scores import base_keys, keep_adapter_scores
from workbench.experiments.run_setup import RunSetup
from workbench.machine import memory
from workbench.records.results import VariantResult, interval_fields
from workbench.records.runs import save_adapter


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
        base_dtype=s.base_dtype(VARIANTS[name].bits),
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
        init=s.cfg.lora.init if trained else None,
        init_seconds=tr.init.seconds if tr and tr.init else None,
        init_error_before=tr.init.error_before if tr and tr.init else None,
        init_error_after=tr.init.error_after if tr and tr.init else None,
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
    """Start the attached adapter as the config's init says, then train it on the encoded training split (from a
    saved state, when given)."""
    hooks = hooks or Hooks()
    report = start_adapter(s, model, name, hooks, keep=resume is not None)
    first = resume.step if resume else 0
    hooks.status(f"training {name} ({s.cfg.train.steps} steps{f', from step {first}' if first else ''})")
    tell = hooks.begin("train", name, s.cfg.train.steps, "steps")
    if first:
        tell(first)  # a continued run starts where it stopped
    tr = train(
        model,
        s.tokenizer,
        s.train_rows,
        s.cfg.train,
        variant=name,
        sinks=[*hooks.sinks, lambda e: tell(e.step)],
        stop=hooks.stop,
        monitor=monitor,
        resume=resume,
        loraplus_ratio=s.cfg.lora.loraplus_ratio,
    )
    tr.init = report
    return tr


def start_adapter(s: RunSetup, model, name: str, hooks: Hooks, keep: bool = False) -> inits.InitReport | None:
    """The config's init on the attached adapter (None for peft's default, which attach_lora made). `keep`: a
    continued run, whose saved adapter is already loaded: the init runs again for the base it changed (seeded, so
    the same), and the saved adapter's weights are put back."""
    lora = s.cfg.lora
    if lora.init == "gaussian":
        return None
    kept = inits.adapter_weights(model) if keep else None
    hooks.status(f"starting the {name} adapter: {lora.init}")
    seed_everything(s.cfg.train.seed)  # the fast SVD draws random numbers: the same seed, the same start
    report = inits.apply_init(model, lora, s.cfg.quant, VARIANTS[name].bits, s.path, batches=s.init_batches)
    if report.start is not None and s.general_rows is not None:
        # forgetting is measured from the model training starts from: with the base moved, that is the residual
        # plus this start, not the residual alone (the adapter switched off)
        report.general_start = general_text_scores(model, s.tokenizer, s.general_rows)
    if kept is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, kept)
    hooks.status(report.describe())
    return report


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
        save_adapter(model, adapter_dir, tr.state, start=tr.init.start if tr.init else None)
    ev, answers, general = None, {}, None
    if not tr.stopped:
        hooks.status(f"evaluating {name}")
        ev, answers = score_variant(s, model, base=False, name=name, hooks=hooks)
        start = tr.init.general_start if tr.init else None
        general = general_scores(model, s.tokenizer, s.general_rows, base=False, start=start)
        if adapter_dir is not None:
            keep_adapter_scores(s, model, name, adapter_dir, ev)
    result = _result(s, name, model, monitor.peak(), tr, ev, general)
    return VariantOutcome(result, ev.predictions if ev else None, answers, tr, variant_scores(ev, general))
