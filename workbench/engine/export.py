"""Take a run's adapter further: the peft adapter with a model card, or a merged model plain transformers loads.

Merging is peft's merge_and_unload. An adapter trained on a 4- or 8-bit base is merged into that base
dequantized (transformers' `dequantize`), as peft and the QLoRA authors describe: the merged weights are the
quantized weights plus the update, not the original weights plus the update. The merge is still not exact
(the quantized layers compute differently, and the folder is saved in 16 bits), so the gap is measured:
the merged model's logits against the adapter-on-its-own-base model's, on the run's eval examples.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from workbench.core.config import TRAINED_VARIANTS, VARIANTS
from workbench.core.files import atomic_dir, check_writable_dir, write_json, write_text
from workbench.data import TextSource, encode, task_for
from workbench.engine import inits, models, moved_base
from workbench.engine.layout import ModelLayout
from workbench.engine.resolve import resolve_model
from workbench.machine import memory
from workbench.records.runs import Run

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GAP_EXAMPLES = 16  # eval examples the merge gap is measured on: enough to see it, quick on a laptop
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class MergeGap:
    """How far the merged model's logits are from the adapter model's, on `examples` eval examples."""

    examples: int
    positions: int
    max_abs: float  # the largest logit difference anywhere
    mean_abs: float  # the mean absolute logit difference
    top1_agreement: float  # share of positions where both pick the same next token

    def describe(self) -> str:
        return (
            f"on {self.examples} eval examples ({self.positions} positions): logits differ by {self.mean_abs:.2e} "
            f"on average and {self.max_abs:.2e} at most; the next token agrees at {self.top1_agreement:.1%}"
        )


@dataclass
class Exported:
    out: Path
    run: str
    variant: str
    merged: bool
    dtype: str | None = None
    gap: MergeGap | None = None  # merged: against the adapter on its base; converted (rank): against the run's model
    rank: int | None = None  # the plain adapter's rank, where the init's start was folded in (2 × the run's)


def _check(run: Run, variant: str) -> None:
    if variant not in TRAINED_VARIANTS:
        raise ValueError(f"variant: {variant!r} has no adapter to export; choose from {', '.join(TRAINED_VARIANTS)}")
    if not run.finished:
        raise ValueError(f"run: {run.path} holds no finished run (no results.json); give a run folder")
    if not run.has_adapter(variant):
        have = ", ".join(run.trained_variants()) or "none"
        raise ValueError(f"variant: the run {run.name} saved no {variant} adapter (it has: {have}); pick another")


def _check_out(out: Path) -> Path:
    out = check_writable_dir(Path(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out: {out} already exists and is not empty; choose a new folder")
    return out


def export(
    run_dir: str | Path,
    variant: str,
    out: str | Path,
    *,
    merge: bool = False,
    dtype: str = "bfloat16",
    status=lambda text: None,
) -> Exported:
    """Write a run's `variant` adapter to `out` (a new folder, written whole or not at all): the peft adapter
    and a model card, or with `merge` the merged model in `dtype` with its tokenizer, chat template, model card
    and the measured merge gap (merge_gap.json)."""
    out = _check_out(Path(out))  # first: a folder that cannot be written is refused whatever the run holds
    run = Run(run_dir)
    _check(run, variant)
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if out.exists():
        out.rmdir()  # an empty folder made for it: the export takes its place whole
    done = Exported(out, run.name, variant, merge, dtype if merge else None)
    with atomic_dir(out, replace=False) as tmp:
        tmp = Path(tmp)
        if merge:
            done.gap = _merge_into(run, variant, tmp, DTYPES[dtype], status)
            write_json(tmp / "merge_gap.json", asdict(done.gap))
        elif moved_base.changed_base(run.config().lora, run.adapter_dir(variant)):
            done.rank = moved_base.plain_adapter(run.adapter_dir(variant), tmp)
            done.gap = _conversion_gap(run, variant, tmp, status)
            write_json(tmp / "conversion_gap.json", asdict(done.gap))
        else:
            for name in ADAPTER_FILES:  # the training state stays with the run: it only matters for continuing
                shutil.copy2(run.adapter_dir(variant) / name, tmp / name)
        write_text(tmp / "README.md", model_card(run, variant, done))
    return done


def model_folder(run: Run) -> Path:
    """The folder the run's model was loaded from, or the one its name resolves to here where that is gone."""
    path = run.model_path and Path(run.model_path)
    return path if path and path.is_dir() else resolve_model(run.config().model.name)


def _eval_rows(run: Run, tokenizer) -> list[torch.Tensor]:
    """The run's first GAP_EXAMPLES eval examples (or plain-text blocks), tokenised as it scored them."""
    cfg = run.config()
    split = task_for(cfg).eval
    rows = encode(tokenizer, split if isinstance(split, TextSource) else split[:GAP_EXAMPLES], cfg.train.seq_len)
    return [torch.tensor([r["input_ids"]]) for r in rows.rows[:GAP_EXAMPLES]]


