"""How an adapter starts (LoraSettings.init): gaussian (peft's default), LoftQ, PiSSA (QPiSSA at 4 bits), OLoRA
and EVA, applied to a model that models.attach_lora has wrapped, before its first training step.

At 16 bits PiSSA and OLoRA are peft's own layer methods. On a 4-bit base they are written here, on bitsandbytes'
quantizer, because peft's LoftQ runs on CUDA only (its loftq_utils moves every weight to "cuda") and its PiSSA
refuses a quantized base: each layer's 16-bit weight W is read from the checkpoint, the adapter's start is fitted
to it, and the base becomes the 4-bit quantization of what the adapter does not hold, with the run's own 4-bit
settings (type, double quantization, block size). EVA is peft's (initialize_lora_eva_weights) on a few training
batches.

Inits that move the base (moves_base) keep the adapter's starting weights (`InitReport.start`), saved beside the
adapter: engine.moved_base rebuilds such a run's model, or turns its adapter into a plain one for the original base.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.core.config import INITS, LoraSettings, QuantSettings, TrainSettings
from workbench.data import collate, encode
from workbench.engine.models import release_checkpoint_pages

ADAPTER = "default"  # peft's name for the one adapter the workbench attaches
EVA_BATCHES = 8  # distinct training batches EVA's activation pass cycles over
EVA_MAX_PASSES = 200  # forward passes after which EVA's components are taken as unsettled (see _counted)


@dataclass
class InitReport:
    """What starting the adapter did: which init, over how many layers, in how long."""

    init: str
    layers: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    start: dict[str, torch.Tensor] | None = None  # the adapter's starting weights, when the init changed the base
    # on a 4-bit base, ||W - what the layers compute|| / ||W|| over the adapted layers (W: the 16-bit weights),
    # as loaded (adapter at zero) and at step 0 with this start: how much of the rounding error it took back
    error_before: float | None = None
    error_after: float | None = None
    # the general-text scores at step 0 where the base moved: forgetting's reference (experiments.phases)
    general_start: object | None = None

    def describe(self) -> str:
        said = f"init {self.init}: {self.layers} layers in {self.seconds:.1f} s"
        if self.error_before is not None and self.error_after is not None:
            said += (
                f"; the adapted layers' 4-bit weight error {self.error_before:.2%} of the 16-bit weights as loaded, "
                f"{self.error_after:.2%} with this start"
            )
        return said + "".join(f"; {n}" for n in self.notes)


# --------------------------------------------------------------------------- checks before anything loads


def needs_checkpoint(lora: LoraSettings, bits: int) -> bool:
    """Whether the init reads the 16-bit weights from the checkpoint: it fits the adapter to W on a quantized base."""
    return INITS[lora.init].changes_base and bits < 16


def moves_base(lora: LoraSettings) -> bool:
    """Whether the init leaves a base other than the one loaded: PiSSA and OLoRA always, LoftQ from its second
    iteration (its first fits the adapter to the loaded 4-bit base as it is)."""
    return INITS[lora.init].changes_base and not (lora.init == "loftq" and lora.loftq_iter == 1)


def check_init(lora: LoraSettings, path: Path, bits: int) -> None:
    """Refuse, in one line naming the setting to change, an init that cannot work on this model at `bits` bits."""
    init = INITS[lora.init]
    if bits not in init.bits:
        raise ValueError(
            f"init: {init.name} works on {'/'.join(map(str, init.bits))}-bit bases, not {bits}-bit; "
            "choose another init or variant"
        )
    if init.name == "gaussian":
        return
    from workbench.engine.layout import ModelLayout

    layout = ModelLayout.for_model(str(path))
    if layout.experts and lora.adapt_experts:
        raise ValueError(
            f"init: {init.name} cannot start a mixture of experts' stacked expert weights; "
            "turn adapt_experts off (--no-experts) or use init gaussian"
        )
    if not needs_checkpoint(lora, bits):
        return
    config = json.loads((Path(path) / "config.json").read_text()) if (Path(path) / "config.json").is_file() else {}
    if config.get("quantization_config"):
        raise ValueError(
            f"init: {init.name} needs the model's 16-bit weights, and {Path(path).name} holds only quantized ones; "
            "choose init gaussian or eva, or give the 16-bit model"
        )
    if not any(Path(path).glob("*.safetensors")):
        raise ValueError(
            f"init: {init.name} reads the 16-bit weights from the model's .safetensors files, and {path} has none; "
            "save the model with safetensors or choose init gaussian or eva"
        )


def init_batches(tokenizer, examples, train: TrainSettings, rank: int) -> list[dict]:
    """EVA's activation pass: up to EVA_BATCHES training batches, seeded as training's are. A ValueError when a
    batch holds fewer tokens than the rank, since EVA's SVD of each layer's inputs needs at least that many."""
    from workbench.engine.train import batches

    rows = encode(tokenizer, examples, train.seq_len).trainable()
    if not rows:
        raise ValueError(f"seq_len: {train.seq_len} tokens cut off every answer; raise seq_len")
    count = min(EVA_BATCHES, math.ceil(len(rows) / train.batch_size))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    feed = batches(rows, train.batch_size, train.seed)
    out = [collate(next(feed), pad_id) for _ in range(count)]
    fewest = min(int(b["attention_mask"].sum()) for b in out)
    if fewest < rank:
        raise ValueError(
            f"init: eva needs at least {rank} tokens (the rank) in each training batch for its activation pass, and "
            f"a batch here holds {fewest}; raise batch_size or seq_len, lower the rank, or choose another init"
        )
    return out


# --------------------------------------------------------------------------- applying it


def lora_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of every peft LoRA layer holding the adapter, in model order."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A]


def adapter_weights(model) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft saves them (keys without the adapter name), copied to the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def apply_init(
    model, lora: LoraSettings, quant: QuantSettings, bits: int, path: Path, *, batches: list[dict] | None = None
) -> InitReport:
    """Start the attached adapter as `lora.init` says (and, for the inits that change it, the base under it)."""
    check_init(lora, path, bits)
    start = time.perf_counter()
    layers = lora_layers(model)
    notes: list[str] = []
    errors: tuple[float | None, float | None] = (None, None)
    if lora.init == "eva":
        notes.append(_eva(model, batches))
    elif lora.init != "gaussian" and bits == 16:
        if next(model.parameters()).device.type == "cpu":
            # the residuals replace weights that are views of the memory-mapped checkpoint, whose mapping the other
            # views would keep open: owned copies let it close (PiSSA kept 616 MiB more resident without)
            release_checkpoint_pages(model.get_base_model())
        for _, layer in layers:
            if lora.init == "pissa":
                layer.pissa_init(ADAPTER, "pissa" if lora.pissa_niter == 0 else f"pissa_niter_{lora.pissa_niter}")
            else:  # peft's olora_init takes the weight as out × in, which GPT-2's Conv1D's is not
                _olora(layer, None, None)
    elif lora.init != "gaussian":
        originals = CheckpointWeights(path, model)
        sums = torch.zeros(3, dtype=torch.float64)  # ||W||², ||W - as loaded||², ||W - with this start||²
        for name, layer in layers:
            w = originals.weight(name, layer)
            sums[:2] += torch.stack([w.norm() ** 2, (w - dequantized(layer.get_base_layer().weight)).norm() ** 2])
            if lora.init == "loftq":
                _loftq(layer, w, quant, lora.loftq_iter)
            elif lora.init == "pissa":
                _pissa(layer, w, quant, lora.pissa_niter)
            else:
                _olora(layer, w, quant)
            sums[2] += (w - effective_weight(layer)).norm() ** 2
        originals.close()
        errors = tuple(float(x) for x in (sums[1:] / sums[0]).sqrt())
    report = InitReport(lora.init, len(layers), time.perf_counter() - start, notes, None, *errors)
    if moves_base(lora):
        report.start = adapter_weights(model)
    return report


def _scaled_factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, scale: float):
    # B·A·scale must equal U·S·Vh, so each factor takes the root of S/scale (as peft's PiSSA does)
    root = torch.sqrt(s / scale)
    return u * root, root[:, None] * vh


def _set_adapter(layer, a: torch.Tensor, b: torch.Tensor) -> None:
    for module, value in ((layer.lora_A[ADAPTER], a), (layer.lora_B[ADAPTER], b)):
        module.weight.data = value.to(module.weight.dtype).contiguous()


def quantize_like(layer, w: torch.Tensor, quant: QuantSettings):
    """A 4-bit weight for `layer`'s base from float weights `w`, quantized exactly as the loaded base was."""
    import bitsandbytes as bnb

    old = layer.get_base_layer().weight
    new = bnb.nn.Params4bit(
        w.to(torch.float32).contiguous(),
        requires_grad=False,
        blocksize=old.blocksize,
        compress_statistics=old.compress_statistics,
        quant_type=old.quant_type,
        quant_storage=old.quant_storage,
        module=old.module,
    ).to(old.device)
    return new


