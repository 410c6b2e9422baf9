"""Compare base, LoRA and QLoRA on one task: train, evaluate, generate, write a run folder.

This is the work behind `workbench compare`; the notebook panels call the same function.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import data as data_mod
from . import memory, models, plots, runs
from .config import VARIANTS, RunConfig
from .generate import EVAL_BATCH_SIZE, DecodeSettings, Generation, evaluate, generate
from .train import MetricEvent, Sink, seed_everything, train

log = logging.getLogger(__name__)

PRESETS: dict[str, dict] = {
    # All three variants on the embedded model in a few minutes on 2 CPU cores.
    "cpu-demo": {
        "model": {"device": "cpu"},
        "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": "all-linear"},
        "quant": {"bits": 4, "quant_type": "nf4", "double_quant": True},
        "train": {"steps": 20, "lr": 2e-3, "batch_size": 8, "seq_len": 64, "warmup_steps": 3, "seed": 0},
        "task": "sentiment",
        "variants": ["base", "lora", "qlora"],
    },
}


def preset_config(name: str | None, overrides: dict | None = None) -> RunConfig:
    """A RunConfig from a preset (or the defaults) with nested overrides applied on top."""
    if name is not None and name not in PRESETS:
        raise ValueError(f"preset: unknown {name!r}; choose from {', '.join(PRESETS)}")
    merged: dict = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(name, {}).items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return RunConfig.from_dict(merged)


@dataclass
class CompareResult:
    config: dict
    device: str
    model_path: str
    task: str
    scoring: str = "exact_match"
    notes: list[str] = field(default_factory=list)
    variants: list[dict] = field(default_factory=list)
    generations: dict[str, dict[str, Generation]] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    stopped: bool = False

    def to_json(self) -> dict:
        return {"config": self.config, "device": self.device, "model_path": self.model_path, "task": self.task,
                "scoring": self.scoring, "notes": self.notes, "stopped": self.stopped, "variants": self.variants}


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # give freed heap pages back to the OS so the next variant's RSS starts clean (glibc only)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _effective_seq_len(tokenizer, split, seq_len: int) -> int:
    longest = max(len(r["input_ids"]) for r in data_mod.encode_split(tokenizer, split, seq_len))
    return min(seq_len, longest)


@dataclass(frozen=True)
class EstimateShapes:
    """The tensor shapes a variant runs at: training batches and evaluation batches (as evaluate() cuts them)."""

    train_batch: int
    train_seq: int
    eval_batch: int
    eval_seq: int


def estimate_shapes(tokenizer, train_split, eval_split, batch_size: int, seq_len: int) -> EstimateShapes:
    """Training batches are batch_size x the longest example (at most seq_len): the batch is padded to its
    longest row; evaluation batches are EVAL_BATCH_SIZE (or the whole eval split, if smaller) x its longest."""
    eval_rows = data_mod.encode_split(tokenizer, eval_split, seq_len)
    return EstimateShapes(batch_size, _effective_seq_len(tokenizer, train_split, seq_len),
                          min(EVAL_BATCH_SIZE, len(eval_rows)), max(len(r["input_ids"]) for r in eval_rows))


def variant_estimate(model_config, cfg: RunConfig, bits: int, trained: bool, device_type: str,
                     shapes: EstimateShapes, adapter_attached: bool | None = None) -> int:
    """Estimated peak of one variant as run_compare measures it: from before the model loads to the end,
    through training (trained variants), evaluation in batches and generation. For a trained variant that is
    the larger of the training step (memory.estimate, train=True) and an evaluation batch with the adapter
    loaded; for the base variant, the evaluation batch (train=False), with the adapter's weights when one is
    attached (run_compare attaches it, switched off, when a trained variant shares the base's bit width)."""
    common = dict(bits=bits, rank=cfg.lora.rank, targets=cfg.lora.target_modules, device_type=device_type,
                  double_quant=cfg.quant.double_quant)
    tr = memory.estimate(model_config, batch_size=shapes.train_batch, seq_len=shapes.train_seq, train=True,
                         gradient_checkpointing=cfg.train.gradient_checkpointing, **common)
    ev = memory.estimate(model_config, batch_size=shapes.eval_batch, seq_len=shapes.eval_seq, train=False, **common)
    with_adapter = ev.total + tr.components["adapter"]
    if not trained:
        return with_adapter if adapter_attached else ev.total
    return max(tr.total, with_adapter)


def run_compare(cfg: RunConfig, out_dir: str | Path, *, sinks: Iterable[Sink] = (),
                stop: threading.Event | None = None, on_status: Callable[[str], None] | None = None,
                decode: DecodeSettings | None = None, task: data_mod.Task | None = None,
                on_variant: Callable[[str, int, int], None] | None = None) -> CompareResult:
    """Run every variant of cfg in turn and write the run folder. Only one model is in memory at a time.

    `task` overrides cfg.task/cfg.data with data already loaded (e.g. from a DataFrame via
    workbench.data.load_data_task). `on_variant(name, bits, estimated_peak_bytes)` is called as each
    variant starts, so a live memory plot can draw the estimate before the first step."""
    out = Path(out_dir)
    stop = stop or threading.Event()
    status = on_status or (lambda msg: log.info(msg))

    if task is None:  # first: a mistake in the data should not wait for a model to load
        task = data_mod.get_task(cfg.task, cfg.data, seed=cfg.train.seed, eval_data=cfg.eval_data,
                                 eval_fraction=cfg.eval_fraction, columns=cfg.columns,
                                 skip_bad_rows=cfg.skip_bad_rows)
    choice = models.pick_device(cfg.model.device)
    out.mkdir(parents=True, exist_ok=True)  # only once the data and device are known to be usable
    status(f"resolving model {cfg.model.name}")
    path = models.resolve_model(cfg.model.name)
    tokenizer = models.load_tokenizer(path)
    # continuing plain text greedily, a small model soon loops; a mild penalty keeps the styles comparable
    decode = decode or DecodeSettings(max_new_tokens=48, seed=cfg.train.seed,
                                      repetition_penalty=1.0 if task.chat else 1.3)
    eval_set = task.eval
    if cfg.train.eval_examples and not isinstance(eval_set, data_mod.TextSource):
        eval_set = eval_set[:cfg.train.eval_examples]
    prompts = task.sample_prompts[:3]
    result = CompareResult(config=cfg.to_dict(), device=choice.describe(), model_path=str(path), task=task.name,
                           scoring=task.scoring,
                           notes=task.notes + data_mod.length_report(tokenizer, task.train, cfg.train.seq_len))
    for note in result.notes:
        status(note)
    metrics_sink = runs.MetricsCSV(out / "metrics.csv")
    all_sinks: list[Sink] = [metrics_sink, lambda e: result.metrics.append(e.to_dict()), *sinks]
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(str(path))
    shapes = estimate_shapes(tokenizer, task.train, eval_set, cfg.train.batch_size, cfg.train.seq_len)

    def estimate(bits: int, trained: bool) -> int:
        attached = trained or any(n != "base" for n in cfg.variants if VARIANTS[n] == bits)
        return variant_estimate(model_config, cfg, bits, trained, choice.type, shapes, attached)

    def row(name: str, model, bits: int, peak: int, trained=None, ev=None) -> dict:
        trainable, total = models.parameter_counts(model)
        return {
            "name": name, "bits": bits, "rank": cfg.lora.rank if trained else None,
            "target_modules": cfg.lora.target_modules if trained else None,
            "trainable_params": trainable if trained else 0, "total_params": total,
            "weight_bytes": models.weight_bytes(model), "peak_memory_bytes": peak,
            "estimated_peak_bytes": estimate(bits, trained is not None),
            "train_seconds": trained.train_seconds if trained else None,
            "tokens_per_second": trained.tokens_per_second if trained else None,
            "final_train_loss": trained.final_loss if trained else None,
            "eval_loss": ev.eval_loss if ev else None, "perplexity": ev.perplexity if ev else None,
            "accuracy": ev.accuracy if ev else None,
            "steps_done": trained.steps_done if trained else None,
            "status": "stopped" if (trained and trained.stopped) else "done",
        }

    def answer(name: str, model, base: bool) -> None:
        # one prompt at a time, so each answer's time and tokens/s are its own
        for prompt in prompts:
            result.generations.setdefault(prompt, {})[name] = generate(model, tokenizer, [prompt], decode,
                                                                       base=base, chat=task.chat)[0]

    predictions: dict[str, list[dict]] = {}
    try:
        groups: dict[int, list[str]] = {}
        for name in cfg.variants:
            groups.setdefault(VARIANTS[name], []).append(name)
        for bits, names in groups.items():
            if stop.is_set():
                break
            _release_memory()
            monitor = memory.MemoryMonitor(choice.device).start()
            status(f"loading {path.name} at {bits} bits on {choice.describe()}")
            model, _ = models.load_model(path, bits=bits, quant=cfg.quant, device=cfg.model.device)
            trained_names = [n for n in names if n != "base"]
            if trained_names:
                seed_everything(cfg.train.seed)  # LoRA's random init too: same seed, same losses
                model = models.attach_lora(model, cfg.lora, bits, cfg.train.gradient_checkpointing)
            if "base" in names:
                if on_variant:
                    on_variant("base", bits, estimate(bits, False))
                status("evaluating base (adapter disabled)")
                ev = evaluate(model, tokenizer, eval_set, seq_len=cfg.train.seq_len, base=True,
                              scoring=task.scoring)
                answer("base", model, base=True)
                predictions["base"] = ev.predictions
                result.variants.append(row("base", model, bits, monitor.peak(), None, ev))
            for name in trained_names:
                if on_variant:
                    on_variant(name, bits, estimate(bits, True))
                status(f"training {name} ({cfg.train.steps} steps)")
                tr = train(model, tokenizer, task.train, cfg.train, variant=name, sinks=all_sinks, stop=stop,
                           monitor=monitor)
                runs.save_adapter(model, out / "adapters" / name)
                ev = None
                if not tr.stopped:
                    status(f"evaluating {name}")
                    ev = evaluate(model, tokenizer, eval_set, seq_len=cfg.train.seq_len, scoring=task.scoring)
                    predictions[name] = ev.predictions
                    answer(name, model, base=False)
                result.variants.append(row(name, model, bits, monitor.peak(), tr, ev))
            monitor.stop()
            del model
        result.stopped = stop.is_set()
    finally:
        metrics_sink.close()
        _release_memory()
        if result.variants:
            write_run(out, result, predictions)
    return result


def write_run(out: Path, result: CompareResult, predictions: dict[str, list[dict]] | None = None) -> None:
    """results.json/csv, the three figures and generations.md: each written atomically."""
    runs.write_json(out / "results.json", result.to_json())
    runs.write_csv(out / "results.csv", result.variants, runs.RESULT_FIELDS)
    runs.save_figure(plots.loss_figure(result.metrics), out / "loss.png")
    runs.save_figure(plots.memory_figure(result.variants, result.device), out / "memory.png")
    runs.save_figure(plots.accuracy_memory_figure(result.variants), out / "accuracy_vs_memory.png")
    runs.write_text(out / "generations.md", generations_markdown(result))
    if predictions:
        runs.write_json(out / "predictions.json", predictions)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def generations_markdown(result: CompareResult) -> str:
    names = [v["name"] for v in result.variants if any(v["name"] in g for g in result.generations.values())]
    lines = [f"# Side-by-side answers ({result.task})", "",
             f"Model: `{result.model_path}` on {result.device}. Same prompt, decoding settings and seed for "
             "every column; base is the LoRA model with its adapter disabled.", ""]
    if models.EMBEDDED_DIRNAME in result.model_path:
        lines += ["The embedded weights are a dequantized Q4_1 copy of SmolLM2-135M-Instruct, so the "
                  "16-bit baseline is that dequantized model.", ""]
    for prompt, answers in result.generations.items():
        lines += ["## Prompt", "", "> " + prompt.replace("\n", "\n> "), "",
                  "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                  "| " + " | ".join(_cell(answers[n].text) if n in answers else "" for n in names) + " |",
                  "| " + " | ".join(f"{answers[n].new_tokens} tokens, {answers[n].tokens_per_second:.1f} tok/s"
                                    if n in answers else "" for n in names) + " |", ""]
    return "\n".join(lines)


def results_table(result: CompareResult):
    """The printed table: a pandas DataFrame with readable units."""
    import pandas as pd

    rows = []
    for v in result.variants:
        rows.append({
            "variant": v["name"], "bits": v["bits"],
            "trainable": f"{v['trainable_params']:,}" if v["trainable_params"] else "-",
            "weights MiB": round(v["weight_bytes"] / memory.MiB, 1),
            "peak MiB": round(v["peak_memory_bytes"] / memory.MiB, 1),
            "est. peak MiB": round(v["estimated_peak_bytes"] / memory.MiB, 1),
            "train s": None if v["train_seconds"] is None else round(v["train_seconds"], 1),
            "tok/s": None if v["tokens_per_second"] is None else round(v["tokens_per_second"], 1),
            "train loss": None if v["final_train_loss"] is None else round(v["final_train_loss"], 4),
            "eval loss": None if v["eval_loss"] is None else round(v["eval_loss"], 4),
            "ppl": None if v["perplexity"] is None else round(v["perplexity"], 3),
            "accuracy": None if v["accuracy"] is None else f"{v['accuracy']:.1%}",
        })
    return pd.DataFrame(rows).set_index("variant")


def progress_sink() -> Callable[[MetricEvent], None]:
    """A tqdm bar per variant for the terminal and notebooks (tqdm.auto picks the right one)."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def sink(e: MetricEvent) -> None:
        bar = bars.get(e.variant)
        if bar is None:
            bar = bars[e.variant] = tqdm(total=e.total_steps, desc=f"train {e.variant}", unit="step", leave=True)
        bar.update(e.step - bar.n)
        bar.set_postfix(loss=f"{e.loss:.3f}", mem=f"{e.memory_bytes / memory.MiB:.0f}MiB")
        if e.step >= e.total_steps:
            bar.close()

    return sink

