"""The gap before training: what 8-bit and 4-bit storage cost a model before any adapter learns anything.

For each storage format (LLM.int8, NF4 and FP4 with double quantization on and off) the model is really loaded
at that width, and compared with the unquantized reference (loaded at 16 bits as float32, so the reference is
exact): each quantized layer's relative weight error ||W - dequant(Q(W))||_F / ||W||_F (and the total over
layers), the eval loss the workbench scores, teacher-forced on prompt + answer, and the KL divergence of the
next-token distribution from the reference's, each with a 95% interval over the eval examples (the loss
difference paired: the same examples). With a LoraSettings whose init is not gaussian, each format the init
works on gets a second row: the adapter attached and started by engine.inits.apply_init, the layer's weight
then dequant(base) + scaling * B @ A: how much of the rounding error the init took back at step 0.

One quantized model is loaded at a time and freed before the next; the reference stays. The reference's last
hidden states are kept (a few MB), so its logits cost one head matmul per batch instead of a whole forward.

Long because: the measurement, its report (rows, per-layer rows, JSON, frames) and its figure are one story,
read together by the CLI and the Quantization tab.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure

from workbench.core.config import INITS, LoraSettings, QuantSettings, TrainSettings
from workbench.core.events import Hooks
from workbench.core.stats import Interval, difference_interval, mean_interval
from workbench.data import IGNORE_INDEX, Example, encode
from workbench.engine import models
from workbench.engine.explain.quant import format_label
from workbench.engine.layout import ModelLayout
from workbench.machine import memory

# the five storage formats, in the order they are measured and shown
GAP_FORMATS: tuple[tuple[str, bool], ...] = (
    ("int8", False),
    ("nf4", True),
    ("nf4", False),
    ("fp4", True),
    ("fp4", False),
)
DEFAULT_EXAMPLES = 32
BATCH_SIZE = 32  # examples per forward: a 4-bit layer on the CPU dequantizes its whole weight once per forward
EMBEDDED_MARK = "WORKBENCH_SOURCE.txt"  # what engine.resolve.convert_gguf leaves in the embedded model's folder
EMBEDDED_NOTE = (
    'The embedded model\'s "16-bit" weights were themselves dequantized from a 4-bit (Q4_1) GGUF file, so the '
    "reference already carries one rounding: the gap shown is the extra cost of rounding again, and can understate "
    "what 4 bits cost a model trained in 16 bits."
)


def format_key(fmt: str, double_quant: bool) -> str:
    """The short name of a format for --formats: int8, nf4, nf4-dq, fp4, fp4-dq."""
    return fmt + ("-dq" if double_quant and fmt != "int8" else "")


FORMAT_KEYS = {format_key(f, dq): (f, dq) for f, dq in GAP_FORMATS}


def parse_formats(text: str) -> list[tuple[str, bool]]:
    """A comma list of format keys (int8, nf4, nf4-dq, fp4, fp4-dq, or all) -> the formats, in measuring order."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(GAP_FORMATS)
    bad = [n for n in names if n not in FORMAT_KEYS]
    if bad or not names:
        raise ValueError(
            f"formats: {', '.join(map(repr, bad)) or 'nothing'} is not a format; give a comma list of "
            f"{', '.join(FORMAT_KEYS)} (or all)"
        )
    return [f for f in GAP_FORMATS if format_key(*f) in names]


def quant_settings(fmt: str, double_quant: bool) -> QuantSettings:
    """How load_model is asked for a format: float32 compute, so the gap is the weights' rounding alone."""
    if fmt == "int8":
        return QuantSettings(bits=8, compute_dtype="float32")
    return QuantSettings(bits=4, quant_type=fmt, double_quant=double_quant, compute_dtype="float32")


def is_embedded(path: Path) -> bool:
    """Whether a resolved model folder is the embedded SmolLM2, dequantized from its 4-bit GGUF file."""
    return (Path(path) / EMBEDDED_MARK).is_file()


# --------------------------------------------------------------------------- the report


@dataclass
class LayerGap:
    """One quantized layer in one format: how far its (effective) weight is from the reference's."""

    layer: str
    row: str  # the GapRow label it belongs to
    weight_norm: float  # ||W||_F of the reference
    error_norm: float  # ||W - W_q||_F

    @property
    def rel_error(self) -> float:
        return self.error_norm / self.weight_norm if self.weight_norm else float("nan")

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "row": self.row,
            "rel_error": self.rel_error,
            "error_norm": self.error_norm,
            "weight_norm": self.weight_norm,
        }