def _logits(model, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=r.to(device)).logits.float().cpu() for r in rows]


def _load_adapter_model(run: Run, variant: str, path: Path, *, dequantized: bool):
    """The run's base at the variant's bits with its adapter on; `dequantized`: the base turned back into
    plain floating-point layers first (what the adapter is merged into). Where the run's init changed the base,
    that base again (engine.moved_base.reproduce)."""
    from peft import PeftModel

    cfg = run.config()
    bits, adapter = VARIANTS[variant].bits, run.adapter_dir(variant)
    model, _ = models.load_model(path, bits=bits, quant=cfg.quant, device=cfg.model.device, dtype=cfg.model.dtype)
    if moved_base.changed_base(cfg.lora, adapter):
        return moved_base.reproduce(model, cfg.lora, cfg.quant, cfg.train.seed, adapter, bits, path)
    if dequantized and bits < 16:
        model = model.dequantize()
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=False).eval()


@torch.no_grad()
def _merged(run: Run, variant: str, path: Path):
    """The adapter merged into its base (peft's merge_and_unload). Where the init changed a 4-bit base, that base
    is dequantized under the adapter (transformers' dequantize swaps the bnb layers inside peft's wrappers) and
    the update (peft's get_delta_weight) added to it: peft's 4-bit merge would quantize the sum again."""
    model = _load_adapter_model(run, variant, path, dequantized=True)
    if not (moved_base.changed_base(run.config().lora, run.adapter_dir(variant)) and VARIANTS[variant].bits < 16):
        return model.merge_and_unload()
    model.get_base_model().dequantize()
    for _, layer in inits.lora_layers(model):
        base = layer.get_base_layer().weight
        base.data += layer.get_delta_weight(inits.ADAPTER).to(base.dtype)
    return model.unload()


def _conversion_gap(run: Run, variant: str, plain: Path, status) -> MergeGap:
    """How far the plain adapter on the original base (in 16 bits) is from the run's own model, on its eval examples:
    nothing but rounding at 16 bits; on a 4-bit base, the rounding of the residual the run's base held."""
    from peft import PeftModel

    cfg = run.config()
    path = model_folder(run)
    rows = _eval_rows(run, models.load_tokenizer(path))
    status(f"scoring {len(rows)} eval examples with the run's {variant} model")
    reference = _logits(_load_adapter_model(run, variant, path, dequantized=False), rows)
    memory.release()
    status("scoring them with the plain adapter on the original 16-bit base")
    model, _ = models.load_model(path, bits=16, device=cfg.model.device, dtype=cfg.model.dtype)
    converted = _logits(PeftModel.from_pretrained(model, str(plain), is_trainable=False).eval(), rows)
    del model
    memory.release()
    return measure_gap(reference, converted)


def _merge_into(run: Run, variant: str, out: Path, dtype: torch.dtype, status) -> MergeGap:
    path = model_folder(run)
    tokenizer = models.load_tokenizer(path)
    rows = _eval_rows(run, tokenizer)
    status(f"scoring {len(rows)} eval examples with the {variant} adapter on its {VARIANTS[variant].bits}-bit base")
    reference = _logits(_load_adapter_model(run, variant, path, dequantized=False), rows)
    memory.release()  # one model at a time: the adapter model goes before the merged one loads
    status("merging the adapter into the base (peft merge_and_unload)")
    merged = _merged(run, variant, path)
    restore_conv1d(merged, ModelLayout.for_model(str(path)))
    merged = merged.to(dtype)
    gap = measure_gap(reference, _logits(merged, rows))
    merged.config.use_cache = True  # the workbench turns the cache off for training; a shipped model wants it
    if getattr(merged.config, "quantization_config", None) is not None:
        del merged.config.quantization_config  # the weights are plain floats now
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # with the chat template
    del merged
    memory.release()
    return gap


@torch.no_grad()
def restore_conv1d(model, layout: ModelLayout) -> int:
    """Put transformers' Conv1D back where dequantizing made it an nn.Linear (GPT-2 at 4 or 8 bits): Conv1D stores
    its weight in × out, so saved as a Linear the checkpoint would not load into the family's own model."""
    from transformers.pytorch_utils import Conv1D

    n = 0
    for lin in layout.linears:
        module = model.get_submodule(lin.name)
        if lin.kind != "conv1d" or isinstance(module, Conv1D):
            continue
        conv = Conv1D(lin.out_features, lin.in_features).to(module.weight.device, module.weight.dtype)
        conv.weight.copy_(module.weight.T)
        if module.bias is not None:
            conv.bias.copy_(module.bias)
        parent, _, leaf = lin.name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, conv)
        n += 1
    return n


