"""Compare base, LoRA and QLoRA on one task: train, evaluate, generate, write a run folder.

Long because: the phases of one comparison, the loop that runs them and its continuation (continue_run)
share one Setup and one run folder, and read best side by side.

A recipe in phases, the way torchtune splits its recipes into setup, train and cleanup:
- `setup` reads the task (first: a mistake in the data should not wait for a model), picks the
  device, finds the model and encodes each split once;
- `load_group` loads one base precision, with the adapter attached when a variant there trains;
- `run_base` and `run_trained` do one variant's work and return what it produced;
- `write_run` writes the folder, and memory.release frees what a group held.
`run_compare` runs them in order for `workbench compare` and the Train tab; bench/bench_memory.py calls
the same phases.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import ProgressSink, Sink, Stages
from workbench.core.files import check_writable_dir, remove_stale_temps
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
from workbench.machine import admission, allocator, memory
from workbench.records.results import CompareResult, VariantResult, first_line, interval_fields, results_frame
from workbench.records.runs import MetricsCSV, Run, check_user, default_user, save_adapter, write_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantStart:
    """Told to on_variant as a variant starts, so a live memory plot can draw its estimate before step 1."""

    name: str
    bits: int
    estimated_peak_bytes: int
    device_type: str


# --------------------------------------------------------------------------- progress


def planned_stages(cfg: RunConfig) -> int:
    """How many phases run_compare goes through: per base precision a load; base: evaluate and answer;
    each trained variant: train, evaluate and answer."""
    loads = len({VARIANTS[n].bits for n in cfg.variants})
    return loads + sum(3 if VARIANTS[n].trained else 2 for n in cfg.variants)


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
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
    cfg: RunConfig,
    *,
    task: Task | None = None,
    decode: DecodeSettings | None = None,
    status: Callable[[str], None] = log.info,
) -> Setup:
    """Read and check the data, pick the device, find the model and its tokenizer, encode each split once."""
    from transformers import AutoConfig

    task = task if task is not None else task_for(cfg)
    # an eval size the task cannot give: said before any model is read (a preset's is cut, with a note)
    task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
    choice = models.pick_device(cfg.model.device, cfg.model.dtype)
    status(f"resolving model {cfg.model.name}")
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
    return Setup(
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


def check_fit(s: Setup, sharing: int = 1) -> list[str]:
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


def start_result(s: Setup, notes: list[str], cls: type = CompareResult, **fields) -> CompareResult:
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


def unfinished_result(s: Setup, name: str, exc: BaseException) -> VariantResult:
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


# --------------------------------------------------------------------------- one variant at a time


@dataclass
class VariantRun:
    """What one variant produced: its result row, its per-example answers and its side-by-side answers."""

    result: VariantResult
    predictions: list[dict] | None = None
    answers: dict[str, Generation] = field(default_factory=dict)  # prompt -> answer
    trained: TrainResult | None = None
    scores: dict | None = None  # per-example scores for scores.json: what paired comparisons read


def load_group(
    s: Setup,
    bits: int,
    names: list[str],
    status: Callable[[str], None] = log.info,
    stages: Stages | None = None,
    adapter_from: Path | None = None,
):
    """The base at `bits` bits, with a LoRA adapter attached (seeded) when one of `names` trains; with
    `adapter_from`, the adapter gets that saved adapter's weights (to continue training it)."""
    status(f"loading {s.path.name} at {bits} bits on {s.choice.describe()}")
    tell = (stages or Stages()).begin("load", f"the {bits}-bit base", 1, "models")
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


def _answers(s: Setup, model, base: bool, tell: Callable[..., None]) -> dict[str, Generation]:
    # one prompt at a time, so each answer's time and tokens/s are its own
    out = {}
    for i, p in enumerate(s.prompts, 1):
        out[p] = generate(model, s.tokenizer, [p], s.decode, base=base, chat=s.task.chat)[0]
        tell(i)
    return out


def _base_dtype(s: Setup, bits: int) -> str:
    return {16: s.dtype_for(16), 8: "int8"}.get(bits, s.cfg.quant.quant_type)