def _interval(ci: Interval | None) -> list[float] | None:
    return None if ci is None else [ci.low, ci.high]


@dataclass
class GapRow:
    """One format (optionally with an adapter's start on it) against the reference, on the same examples."""

    fmt: str  # "16-bit" for the reference row, else int8 / nf4 / fp4
    double_quant: bool
    init: str | None  # the adapter's init for a "with the adapter on" row
    total_rel_error: float | None  # sqrt(sum ||dW||^2) / sqrt(sum ||W||^2) over the quantized layers
    losses: list[float]  # per example: mean loss over its answer tokens
    kls: list[float]  # per example: mean KL(p_16 || p_q) over its positions
    tokens: list[int]  # per example: answer tokens (the loss's weights)
    ref_losses: list[float]  # the reference's, on the same examples (for the paired difference)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        base = "16-bit" if self.fmt == "16-bit" else format_key(self.fmt, self.double_quant)
        return base + (f"+{self.init}" if self.init else "")

    @property
    def label(self) -> str:
        base = "16-bit (float32 reference)" if self.fmt == "16-bit" else format_label(self.fmt, self.double_quant)
        return base + (f", with {self.init} at step 0" if self.init else "")

    @property
    def loss(self) -> float:
        """The eval loss as a run reports it: per-token mean over every example's answer tokens."""
        return sum(x * t for x, t in zip(self.losses, self.tokens)) / max(sum(self.tokens), 1)

    @property
    def loss_ci(self) -> Interval | None:
        return mean_interval(self.losses, self.tokens)

    @property
    def loss_diff(self) -> float:
        return self.loss - sum(x * t for x, t in zip(self.ref_losses, self.tokens)) / max(sum(self.tokens), 1)

    @property
    def loss_diff_ci(self) -> Interval | None:
        """Paired: each example's loss minus the reference's on the same example, resampled by example."""
        return difference_interval(self.losses, self.ref_losses, self.tokens)

    @property
    def kl(self) -> float:
        return sum(self.kls) / max(len(self.kls), 1)

    @property
    def kl_ci(self) -> Interval | None:
        return mean_interval(self.kls)

    def to_dict(self, per_example: bool = True) -> dict:
        out = {
            "key": self.key,
            "format": self.label,
            "fmt": self.fmt,
            "double_quant": self.double_quant,
            "init": self.init,
            "total_rel_error": self.total_rel_error,
            "eval_loss": self.loss,
            "eval_loss_ci": _interval(self.loss_ci),
            "loss_vs_16bit": self.loss_diff,
            "loss_vs_16bit_ci": _interval(self.loss_diff_ci),
            "kl": self.kl,
            "kl_ci": _interval(self.kl_ci),
            "examples": len(self.losses),
            "seconds": self.seconds,
            "notes": list(self.notes),
        }
        if per_example:
            out["per_example"] = {"losses": self.losses, "kls": self.kls, "tokens": self.tokens}
        return out


@dataclass
class GapReport:
    """The gap of every format measured, on one model and one set of eval examples."""

    model: str
    path: str
    examples: int
    rows: list[GapRow]  # the 16-bit reference first, then each format (and its "with the adapter on" row)
    layers: list[LayerGap]
    embedded: bool
    seconds: float
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> GapRow:
        return next(r for r in self.rows if r.key == key)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "path": self.path,
            "examples": self.examples,
            "embedded": self.embedded,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "rows": [r.to_dict() for r in self.rows],
            "layers": [x.to_dict() for x in self.layers],
        }

    def table(self) -> list[dict]:
        """One plain dict per row (no per-example lists): what the CLI prints and the tab shows."""
        return [r.to_dict(per_example=False) for r in self.rows]

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.table()).set_index("key")

    def layer_frame(self):
        """Per layer, one column of relative error per row (format)."""
        import pandas as pd

        long = pd.DataFrame([x.to_dict() for x in self.layers])
        if long.empty:
            return long
        order = list(dict.fromkeys(long["layer"]))
        wide = long.pivot(index="layer", columns="row", values="rel_error")
        return wide.loc[order, [r.label for r in self.rows if r.label in wide.columns]]


# --------------------------------------------------------------------------- weights


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def quantized_layers(model) -> dict[str, torch.nn.Module]:
    """The bitsandbytes layers of a loaded model by name (under peft: the bnb layer beneath each LoRA wrapper)."""
    out: dict[str, torch.nn.Module] = {}
    for name, module in _base(model).named_modules():
        if type(module).__name__ in ("Linear4bit", "Linear8bitLt") and not hasattr(module, "base_layer"):
            out[name.replace(".base_layer", "")] = module
    return out