def dequantized(weight) -> torch.Tensor:
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()


@torch.no_grad()
def effective_weight(layer) -> torch.Tensor:
    """What a 4-bit LoRA layer computes with, as one float32 (out × in) matrix: its dequantized base + scale · B · A
    (peft's get_delta_weight)."""
    return dequantized(layer.get_base_layer().weight) + layer.get_delta_weight(ADAPTER).float()


@torch.no_grad()
def _loftq(layer, w: torch.Tensor, quant: QuantSettings, iters: int) -> None:
    """LoftQ (Li et al., 2024): alternate quantizing what the adapter does not hold and fitting the adapter to the
    rounding error by SVD. One iteration keeps the loaded base as it is."""
    r, scale = layer.r[ADAPTER], layer.scaling[ADAPTER]
    base = layer.get_base_layer()
    q, fix = base.weight, None  # the first quantization is the loaded base itself
    for _ in range(iters):
        if fix is not None:
            q = quantize_like(layer, w - fix, quant)
        u, s, vh = torch.linalg.svd(w - dequantized(q), full_matrices=False)
        b, a = _scaled_factors(u[:, :r], s[:r], vh[:r], scale)
        fix = scale * (b @ a)
    if q is not base.weight:
        base.weight = q
    _set_adapter(layer, a, b)


@torch.no_grad()
def _pissa(layer, w: torch.Tensor, quant: QuantSettings, niter: int) -> None:
    """QPiSSA (Meng et al., 2024): the top-r singular directions go to the adapter, the rest is quantized."""
    r, scale = layer.r[ADAPTER], layer.scaling[ADAPTER]
    if niter:
        u, s, v = torch.svd_lowrank(w, q=r, niter=niter)
        vh = v.T
    else:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
    b, a = _scaled_factors(u[:, :r], s[:r], vh[:r], scale)
    layer.get_base_layer().weight = quantize_like(layer, w - scale * (b @ a), quant)
    _set_adapter(layer, a, b)


@torch.no_grad()
def _olora(layer, w: torch.Tensor | None, quant: QuantSettings | None) -> None:
    """OLoRA (Büyükakyüz, 2024): B and A are the first r columns and rows of W's QR factors, as peft sets them.
    `w` None: a 16-bit base, factored and left as the residual in place (transposed where it is a Conv1D)."""
    r, scale = layer.r[ADAPTER], layer.scaling[ADAPTER]
    base = layer.get_base_layer()
    if w is None:
        flip = layer.fan_in_fan_out
        w = (base.weight.T if flip else base.weight).float()
    q, rr = torch.linalg.qr(w)
    b, a = q[:, :r], rr[:r]
    residual = w - scale * (b @ a)
    if quant is None:
        base.weight.data = (residual.T if flip else residual).to(base.weight.dtype).contiguous()
    else:
        base.weight = quantize_like(layer, residual, quant)
    _set_adapter(layer, a, b)