def _result(
    s: Setup,
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
    s: Setup,
    model,
    name: str,
    monitor: memory.MemoryMonitor,
    *,
    sinks: Iterable[Sink] = (),
    stop: threading.Event | None = None,
    status: Callable[[str], None] = log.info,
    stages: Stages | None = None,
    resume: TrainState | None = None,
) -> TrainResult:
    """Train the attached adapter on the encoded training split (from a saved state, when given)."""
    first = resume.step if resume else 0
    status(f"training {name} ({s.cfg.train.steps} steps{f', from step {first}' if first else ''})")
    tell = (stages or Stages()).begin("train", name, s.cfg.train.steps, "steps")
    if first:
        tell(first)  # a continued run starts where it stopped
    sinks = [*sinks, lambda e: tell(e.step)]
    return train(
        model,
        s.tokenizer,
        s.train_rows,
        s.cfg.train,
        variant=name,
        sinks=sinks,
        stop=stop,
        monitor=monitor,
        resume=resume,
    )


def score_variant(
    s: Setup, model, *, base: bool, name: str | None = None, stages: Stages | None = None
) -> tuple[EvalResult, dict[str, Generation]]:
    """Evaluate on the encoded eval split, then answer the sample prompts (adapter off for base)."""
    stages = stages or Stages()
    name = name or ("base" if base else "adapter")
    tell = stages.begin("evaluate", name, len(s.eval_rows.rows), "examples")
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
    return ev, _answers(s, model, base, stages.begin("answer", name, len(s.prompts), "prompts"))


def run_base(
    s: Setup,
    model,
    monitor: memory.MemoryMonitor,
    status: Callable[[str], None] = log.info,
    stages: Stages | None = None,
) -> VariantRun:
    """The base variant: the loaded model with its adapter (if any) switched off, evaluated and asked. Its scores
    come from the score cache (workbench.engine.score_cache) when this model, loaded this way, was scored on these
    examples before, in any run or process, and go into it when not; its answers to the prompts are asked anew."""
    stages = stages or Stages()
    keys = base_keys(s, model)
    kept = score_cache.load(keys["eval"])
    kept_general = score_cache.load(keys["general"]) if "general" in keys else None
    if kept is None:
        status("evaluating base (adapter disabled)")
        ev, answers = score_variant(s, model, base=True, name="base", stages=stages)
        score_cache.store(keys["eval"], ev, monitor.peak())
    else:
        n = len(s.eval_rows.rows)
        status(kept.said("base", f"{n} examples" + (" and the general text" if kept_general else "")))
        # the phase is counted as every other run counts it (its examples, all done); the line above says why
        stages.begin("evaluate", "base", n, "examples")(n)
        ev = kept.result
        answers = _answers(s, model, True, stages.begin("answer", "base", len(s.prompts), "prompts"))
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
    return VariantRun(result, ev.predictions, answers, scores=variant_scores(ev, general))


def base_keys(s: Setup, model) -> dict[str, dict]:
    """The score cache's keys of the base's scores on the eval split ("eval") and on the general text
    ("general", where it is shipped), for `model` as loaded for this run."""
    bits = VARIANTS["base"].bits
    variant = score_cache.variant_key(s.path, model, bits=bits, quant=s.cfg.quant, choice=s.choice_for(bits))
    keys = {"eval": _eval_key(s, variant)}
    if s.general_rows is not None:
        keys["general"] = score_cache.scores_key(
            variant, "general", s.general_rows, scoring="text", batch_size=GENERAL_BATCH_SIZE
        )
    return keys


def base_kept(cfg: RunConfig) -> score_cache.Entry | None:
    """The score cache's entry for this config's base on its eval examples, found before any weight loads, so
    the plan can say the base will not be scored again; None when none is kept, when the config has no base
    or the model is not on disk yet. An unquantized base holds every parameter in its dtype, so its key is
    known without loading it (a wrong guess only means the plan does not say so)."""
    if "base" not in cfg.variants:
        return None
    try:
        task = task_for(cfg)
        examples = task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
        path = resolve_model(cfg.model.name, convert=False)
        bits = VARIANTS["base"].bits
        choice = models.pick_device(cfg.model.device, cfg.model.dtype, bits)
        encoded = encode(_tokenizer(path), examples, cfg.train.seq_len)
        variant = score_cache.variant_key(
            path, None, bits=bits, quant=cfg.quant, choice=choice, parameters=[str(choice.dtype)]
        )
        key = score_cache.scores_key(
            variant, "eval", encoded, examples, scoring=task.scoring, batch_size=EVAL_BATCH_SIZE
        )
        return score_cache.load(key)
    except Exception:  # noqa: BLE001 - a plan only: anything unreadable means "not known to be kept"
        return None