@torch.no_grad()
def dequantized_weight(module) -> torch.Tensor:
    """The weight a bitsandbytes layer really multiplies by, as float32 (out x in)."""
    import bitsandbytes.functional as bnbf

    from workbench.engine.inits import dequantized

    w = module.weight
    if type(module).__name__ == "Linear4bit":
        return dequantized(w)
    # LLM.int8: int8 codes and one fp32 scale per output row; the first forward moves the scales to .state
    scb = getattr(w, "SCB", None)
    if scb is None:
        scb = module.state.SCB
    return bnbf.int8_vectorwise_dequant(w.data, scb).float()


@torch.no_grad()
def reference_weight(reference, name: str, shape: torch.Size) -> torch.Tensor:
    w = reference.get_submodule(name).weight.detach().float()
    # GPT-2's Conv1D stores in x out; bitsandbytes quantizes it transposed, as a Linear
    return w.t() if w.shape != shape and w.t().shape == shape else w


@torch.no_grad()
def effective_weight(model, name: str) -> torch.Tensor:
    """dequant(base) + the adapter's start (scaling * B @ A, peft's own get_delta_weight) where one is attached."""
    module = _base(model).get_submodule(name)
    wrapper = module if hasattr(module, "base_layer") else None
    w = dequantized_weight(wrapper.base_layer if wrapper is not None else module)
    if wrapper is not None:
        for adapter in wrapper.active_adapters:
            if adapter in wrapper.lora_A:
                delta = wrapper.get_delta_weight(adapter).float()
                w = w + (delta if delta.shape == w.shape else delta.t())
    return w


def layer_errors(model, reference, label: str) -> tuple[list[LayerGap], float | None]:
    """Each quantized layer's error against the reference, and the total over them."""
    out = []
    for name in quantized_layers(model):
        w_q = effective_weight(model, name)
        w = reference_weight(reference, name, w_q.shape)
        out.append(LayerGap(name, label, float(w.norm()), float((w - w_q).norm())))
    if not out:
        return out, None
    total = math.sqrt(sum(x.error_norm**2 for x in out)) / math.sqrt(sum(x.weight_norm**2 for x in out))
    return out, total


# --------------------------------------------------------------------------- the model's outputs


def _cache_key(body) -> str:
    # transformers 5.x renames past_key_values to cache (as engine.generate reads it)
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


@dataclass
class _Batch:
    """Encoded rows laid out for one forward: after the rows' shared start (`skip` tokens, run once per model
    from its KV cache), each row's rest left-padded, so the shared start is never recomputed."""

    ids: torch.Tensor
    mask: torch.Tensor  # the shared start's ones included
    labels: torch.Tensor
    positions: torch.Tensor
    skip: int