def _eva(model, batches: list[dict] | None) -> str:
    from peft import EvaConfig, initialize_lora_eva_weights

    if not batches:
        raise ValueError("init: eva needs training batches for its activation pass; give the run training data")
    config = model.peft_config[ADAPTER]
    # rho 1: every layer keeps rank r (no redistribution), so the adapter's shape, its memory estimate and its
    # export are those of any rank-r adapter; the label mask off: an instruction's answer is a few tokens, and
    # the layers see the prompt's tokens too
    config.init_lora_weights, config.eva_config = "eva", EvaConfig(rho=1.0, use_label_mask=False)
    passes = [0]

    def counted(m, inputs):
        passes[0] += 1
        if passes[0] > EVA_MAX_PASSES:  # peft cycles the batches until every layer settles: never forever here
            raise ValueError(
                f"init: eva's components did not settle in {EVA_MAX_PASSES} passes over {len(batches)} batches; "
                "give more training data or choose another init"
            )
        return m(**inputs)

    try:
        with torch.no_grad():
            initialize_lora_eva_weights(
                model, batches, forward_fn=counted, show_progress_bar=False, gather_distributed_inputs=False
            )
    finally:
        # what is saved is a plain LoRA adapter: plain peft loads it on the base as it is
        config.init_lora_weights, config.eva_config = True, None
    return f"{passes[0]} forward passes over {len(batches)} training batches"


class CheckpointWeights:
    """The 16-bit weight of each adapted layer, read one at a time from the model's safetensors files (names as
    the model names its modules), or from a 16-bit copy of the model where the file names them otherwise."""

    def __init__(self, path: Path, model):
        from safetensors import safe_open

        from workbench.engine.layout import ModelLayout

        self.path = Path(path)
        self.files = [safe_open(str(f), "pt") for f in sorted(self.path.glob("*.safetensors"))]
        self.keys = [set(f.keys()) for f in self.files]
        base = model.get_base_model()
        self.prefix = getattr(base, "base_model_prefix", "") or ""
        self.conv1d = {lin.name for lin in ModelLayout.for_model(str(path)).linears if lin.kind == "conv1d"}
        self.copy = None

    def weight(self, name: str, layer) -> torch.Tensor:
        """Layer `name` (a peft module name)'s 16-bit weight as a float32 (out × in) tensor."""
        plain = name.removeprefix("base_model.model.")
        shape = (layer.out_features, layer.in_features)
        for key in (plain, plain.removeprefix(self.prefix + "."), f"{self.prefix}.{plain}"):
            for f, keys in zip(self.files, self.keys):
                if key + ".weight" in keys:
                    w = f.get_tensor(key + ".weight").float()
                    w = w.T if plain in self.conv1d else w
                    if tuple(w.shape) == shape:
                        return w.contiguous()
        return self._from_copy(plain, shape)

    def _from_copy(self, plain: str, shape) -> torch.Tensor:
        # some families' checkpoints name (or stack) weights otherwise than their modules: transformers' loading knows
        if self.copy is None:
            from workbench.engine.models import load_model

            self.copy, _ = load_model(self.path, bits=16, device="cpu", dtype="float32")
        w = self.copy.get_submodule(plain).weight.detach().float()
        w = w.T if plain in self.conv1d else w
        if tuple(w.shape) != shape:
            raise ValueError(f"init: the 16-bit weight of {plain} has shape {tuple(w.shape)}, not {shape}")
        return w.contiguous()

    def close(self) -> None:
        self.copy = None
        self.files = []