def measure_gap(reference: list[torch.Tensor], other: list[torch.Tensor]) -> MergeGap:
    diffs = [(a - b).abs() for a, b in zip(reference, other)]
    agree = [(a.argmax(-1) == b.argmax(-1)).float() for a, b in zip(reference, other)]
    positions = sum(int(d.shape[1]) for d in diffs)
    return MergeGap(
        examples=len(diffs),
        positions=positions,
        max_abs=max(float(d.max()) for d in diffs),
        mean_abs=sum(float(d.mean(-1).sum()) for d in diffs) / positions,
        top1_agreement=sum(float(a.sum()) for a in agree) / positions,
    )


def _init_details(lora) -> str:
    if lora.init == "loftq":
        return f" ({lora.loftq_iter} iteration{'s' if lora.loftq_iter > 1 else ''})"
    if lora.init == "pissa":
        return " (exact SVD)" if lora.pissa_niter == 0 else f" (fast SVD, {lora.pissa_niter} iterations)"
    return ""


def model_card(run: Run, variant: str, done: Exported) -> str:
    """A README.md in the Hugging Face model-card form: what the model is, how it was made, what it scored."""
    doc = run.read()
    cfg = run.config()
    row = next((r for r in run.results() if r.name == variant), None)
    base = cfg.model.name
    lora, train = cfg.lora, cfg.train
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
    lines = [
        "---",
        f"base_model: {base}",
        *([] if done.merged else ["library_name: peft"]),
        "tags: [lora, workbench" + (", qlora" if VARIANTS[variant].bits == 4 else "") + "]",
        "---",
        "",
        f"# {variant} on {doc.get('task') or 'own data'}" + (" (merged)" if done.merged else " (LoRA adapter)"),
        "",
        f"A LoRA adapter trained by the workbench on `{base}` at {VARIANTS[variant].bits} bits"
        + (f", merged into the base and saved in {done.dtype}." if done.merged else "."),
        "",
        "## How it was made",
        "",
        f"- run: `{run.name}` on {doc.get('device', '?')}",
        f"- LoRA: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, targets {targets}"
        + (", rsLoRA" if lora.use_rslora else "")
        + (", DoRA" if lora.use_dora else ""),
        f"- init: {lora.init}" + _init_details(lora),
        f"- training: {train.steps} steps of batch {train.batch_size} × {train.seq_len} tokens"
        f" (accumulation {train.grad_accum}), learning rate {train.lr:g}, seed {train.seed}"
        + ("" if lora.loraplus_ratio == 1 else f", LoRA+ (B's learning rate {lora.loraplus_ratio:g}× A's)"),
    ]
    if VARIANTS[variant].bits == 4:
        q = cfg.quant
        lines.append(f"- 4-bit base: {q.quant_type}, double quantization {'on' if q.double_quant else 'off'}")
    command = doc.get("command")
    lines += ["", "Made with:", "", "```bash", command or "# the workbench's Train tab, with the settings above", "```"]
    if row is not None:
        lines += ["", "## Measured", "", "| | |", "|---|---|"]
        if row.accuracy is not None:
            lines.append(f"| held-out accuracy | {row.accuracy:.1%} |")
        if row.eval_loss is not None:
            lines.append(f"| eval loss | {row.eval_loss:.4f} |")
        if row.forgetting is not None:
            lines.append(f"| forgetting (general-text loss change) | {row.forgetting:+.4f} |")
        lines.append(f"| peak memory while training | {row.peak_memory_bytes / memory.MiB:,.0f} MiB |")
        lines.append(f"| steps done | {row.steps_done} |")
    if done.gap is not None and done.merged:
        lines += ["", "## The merge", "", f"Against the adapter on its own base, {done.gap.describe()}."]
    elif done.gap is not None:
        lines += [
            "",
            "## On the original base",
            "",
            f"The {lora.init} init moved part of each adapted weight into the adapter's start, so the run trained on "
            f"a changed base. This adapter is peft's conversion to a plain LoRA adapter for the original, unchanged "
            f"base (rank {done.rank}: the trained adapter minus its start); load that base in 16 bits. Against the "
            f"run's own model, {done.gap.describe()}"
            + (
                ": at 4 bits the run's base was the quantized residual, whose rounding this adapter cannot carry."
                if VARIANTS[variant].bits < 16
                else "."
            ),
        ]
    lines += ["", "## Load it", "", "```python"]
    if done.merged:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained('PATH')",
            "tokenizer = AutoTokenizer.from_pretrained('PATH')",
        ]
    else:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "model = AutoPeftModelForCausalLM.from_pretrained('PATH')  # loads the base named above",
        ]
    lines += ["```", ""]
    return "\n".join(lines)