def _layout(rows: list[dict], skip: int, pad: int, device) -> _Batch:
    width = max(len(r["input_ids"]) - skip for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, r in enumerate(rows):
        n = len(r["input_ids"]) - skip
        ids[b, width - n :] = torch.tensor(r["input_ids"][skip:])
        mask[b, width - n :] = 1
        labels[b, width - n :] = torch.tensor(r["labels"][skip:])
    mask = torch.cat([mask.new_ones(len(rows), skip), mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
    return _Batch(ids.to(device), mask.to(device), labels.to(device), positions.to(device), skip)


def _answer_logits(model, batch: _Batch, prefix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits at the positions that predict an answer token (N x vocab), their targets, and each
    one's row. Through models.split_head, so the vocabulary-wide head runs on those positions only."""
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    parts = models.split_head(model)
    if parts is None:  # a head that does more than a matmul (soft-capping): the whole model, no shared start
        out = model(input_ids=batch.ids, attention_mask=batch.mask)
        return out.logits[:, :-1][keep].float(), targets[keep], rows
    body, head = parts
    extra = {}
    if prefix is not None:
        extra = {"use_cache": True, _cache_key(body): prefix.copies(batch.ids.shape[0])}
    hidden = body(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, **extra)
    return head(hidden.last_hidden_state[:, :-1][keep]).float(), targets[keep], rows


def _per_example(values: torch.Tensor, rows: torch.Tensor, n: int) -> list[float]:
    """The mean of `values` over each row's positions."""
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, rows.cpu(), values.double().cpu())
    counts = torch.bincount(rows.cpu(), minlength=n).clamp(min=1)
    return (sums / counts).tolist()


@dataclass
class _Outputs:
    losses: list[float]
    tokens: list[int]
    kls: list[float]
    logp: list[torch.Tensor]  # per batch: the log-probabilities at the answer positions (the reference's kept)


@torch.no_grad()
def score_rows(model, rows: list[dict], pad: int, reference: list[torch.Tensor] | None = None) -> _Outputs:
    """Per example, teacher-forced: the mean loss over its answer tokens (the loss the workbench scores, as
    models.scored_loss gives it) and, given the reference's log-probabilities, the mean KL(p_ref || p_model)
    over the positions that predict its answer tokens."""
    from workbench.engine.generate import shared_prefix

    model.eval()
    device = next(model.parameters()).device
    prefix = shared_prefix(model, rows, device) if models.split_head(model) is not None else None
    skip = prefix.length if prefix is not None else 0
    losses, tokens, kls, kept = [], [], [], []
    for i in range(0, len(rows), BATCH_SIZE):
        chunk = rows[i : i + BATCH_SIZE]
        batch = _layout(chunk, skip, pad, device)
        logits, targets, where = _answer_logits(model, batch, prefix)
        logp = torch.log_softmax(logits, dim=-1)
        token_loss = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        losses += _per_example(token_loss, where, len(chunk))
        tokens += torch.bincount(where.cpu(), minlength=len(chunk)).tolist()
        if reference is None:
            kept.append(logp)
            kls += [0.0] * len(chunk)
        else:
            ref = reference[i // BATCH_SIZE]
            kls += _per_example((ref.exp() * (ref - logp)).sum(-1), where, len(chunk))
    return _Outputs(losses, tokens, kls, kept)


# --------------------------------------------------------------------------- the measurement


def check_gap(path: Path, formats: Sequence[tuple[str, bool]], lora: LoraSettings | None) -> None:
    """Refuse, before anything loads, what cannot be measured."""
    layout = ModelLayout.for_model(str(path))
    layout.check_bits(4 if any(f != "int8" for f, _ in formats) else 8)
    if lora is not None and lora.init != "gaussian":
        from workbench.engine import inits

        layout.check_targets(lora.target_modules)  # what attach_lora would refuse after the first load
        layout.check_rank(lora.rank)

        for bits in sorted({8 if f == "int8" else 4 for f, _ in formats} & set(INITS[lora.init].bits)):
            inits.check_init(lora, path, bits)


def measure_gap(
    path: Path,
    examples: Sequence[Example],
    tokenizer=None,
    *,
    formats: Sequence[tuple[str, bool]] = GAP_FORMATS,
    lora: LoraSettings | None = None,
    train: TrainSettings | None = None,
    train_examples: Sequence[Example] | None = None,
    seq_len: int = 128,
    device: str = "cpu",
    hooks: Hooks | None = None,
    model_name: str | None = None,
) -> GapReport:
    """Measure the gap of each format on `examples` (a task's eval prompts with their answers).

    `lora` with an init other than gaussian adds, for each format the init works on, the row "with the adapter
    on" (engine.inits.apply_init starts it; EVA reads `train_examples` through inits.init_batches)."""
    hooks = hooks or Hooks()
    started = time.perf_counter()
    path = Path(path)
    if not examples:
        raise ValueError("examples: the gap needs at least one eval example; raise the number of examples")
    formats = list(formats)
    with_init = lora is not None and lora.init != "gaussian"
    check_gap(path, formats, lora)
    tokenizer = tokenizer or models.load_tokenizer(path)
    init_rows = [f for f in formats if with_init and (8 if f[0] == "int8" else 4) in INITS[lora.init].bits]
    tell = hooks.begin("gap", path.name, 1 + len(formats), "models")
    hooks.status(f"loading {path.name} unquantized (float32 reference)")
    reference, choice = models.load_model(path, bits=16, device=device, dtype="float32")
    reference.requires_grad_(False)
    encoded = encode(tokenizer, list(examples), seq_len).rows
    if not any(lab != IGNORE_INDEX for r in encoded for lab in r["labels"][1:]):
        raise ValueError(f"seq_len: {seq_len} tokens cut off the answer of every eval example; raise seq_len")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ref_out = score_rows(reference, encoded, pad)
    rows = [GapRow("16-bit", False, None, 0.0, ref_out.losses, ref_out.kls, ref_out.tokens, ref_out.losses)]
    layers: list[LayerGap] = []
    tell(1)
    eva_batches = None
    done = 1
    for group in load_groups(formats, init_rows):
        first = group[0]
        hooks.status(f"loading {path.name} as {format_label(*first)}")
        quant = quant_settings(*first)
        t0 = time.perf_counter()
        model, _ = models.load_model(path, bits=quant.bits, quant=quant, device=device, dtype="float32")
        model.requires_grad_(False)
        try:
            for fmt, dq in group:
                label = format_label(fmt, dq)
                if (fmt, dq) != first:
                    t0 = time.perf_counter()
                    with_double_quant(model)
                    quant = quant_settings(fmt, dq)
                got, total = layer_errors(model, reference, label)
                out = score_rows(model, encoded, pad, ref_out.logp)
                rows.append(
                    GapRow(
                        fmt, dq, None, total, out.losses, out.kls, out.tokens, ref_out.losses, time.perf_counter() - t0
                    )
                )
                layers += got
                if (fmt, dq) in init_rows:
                    t1 = time.perf_counter()
                    hooks.status(f"{label}: starting the adapter with {lora.init}")
                    if lora.init == "eva" and eva_batches is None:
                        eva_batches = _eva_batches(tokenizer, train_examples, train, lora.rank, choice.device)
                    model, note = _with_init(model, lora, quant, path, eva_batches)
                    row_label = f"{label}, with {lora.init} at step 0"
                    got, total = layer_errors(model, reference, row_label)
                    out = score_rows(model, encoded, pad, ref_out.logp)
                    row = GapRow(fmt, dq, lora.init, total, out.losses, out.kls, out.tokens, ref_out.losses)
                    row.seconds, row.notes = time.perf_counter() - t1, note
                    rows.append(row)
                    layers += got
                done += 1
                tell(done)
        finally:
            del model
            memory.release()  # one quantized model at a time: the next one loads into what this one held
    order = {f: i for i, f in enumerate(formats)}  # shown in the order asked, each format's init row after it
    rows[1:] = sorted(rows[1:], key=lambda r: (order[(r.fmt, r.double_quant)], r.init is not None))
    labels = [r.label for r in rows]
    layers.sort(key=lambda g: labels.index(g.row) if g.row in labels else len(labels))
    notes = [EMBEDDED_NOTE] if is_embedded(path) else []
    if with_init and len(init_rows) < len(formats):
        fits = ", ".join(f"{b} bits" for b in INITS[lora.init].bits if b < 16)
        notes.append(f"{lora.init} works on {fits}: the other formats have no row with it")
    del reference
    memory.release()
    return GapReport(
        model_name or str(path),
        str(path),
        len(examples),
        rows,
        layers,
        is_embedded(path),
        time.perf_counter() - started,
        notes,
    )


def load_groups(formats: Sequence[tuple[str, bool]], init_rows) -> list[list[tuple[str, bool]]]:
    """The formats by the one load each group needs: a 4-bit type asked for with and without double quantization
    loads once, without, and the other is made from it (with_double_quant), unless an init row changes either."""
    groups: list[list[tuple[str, bool]]] = []
    for f in formats:
        if any(f in g for g in groups):
            continue
        sibling = (f[0], not f[1])
        if f[0] != "int8" and sibling in formats and f not in init_rows and sibling not in init_rows:
            groups.append([(f[0], False), (f[0], True)])
        else:
            groups.append([f])
    return groups


@torch.no_grad()
def with_double_quant(model) -> int:
    """A model loaded at 4 bits without double quantization turned, in place, into the one a load with it gives.
    bitsandbytes' quantize_4bit computes the same 4-bit codes either way, from the float block absmax, and only
    then quantizes the absmax (blockwise, 256 to a block, around their mean): done here to the loaded absmax, the
    weights need not be quantized again (a third of the gap's time on a CPU). Returns the layers changed."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not module.weight.quant_state.nested:
            qs = module.weight.quant_state
            offset = qs.absmax.mean()
            qabsmax, state2 = bnbf.quantize_blockwise(qs.absmax - offset, blocksize=256)
            module.weight.quant_state = bnbf.QuantState(
                absmax=qabsmax,
                shape=qs.shape,
                dtype=qs.dtype,
                blocksize=qs.blocksize,
                code=qs.code,
                quant_type=qs.quant_type,
                offset=offset,
                state2=state2,
            )
            module.weight.compress_statistics = True
            n += 1
    return n


def _eva_batches(tokenizer, train_examples, train: TrainSettings | None, rank: int, device) -> list[dict]:
    from workbench.engine import inits

    if not train_examples:
        raise ValueError("init: eva reads training batches before it starts; give a task with training examples")
    got = inits.init_batches(tokenizer, list(train_examples), train or TrainSettings(), rank)
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in got]


def _with_init(model, lora: LoraSettings, quant: QuantSettings, path: Path, batches) -> tuple[object, list[str]]:
    """The adapter attached to `model` and started by the init (in place, base weights included)."""
    from workbench.engine import inits

    peft_model = models.attach_lora(model, lora, quant.bits)
    report = inits.apply_init(peft_model, lora, quant, quant.bits, path, batches=batches)
    peft_model.requires_grad_(False)
    notes = list(getattr(report, "notes", []) or [])
    if lora.use_dora:
        notes.append("DoRA's magnitude vector is left out of the weights compared (B @ A only)")
    return peft_model, notes


def gap_for_config(
    cfg,
    examples: int | None = None,
    formats: Sequence[tuple[str, bool]] = GAP_FORMATS,
    *,
    with_init: bool = True,
    hooks: Hooks | None = None,
) -> GapReport:
    """The gap for a RunConfig: its model, the first `examples` of its task's eval split (None: up to
    DEFAULT_EXAMPLES), its LoRA settings (the "with the adapter on" rows when its init is not gaussian)."""
    from workbench.data import task_for
    from workbench.engine.resolve import resolve_model

    if examples is not None and (not isinstance(examples, int) or isinstance(examples, bool) or examples < 1):
        raise ValueError(f"examples must be a whole number of eval examples, at least 1; got {examples!r}")
    task = task_for(cfg)
    if task.kind != "instruction":
        raise ValueError("task: the gap is measured on prompt/answer examples; give an instruction task, not text")
    if examples is not None and examples > len(task.eval):
        raise ValueError(f"examples: {task.name} has {len(task.eval)} held-out examples; ask for at most that many")
    path = resolve_model(cfg.model.name)
    return measure_gap(
        path,
        task.eval[: examples or DEFAULT_EXAMPLES],
        formats=formats,
        lora=cfg.lora if with_init else None,
        train=cfg.train,
        train_examples=task.train,
        seq_len=cfg.train.seq_len,
        device=cfg.model.device,
        hooks=hooks,
        model_name=cfg.model.name,
    )


# --------------------------------------------------------------------------- the picture

_COLORS = {"int8": "#2ca02c", "nf4": "#d62728", "fp4": "#9467bd"}


def gap_figure(report: GapReport) -> Figure:
    """Each quantized layer's relative weight error per format (lines over the layers, in model order; dashed:
    with the adapter's start on), and beside it each format's total with the eval loss it costs."""
    fig = Figure(figsize=(11.5, 4.3))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    measured = [r for r in report.rows if r.fmt != "16-bit"]
    for r in measured:
        errs = [x.rel_error for x in report.layers if x.row == r.label]
        left.plot(
            range(len(errs)),
            errs,
            color=_COLORS.get(r.fmt, "gray"),
            linestyle="--" if r.init else ("-" if r.double_quant or r.fmt == "int8" else ":"),
            linewidth=1.0,
            label=r.label,
        )
    left.set_yscale("log")
    left.set_xlabel("quantized layer (model order)")
    left.set_ylabel("||W - W_q|| / ||W||")
    left.set_title("relative weight error per layer", fontsize=10)
    left.legend(fontsize=7)
    names = [r.key for r in measured]
    diffs = [r.loss_diff for r in measured]
    cis = [r.loss_diff_ci for r in measured]
    lo = [d - (ci.low if ci else d) for d, ci in zip(diffs, cis)]
    hi = [(ci.high if ci else d) - d for d, ci in zip(diffs, cis)]
    right.barh(names, diffs, xerr=[lo, hi], color=[_COLORS.get(r.fmt, "gray") for r in measured], alpha=0.75)
    right.axvline(0, color="black", linewidth=0.8)
    right.invert_yaxis()
    right.set_xlabel("eval loss minus 16-bit (nats/token, 95% paired interval)")
    right.set_title(f"what it costs the model ({report.examples} examples)", fontsize=10)
    for y, r in enumerate(measured):
        if r.total_rel_error is not None:
            right.annotate(f"{r.total_rel_error:.2%}", (0, y), fontsize=7, xytext=(3, 6), textcoords="offset points")
    fig.suptitle(f"{Path(report.model).name}: the gap before training", fontsize=11)
    if report.embedded:
        fig.text(0.5, -0.02, EMBEDDED_NOTE, ha="center", va="top", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig
