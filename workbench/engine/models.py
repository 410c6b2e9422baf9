"""Load a model folder at 16, 8 or 4 bits on a device, attach LoRA adapters, and count what it holds.

Device choice lives in :func:`pick_device` and nowhere else. Finding the folder is resolve.py's job.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.core.config import LoraSettings, QuantSettings
from workbench.engine.layout import AS_LINEAR, OUTPUT_HEADS, ModelLayout, expert_count
from workbench.machine.allocator import configure as configure_allocator

# --------------------------------------------------------------------------- device


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype  # dtype of the unquantized base and of 4-bit compute

    @property
    def type(self) -> str:
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def describe(self) -> str:
        if self.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)}, {self.dtype_name})"
        return f"{self.type} ({self.dtype_name})"


# "1" or "0" says whether this CPU multiplies bfloat16 natively instead of asking it: the tests pin it, so that
# one suite gives one result on every CPU, and a user can see what the other kind of machine would get
NATIVE_BF16_ENV = "WORKBENCH_NATIVE_BF16"


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (avx512_bf16 or AMX): there a bf16 matmul runs 4-5x
    faster than a float32 one (docs/benchmarks.md); elsewhere (AVX2 laptops) bf16 is emulated, ~100x slower."""
    pinned = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if pinned in ("0", "1"):
        return pinned == "1"
    cpu = getattr(torch, "cpu", None)
    return any(
        getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def cpu_dtype(bits: int = 16) -> torch.dtype:
    """What dtype auto means on this CPU: bfloat16 for an unquantized (16-bit) base where the CPU multiplies it
    natively (1.19x faster training and no accuracy, eval-loss or forgetting cost 5 seeds could see), float32
    everywhere else. 4- and 8-bit bases stay float32: bitsandbytes' bfloat16 4-bit compute ran 7x slower here."""
    return torch.bfloat16 if bits == 16 and native_bf16_cpu() else torch.float32


def pick_device(requested: str = "auto", dtype: str = "auto", bits: int = 16) -> DeviceChoice:
    """The one place that branches on hardware: which device, and which dtype a base loaded at `bits` gets
    there (its unquantized weights and, at 4 bits, the compute). `dtype` auto: bfloat16 on a GPU that supports
    it (else float16), float16 on Apple MPS, on a CPU cpu_dtype(bits). Any other value is taken as asked.
    """
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        requested = "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda":
        if not cuda:
            raise ValueError("device: cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        device, auto = (
            torch.device("cuda", torch.cuda.current_device()),
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16),
        )
    elif requested == "mps":
        if not mps:
            raise ValueError("device: mps was asked for but Apple MPS is not available; use --device cpu or auto")
        device, auto = torch.device("mps"), torch.float16
    elif requested == "cpu":
        device, auto = torch.device("cpu"), cpu_dtype(bits)
    else:
        raise ValueError(f"device must be auto, cpu, cuda or mps; got {requested!r}")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}")
    return DeviceChoice(device, auto if dtype == "auto" else getattr(torch, dtype))


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - transformers' message names neither the folder nor the files
        raise ValueError(
            f"model: {path} has no usable tokenizer ({type(exc).__name__}); copy the model's tokenizer files "
            "(tokenizer.json or tokenizer.model, and tokenizer_config.json) into it"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: Path, bits: int = 16, quant: QuantSettings | None = None, device: str = "auto", dtype: str = "auto"
):
    """Load a causal LM at 16, 8 or 4 bits on the chosen device and dtype. Returns (model, DeviceChoice)."""
    from transformers import AutoModelForCausalLM

    choice = pick_device(device, dtype, bits)
    if choice.type == "cpu":
        configure_allocator()  # WORKBENCH_ALLOCATOR=limit: freed activations go straight back to the OS
    quant = quant or QuantSettings(bits=bits)
    if quant.bits != bits:
        quant = QuantSettings(**{**quant.__dict__, "bits": bits})
    if bits < 16 and choice.type == "mps":
        raise ValueError(f"bits: {bits}-bit bitsandbytes layers do not run on Apple MPS; use 16 bits or --device cpu")
    kwargs: dict = {"dtype": choice.dtype}
    model_type = None
    if bits < 16:
        layout = ModelLayout.for_model(str(path))
        kwargs["quantization_config"] = quant.to_bnb_config(
            default_dtype=choice.dtype, skip_modules=_kept(layout, bits)
        )
        kwargs["device_map"] = {"": choice.device}
        model_type = layout.config.model_type
    # transformers quantizes only modules whose type is exactly nn.Linear: build Falcon's FalconLinear as one
    with built_as_linear(model_type):
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if bits == 16:
        model.to(choice.device)
    if bits == 4:
        disable_cpu_repack(model)
    # A mixture of experts' checkpoint holds each expert apart; transformers stacks them into new tensors at
    # load, and the pages read to do it stay mapped beside the stacks (the expert weights twice: 216 MiB of a
    # 146M-parameter Qwen3-MoE, docs/estimator.md) while any other weight is a view of the file.
    if choice.type == "cpu" and (bits < 16 or expert_count(model.config)):
        release_checkpoint_pages(model)
    contiguous_head_input(model)
    model.config.use_cache = False
    return model, choice


def _kept(layout: ModelLayout, bits: int) -> list[str] | None:
    """Layers bitsandbytes must leave unquantized besides its default (the output head): a mixture of
    experts' routers, whose every weight decides where a token goes. None where there are none. A ValueError
    for a model bitsandbytes would quantize nothing of (transformers' own error there is a traceback)."""
    layout.check_bits(bits)
    if not layout.routers:
        return None
    return sorted(set(layout.routers) | set(OUTPUT_HEADS))


# apply_patches swaps a class in transformers' modules and puts it back after: one swap at a time, or a second
# load would keep the first one's stand-in as the "original"
_SWAPPING = threading.Lock()


@contextmanager
def built_as_linear(model_type: str | None):
    """While the block runs, a model of `model_type` is built with torch's nn.Linear where its family uses a
    Linear subclass that computes the same (layout.AS_LINEAR: Falcon's FalconLinear, x @ W.T + b).

    transformers' bitsandbytes integration replaces modules whose type is exactly nn.Linear (or Conv1D), so a
    subclass would stay unquantized (Falcon at 4 bits) or fail to load (at 8 bits). The swap goes through
    transformers' own patch mechanism (transformers.monkey_patching.apply_patches) and touches nothing but the
    class the model's modules are built from: same weights, same names, same checkpoint keys. Without bias the
    two layers are one op (matmul with W.T); with a bias, nn.Linear adds it inside the matmul, which in bfloat16
    rounds once where FalconLinear rounds twice. None, or a family with no such subclass: nothing changes."""
    entry = AS_LINEAR.get(model_type) if model_type else None
    if entry is None:
        yield
        return
    import importlib

    from transformers.monkey_patching import apply_patches

    module, name = entry
    importlib.import_module(module)  # apply_patches swaps names only in modules already imported
    with _SWAPPING, apply_patches({f"^{name}$": torch.nn.Linear}):
        yield


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input.

    Generating, transformers gives the head only the last position, hidden[:, -1:, :], a view that is not
    contiguous; torch then multiplies it by a frozen weight (every LoRA base) as a batched matmul against 16
    expanded copies of that weight: measured on the embedded model in bfloat16, 0.74 s and 900 MiB per
    generated token for a batch of 16, against 0.004 s for the same product from a contiguous copy."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_workbench_contiguous", False):
        head.register_forward_pre_hook(
            lambda module, args: tuple(a.contiguous() if torch.is_tensor(a) else a for a in args)
        )
        head._workbench_contiguous = True


@torch.no_grad()
def release_checkpoint_pages(model) -> None:
    """Copy the unquantized layers (embeddings and norms at 4 and 8 bits) out of the memory-mapped checkpoint.

    On the CPU they are loaded as views of the safetensors file; each view keeps the whole file
    mapped, and the pages read while quantizing the other layers (or stacking a mixture of experts'
    weights) stay resident: about the size of the float32 checkpoint charged to a 4-bit model.
    Owning copies let the mapping close.
    """
    for module in model.modules():
        for _, param in module.named_parameters(recurse=False):
            if type(param).__name__ not in ("Params4bit", "Int8Params"):
                param.data = param.data.clone()
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None:
                module._buffers[name] = buf.clone()
    model.tie_weights()


# what answering at 4 bits on a CPU costs, and why the workbench accepts it (shown beside QLoRA's answers)
CPU_4BIT_SPEED_NOTE = (
    "4 bits on a CPU: every token dequantizes the weights in float32 (bitsandbytes' faster repacked bfloat16 "
    "path is off, because it silently breaks LoRA's gradients), so QLoRA answers about half as fast as the "
    "16-bit base here; on a GPU the 4-bit kernels are fused"
)