def kept_sentence(cfg: RunConfig) -> str:
    """What a plan says when the base's scores will come from the score cache ("" when they will not)."""
    entry = base_kept(cfg)
    if entry is None:
        return ""
    n = len(entry.result.keys)
    return f"the base's scores on these {n:,} examples are kept (scored {entry.when}): not scored again"


@functools.lru_cache(maxsize=4)
def _tokenizer(path: Path):
    return models.load_tokenizer(path)


def _eval_key(s: Setup, variant: dict) -> dict:
    return score_cache.scores_key(
        variant, "eval", s.eval_rows, s.eval_set, scoring=s.task.scoring, batch_size=EVAL_BATCH_SIZE
    )


def run_trained(
    s: Setup,
    model,
    name: str,
    monitor: memory.MemoryMonitor,
    *,
    sinks: Iterable[Sink] = (),
    stop: threading.Event | None = None,
    adapter_dir: Path | None = None,
    status: Callable[[str], None] = log.info,
    stages: Stages | None = None,
    resume: TrainState | None = None,
) -> VariantRun:
    """Train one variant's adapter, save it with its training state (when adapter_dir is given), then
    evaluate and ask it, unless training was stopped."""
    tr = train_variant(s, model, name, monitor, sinks=sinks, stop=stop, status=status, stages=stages, resume=resume)
    if adapter_dir is not None:
        save_adapter(model, adapter_dir, tr.state)
    ev, answers, general = None, {}, None
    if not tr.stopped:
        status(f"evaluating {name}")
        ev, answers = score_variant(s, model, base=False, name=name, stages=stages)
        general = general_scores(model, s.tokenizer, s.general_rows, base=False)
        if adapter_dir is not None:
            keep_adapter_scores(s, model, name, adapter_dir, ev)
    result = _result(s, name, model, monitor.peak(), tr, ev, general)
    return VariantRun(result, ev.predictions if ev else None, answers, tr, variant_scores(ev, general))


def keep_adapter_scores(s: Setup, model, name: str, adapter_dir: Path, ev: EvalResult) -> None:
    """A trained adapter's eval scores into the score cache under its saved weights' digest: new weights, so
    nothing to look up, but the Compare tab's Evaluate of this run reads them back instead of scoring again."""
    try:
        bits = VARIANTS[name].bits
        variant = score_cache.variant_key(
            s.path, model, bits=bits, quant=s.cfg.quant, choice=s.choice_for(bits), adapter=adapter_dir
        )
        score_cache.store(_eval_key(s, variant), ev)
    except OSError as exc:  # the adapter could not be read back: only Evaluate's reuse is lost, not the run
        log.warning("%s: scores not kept for reuse (%s)", name, exc)


# --------------------------------------------------------------------------- the whole comparison