def disable_cpu_repack(model) -> int:
    """Stop bitsandbytes repacking 4-bit weights on CPUs with avx512_bf16.

    A no-grad forward (generate, eval) there converts the weights to a packed layout that the
    training path does not undo, and LoRA then silently gets wrong gradients (zero on some
    CPUs, 30-50% off on the one this was tested on). Returns how many layers were changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def attach_lora(model, lora: LoraSettings, bits: int, gradient_checkpointing: bool = False):
    """Wrap a loaded model with trainable LoRA adapters (peft)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    layout = ModelLayout(model.config, model)
    layout.check_targets(lora.target_modules)
    layout.check_rank(lora.rank)
    if (layout.experts or layout.routers) and lora.target_modules == "all-linear":
        # peft's all-linear on a transformers-5 mixture of experts takes transformers-4's names, the router's
        # among them (peft.utils.transformers_weight_conversion): name the layers instead, routers left out
        lora = dataclasses.replace(lora, target_modules=layout.target_names)
    config = lora.to_lora_config(layout.expert_targets(lora.adapt_experts))
    selected = layout.selected(lora.target_modules)
    # GPT-2's Conv1D computes x·W: peft needs fan_in_fan_out there, and warns on every layer when it sets it itself
    config.fan_in_fan_out = bool(selected) and all(lin.kind == "conv1d" for lin in selected)
    if bits < 16:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, config)
    return peft_model


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit weights as their real element count."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(_numel(p) for p in model.parameters())


def _numel(param) -> int:
    # bitsandbytes packs two 4-bit weights into each byte of a Params4bit's storage (as peft counts them)
    if type(param).__name__ == "Params4bit":
        return param.numel() * 2 * param.element_size()
    return param.numel()


def weight_bytes(model) -> int:
    """Bytes held by the model's parameters and buffers, quantization constants included.

    transformers' get_memory_footprint sums parameters() and buffers() only, but bitsandbytes keeps a
    4-bit weight's block scales (absmax; double-quantized: 8-bit absmax plus their own fp32 absmax,
    code table and offset) in the weight's quant_state, and an 8-bit weight's fp32 row scales in
    .SCB (or its layer's MatmulLtState): neither is a parameter nor a buffer. Each tensor counts once.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen: set[tuple[int, int]] = set()

    def size(t) -> int:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return 0
        key = (t.data_ptr(), t.nbytes)
        if key in seen or t.nbytes == 0:
            return 0
        seen.add(key)
        return int(t.nbytes)

    total = sum(size(p) for p in base.parameters()) + sum(size(b) for b in base.buffers())
    for p in base.parameters():
        qs = getattr(p, "quant_state", None)  # Params4bit
        while qs is not None:
            total += sum(size(getattr(qs, k, None)) for k in ("absmax", "code", "offset"))
            qs = getattr(qs, "state2", None)
        total += size(getattr(p, "SCB", None))  # Int8Params
    for module in base.modules():
        state = getattr(module, "state", None)  # Linear8bitLt moves CB/SCB here after its first forward
        if state is not None and hasattr(state, "SCB"):
            total += size(state.SCB) + size(getattr(state, "CB", None))
    return total


# --------------------------------------------------------------------------- the loss


def split_head(model):
    """(decoder, output head) of a causal LM (peft-wrapped or not), or None where the head does more than a
    matmul (logit soft-capping) or the model is not laid out as a decoder under base_model_prefix."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if body is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        return None
    return body, head


def scored_loss(model, input_ids, attention_mask, labels, reduction: str = "mean"):
    """The causal LM loss over the labelled tokens, with the output head applied to those positions only.

    On instruction data the loss is on the answer, a few tokens of each example: the head's vocabulary-wide
    matmul over every position (a fifth of a SmolLM2 step's FLOPs) and its float32 logits (three
    vocabulary-sized tensors per token at the backward) are spent on positions no loss reads. The result is
    the loss transformers computes (mean over the labelled next tokens), from the same logits.
    reduction "row": each row's summed loss (a tensor of batch size), for per-example scores."""
    parts = split_head(model)
    targets = labels[:, 1:]
    keep = targets != -100
    if parts is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        if reduction != "row":
            return out.loss if reduction == "mean" else out.loss * keep.sum()
        logits = out.logits[:, :-1][keep].float()
    else:
        body, head = parts
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = head(hidden[:, :-1][keep]).float()
    if reduction != "row":
        return torch.nn.functional.cross_entropy(logits, targets[keep], reduction=reduction)
    return row_sums(torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none"), keep)


def row_sums(token_losses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-token losses of the kept positions (row-major, as `x[keep]` orders them) summed per row."""
    rows = keep.nonzero()[:, 0]
    return torch.zeros(keep.shape[0], dtype=token_losses.dtype, device=token_losses.device).index_add_(
        0, rows, token_losses
    )