def run_compare(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    sinks: Iterable[Sink] = (),
    stop: threading.Event | None = None,
    on_status: Callable[[str], None] | None = None,
    decode: DecodeSettings | None = None,
    task: Task | None = None,
    on_variant: Callable[[VariantStart], None] | None = None,
    on_progress: ProgressSink | None = None,
    resume: bool = False,
    fit_check: bool = True,
    command: str = "",
    user: str | None = None,
) -> CompareResult:
    """Run every variant of cfg in turn and write the run folder. Only one model is in memory at a time.

    `task` overrides cfg.task/cfg.data with data already loaded (e.g. from a DataFrame via
    workbench.data.load_data_task). `on_variant(VariantStart)` is called as each variant starts;
    `on_progress(Progress)` as every phase (load, evaluate, train, answer) moves. With `resume`, out_dir is
    a run to continue (see continue_run): each trained variant saved there picks up its adapter and
    training state and trains on to cfg.train.steps; the rest run as new; every variant is scored again
    (the base's scores may come from the score cache).
    With `fit_check`, a variant whose estimated peak will not fit in the device's free memory is refused before
    anything loads (ValueError); a variant that runs out of memory all the same is marked "out of memory" in
    the results and the next precision runs. `command`: the command line that started it, kept with the run;
    `user`: who made it (default runs.default_user(): WORKBENCH_USER or the login name)."""
    run = Run(check_writable_dir(out_dir))  # before any data is read or weights load
    who = check_user(user) if user else default_user()
    earlier = saved_states(run) if resume else {}
    kept = kept_metrics(run, earlier) if resume else []
    stop = stop or threading.Event()
    status = on_status or log.info
    stages = Stages(on_progress, planned_stages(cfg))
    s = setup(cfg, task=task, decode=decode, status=status)
    tight = check_fit(s) if fit_check else []
    # the machine's runs take turns (workbench.machine.admission): this one waits until its largest variant fits
    peak = max(s.estimate(name) for name in cfg.variants)
    ticket = admission.take_turn(peak, s.choice.device, f"{who}: {run.path.name}", status, stop)
    try:
        if stop.is_set():  # stopped while it waited: nothing was made
            return start_result(s, tight, command=command, user=who, stopped=True)
        run.path.mkdir(parents=True, exist_ok=True)  # only once the data and device are known to be usable
        remove_stale_temps(run.path)  # what a killed earlier write of this run left (temp files, half adapters)
        result = start_result(s, tight, command=command, user=who)
        for note in result.notes:
            status(note)
        metrics_sink = MetricsCSV(run.path / "metrics.csv", kept)  # a continued run's curve goes on, not over
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise
    result.metrics.extend(kept)
    all_sinks: list[Sink] = [metrics_sink, result.metrics.append, *sinks]
    predictions: dict[str, list[dict]] = {}
    scores: dict[str, dict] = {}
    current: str | None = None  # the variant running now: a failure is marked on its row

    def started(name: str) -> None:
        nonlocal current
        current = name
        admission.share_cores(ticket)
        if on_variant:
            on_variant(VariantStart(name, VARIANTS[name].bits, s.estimate(name), s.choice.type))

    def keep(name: str, done: VariantRun) -> None:
        keep_variant(result, predictions, name, done, scores)

    monitor = None
    try:
        for bits, names in s.groups().items():
            if stop.is_set():
                break
            memory.release()
            monitor = memory.MemoryMonitor(s.choice.device).start()
            try:
                run_group(s, run, bits, names, monitor, keep, started, all_sinks, stop, status, stages, earlier)
            except Exception as exc:  # out of memory ends this precision only; anything else ends the run
                done = {v.name for v in result.variants}
                if not memory.is_out_of_memory(exc):
                    if current and current not in done:  # marked in the results, then raised
                        result.variants.append(unfinished_result(s, current, exc))
                    raise
                for name in (n for n in names if n not in done):
                    result.variants.append(unfinished_result(s, name, exc))
                    status(result.variants[-1].error)
            # the model lived in run_group's frame: with the exception handled, the next group's release() (or
            # the one in finally) frees it
            monitor.stop()
        result.stopped = stop.is_set()
    except KeyboardInterrupt:  # a kernel interrupt outside a training step: what finished is written, as stopped
        result.stopped = True
        raise
    finally:
        if monitor is not None:
            monitor.stop()  # also when a variant failed: a running monitor would keep counting
        metrics_sink.close()
        memory.release()
        try:
            if result.variants:
                write_run(run, result, predictions, scores)
        finally:
            if ticket is not None:
                ticket.release()
    return result


def keep_variant(
    result: CompareResult, predictions: dict, name: str, done: VariantRun, scores: dict | None = None
) -> None:
    """A finished variant into its run's result: its row, its per-example answers and scores, and its
    side-by-side answers."""
    result.variants.append(done.result)
    if done.predictions is not None:
        predictions[name] = done.predictions
    if scores is not None and done.scores is not None:
        scores[name] = done.scores
    for prompt, answer in done.answers.items():
        result.generations.setdefault(prompt, {})[name] = answer


def run_group(s, run, bits, names, monitor, keep, started, sinks, stop, status, stages, earlier) -> None:
    """One base precision: load it (with the adapter to continue, if any), then each of its variants."""
    again = next((n for n in names if earlier.get(n) is not None), None)
    model = load_group(s, bits, names, status, stages, run.adapter_dir(again) if again else None)
    if "base" in names:
        started("base")
        keep("base", run_base(s, model, monitor, status, stages))
    for name in (n for n in names if VARIANTS[n].trained):
        started(name)
        done = run_trained(
            s,
            model,
            name,
            monitor,
            sinks=sinks,
            stop=stop,
            adapter_dir=run.adapter_dir(name),
            status=status,
            stages=stages,
            resume=earlier.get(name),
        )
        keep(name, done)


def results_table(result: CompareResult):
    """The printed table: a pandas DataFrame with readable units."""
    return results_frame(result.variants)


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
    Keyword arguments as run_compare's (sinks, stop, on_status, on_progress, ...)."""
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
