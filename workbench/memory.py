"""Memory: measured while work runs, and estimated from a model config before any weight loads.

Measured: on CUDA the allocator's own counters (allocated now / peak since reset); on the CPU the
process resident set size (psutil), sampled by a background thread because tensors live outside
Python's allocator and tracemalloc never sees them. CPU figures are reported above the RSS the
process had when measurement started, so the libraries' own footprint is not charged to a variant.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass, field

import psutil
import torch

GiB = 1024**3
MiB = 1024**2


class MemoryMonitor:
    """Tracks memory of one piece of work (a variant) on one device."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self._proc = psutil.Process()
        self._baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "MemoryMonitor":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._baseline = self._proc.memory_info().rss
            self._peak = self._baseline
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="workbench-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self._proc.memory_info().rss
            if rss > self._peak:
                self._peak = rss

    def now(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        rss = self._proc.memory_info().rss
        self._peak = max(self._peak, rss)
        return max(0, rss - self._baseline)

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        self.now()
        return max(0, self._peak - self._baseline)

    def stop(self) -> int:
        peak = self.peak()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        return peak

    def __enter__(self) -> "MemoryMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- the C allocator on the CPU

# glibc's malloc serves a block of at least M_MMAP_THRESHOLD bytes with its own mmap, which free()
# returns to the OS at once. By default that threshold is dynamic: each time such a block is freed
# the threshold rises to its size (up to 32 MiB), so after the first few frees every activation of a
# training step (1-30 MiB each at a few hundred tokens) comes from the heap instead, and a heap hands
# freed memory back only from its top. The backward pass frees activations in the reverse order of
# their allocation, with gradients allocated in between, so the heap fragments and its resident size
# grows step after step. Measured on SmolLM2-135M (fp32, LoRA r=16 on every linear layer, batch 8 x 64,
# one thread; `python -m workbench.bench_memory --glibc-default --phases`, docs/estimator.md): the
# peak RSS above the start was 2549 MiB after the first step and 2874 MiB after twelve, while glibc's
# own count of bytes in use (mallinfo2) peaked at 1491 MiB beside 528 MiB of memory-mapped weights:
# ~800 MiB resident that no tensor used, more with every step, +37% to +56% depending on the variant.
# A fixed threshold (mallopt, which also switches the dynamic rule off) keeps every block of 128 KiB or
# more in its own mapping: the same run peaks at 2091 MiB from the second step on. The price is time:
# each step maps fresh pages for its activations (page faults, zeroing, munmap): a median step of
# 6.7-7.9 s against 4.5-5.5 s with glibc's default on this 2-core VM (16 bits, 8 x 64, one thread).
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def limit_heap_retention() -> bool:
    """Give freed tensor memory back to the OS at once on glibc (Linux), so the process's resident
    memory follows the tensors alive (25-35% lower peaks in training) and the CPU estimate can predict
    it, at the cost of slower steps (see above). Process-wide, idempotent; set WORKBENCH_MALLOC_DEFAULT=1
    before the first model loads to keep glibc's default. Returns whether the setting was applied."""
    if os.environ.get("WORKBENCH_MALLOC_DEFAULT", "0") not in ("", "0"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: macOS, Windows
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


# --------------------------------------------------------------------------- estimate

# Bits per parameter of bitsandbytes storage, from its block layout (QLoRA paper, section 3):
# 4-bit: 4 bits + one fp32 absmax per 64-weight block (0.5 bits); with double quantization the
# absmax is itself stored as 8 bits per block plus one fp32 per 256 blocks (8/64 + 32/(64*256)).
NF4_BLOCK = 64
DQ_BLOCK = 256


def bits_per_param(bits: int, double_quant: bool = True) -> float:
    if bits == 4:
        consts = (8 / NF4_BLOCK + 32 / (NF4_BLOCK * DQ_BLOCK)) if double_quant else 32 / NF4_BLOCK
        return 4 + consts
    if bits == 8:
        return 8.0  # plus one fp32 scale per output row, counted per layer below
    return float(bits)


def quantization_constants_per_layer(bits: int, double_quant: bool = True) -> int:
    """Bytes each quantized layer stores besides its per-block constants: a 4-bit weight's quant_state
    holds its own float32 code table (16 entries for NF4/FP4) and, double-quantized, the nested
    8-bit code (256 float32) and an offset. (An 8-bit layer's float32 scale per row is counted apart.)"""
    if bits != 4:
        return 0
    return (16 + (256 + 1 if double_quant else 0)) * 4


@dataclass
class MemoryEstimate:
    components: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict:
        return {"components": dict(self.components), "total": self.total, "notes": list(self.notes)}

    def table(self) -> str:
        width = max(len(k) for k in self.components) if self.components else 5
        lines = [f"{k:<{width}}  {v / MiB:10.1f} MiB" for k, v in self.components.items()]
        lines.append(f"{'total':<{width}}  {self.total / MiB:10.1f} MiB")
        return "\n".join(lines)


def _meta_model(model_config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def parameter_count(model_config) -> int:
    """Parameters of the model a config describes (tied embeddings once), from a weightless meta-device build."""
    return sum(p.numel() for p in _meta_model(model_config).parameters())


def _linear_layers(model) -> list[tuple[str, int, int]]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in ("lm_head", "score"):
            out.append((name, module.in_features, module.out_features))
    return out


# What a training step holds at its peak, and why (measured on the embedded SmolLM2-135M by
# `python -m workbench.bench_memory`; docs/estimator.md has the table). The peak of a step on the CPU
# is the moment the backward pass starts: every tensor autograd saved during the forward is still
# alive, and the loss's backward has just made two more vocabulary-sized tensors. The adapter's
# gradients do not exist yet at that moment (they appear as the backward frees the activations), so
# counting them, as the sum of the components does, makes the estimate an upper bound by their size.

# Tensors the loss keeps, in bytes per token per vocabulary entry, at the start of the backward:
# the float32 log-softmax that cross_entropy saves, the gradient nll_loss writes into a tensor of
# that size, and the logits' gradient that log_softmax's backward makes from both. The logits
# themselves are not needed for the backward and train() lets them go before it starts.
LOSS_BYTES_PER_TOKEN_AND_VOCAB = 3 * 4

# The CPU process also grows by things that are not tensors of the model: a measured constant.
# Measured as peak RSS minus the tensors modelled here (gradients left out: they do not exist at the
# peak) over the 26 training rows of docs/estimator.md's table (16/8/4 bits, ranks 4-64, all-linear
# and q_proj,v_proj, 256-1024 tokens per step, with and without gradient checkpointing): median
# 96 MiB, range 76-106 MiB; an earlier run of the same rows gave 99-126 MiB. What it is, from the
# same runs (mallinfo2, /proc/self/statm, tracemalloc): peft and the libraries it imports on first use
# (~19 MiB of Python objects), code pages of the torch kernels a training step runs for the first time
# (~15 MiB, file-backed), small heap chunks glibc keeps free (~20-35 MiB), Python's own arenas and the
# autograd graph's nodes.
CPU_RUNTIME_BYTES = 96 * MiB
# The same for evaluate/generate with the adapter attached (run_compare's base variant): 70-75 MiB over
# three sequence lengths (peft's import ~19 MiB, code pages ~13 MiB, free heap chunks and Python objects).
CPU_EVAL_RUNTIME_BYTES = 72 * MiB

# Loading at 4 or 8 bits on the CPU: transformers reads every tensor of the checkpoint (its pages stay
# resident while the file is mapped) and quantizes it; the layers kept in full precision are copied
# out (models.release_checkpoint_pages) before the mapping closes. The peak is the checkpoint, the
# weights and this measured constant: load peak minus (checkpoint + estimated weights) over the 43
# 4- and 8-bit rows of two benchmark runs was 37-69 MiB, median 54 (the loader's own transients).
CPU_LOAD_RUNTIME_BYTES = 54 * MiB


def _dtype_bytes(value, default: int = 4) -> int:
    name = str(value or "").replace("torch.", "")
    return {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}.get(name, default)


_SHARED_INPUT = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in",
                 "up_proj": "mlp_in"}


def _input_key(name: str) -> tuple[str, str] | None:
    """Which tensor a linear layer reads, as (owner, input): in a Llama block q/k/v read the same normed
    hidden states, and so do gate/up. None for o_proj, whose input is (a view of) the attention output
    that scaled_dot_product_attention keeps anyway."""
    owner, leaf = name.rsplit(".", 1) if "." in name else ("", name)
    if leaf == "o_proj":
        return None
    if leaf in _SHARED_INPUT:
        return owner.rsplit(".", 1)[0], _SHARED_INPUT[leaf]
    return owner, leaf


def activation_bytes_per_token(model_config, *, bits: int = 16, rank: int = 8, targets="all-linear",
                               device_type: str = "cpu", dropout: float = 0.05, model=None) -> dict[str, float]:
    """Bytes autograd keeps per token for the backward, summed over the decoder blocks, by cause.

    For a Llama-style block (Llama, Qwen2, Mistral), as the saved tensors of a training step show:
    - norms: each RMSNorm keeps its input, in float32 (on a GPU it upcasts a bf16 input first), and one
      rsqrt per token;
    - attention: scaled_dot_product_attention keeps q, k and v (k and v at the key/value heads: the
      kernel repeats them for grouped-query attention itself), its output and one logsumexp per head;
    - mlp: SwiGLU keeps gate's output, silu of it and up's output (down's input is rebuilt from them);
    - lora: each adapted layer keeps its input after dropout and dropout's mask (a float32 tensor of
      the input's size on the CPU, where torch's dropout multiplies by a noise tensor; one byte per
      element on CUDA's fused kernel), plus the rank-r output of lora_A; the adapter runs in float32.
      With dropout 0 peft's dropout is the identity: lora_A keeps the layer's own input, one tensor
      for the layers that share it (q/k/v, gate/up) and none for o_proj (the attention output);
    - 8-bit base: bitsandbytes' LLM.int8 layers keep their input (ctx.A / ctx.tensors) for the input
      gradient, once per distinct input, as above.
    A frozen 16-bit or 4-bit base layer keeps nothing but its weight. The first block's input (the
    frozen embeddings' output) needs no gradient, so nothing computed from it alone is kept: not its
    input norm, not the dropout masks of its q/k/v, not an 8-bit q/k/v's input; the final norm before
    the output head keeps its input instead. estimate() assumes dropout > 0 (LoraSettings' 0.05).
    """
    model = model if model is not None else _meta_model(model_config)
    cfg = model.config
    cpu = device_type == "cpu"
    act = 4 if cpu else 2  # activations: float32 on the CPU, bf16/fp16 compute on a GPU
    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * h)
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    mask = 4 if cpu else 1
    linears = _linear_layers(model)
    targeted = _targeted(linears, targets) if rank else []
    first = min((int(m.group(1)) for n, _, _ in linears if (m := re.search(r"layers\.(\d+)\.", n))), default=None)

    def reads_first_input(name: str) -> bool:
        return first is not None and f"layers.{first}." in name and name.split(".")[-1] in ("q_proj", "k_proj",
                                                                                           "v_proj")

    out = {
        "norms": n_layers * 2 * (h + 1) * 4,  # less the first block's input norm, plus the final norm
        "attention": n_layers * ((2 * heads + 2 * kv_heads) * head_dim * act + heads * 4),
        "mlp": n_layers * 3 * inter * act,
    }
    kept_inputs: dict[tuple[str, str], int] = {}  # layer inputs kept as they are, each tensor once
    if dropout > 0:
        out["lora"] = sum(i * (4 + (0 if reads_first_input(n) else mask)) + rank * 4 for n, i, _ in targeted)
    else:
        for n, i, _ in targeted:
            if (key := _input_key(n)) is not None:
                kept_inputs[key] = i * 4  # float32 on the CPU; cast to the adapter's float32 on a GPU
        out["lora"] = sum(kept_inputs.values()) + sum(rank * 4 for _ in targeted)
    if bits == 8:
        # q/k/v and gate/up read a norm's output: float32 on the CPU, and on a GPU too once peft's
        # k-bit preparation has cast the norms to float32; o/down read bf16 compute on a GPU
        int8: dict[tuple[str, str], int] = {}
        for n, i, _ in linears:
            key = _input_key(n)
            if key is not None and key not in kept_inputs and not reads_first_input(n):
                int8[key] = i * (4 if (cpu or i == h) else act)
        out["8-bit base inputs"] = sum(int8.values())
    return out


def _targeted(linears, targets):
    if targets == "all-linear":
        return linears
    wanted = set(targets)
    return [t for t in linears if t[0].split(".")[-1] in wanted]


def estimate(model_config, *, bits: int = 16, rank: int | None = 8, targets="all-linear", batch_size: int = 8,
             seq_len: int = 128, gradient_checkpointing: bool = False, device_type: str = "cpu",
             double_quant: bool = True, train: bool = True) -> MemoryEstimate:
    """Analytic breakdown of the peak memory of fine-tuning (or, with train=False, evaluating) one variant.

    The training estimate predicts the peak of a training step (from before the model loads to the
    last optimizer step), which is what a machine must hold to fine-tune. Components:
    - weights: every parameter at its stored size (bitsandbytes quantizes the linear layers inside the
      blocks; embeddings, norms and the output head stay in the base dtype, and peft's k-bit
      preparation upcasts those to float32);
    - adapter, gradients, optimizer state: float32 LoRA weights, their gradients and AdamW's two moments
      (the gradients do not exist yet at the CPU peak, so the sum is an upper bound by their size);
    - activations: what autograd keeps for the backward (see activation_bytes_per_token); with
      gradient checkpointing, each block's input plus one block recomputed;
    - logits and loss: the float32 log-softmax over the vocabulary, its gradient and the logits'
      gradient, alive together when the backward starts;
    - runtime (CPU only): what the process grows by besides tensors, a measured constant.
    On the CPU a 4- or 8-bit load reads the whole checkpoint while quantizing; when that is more than
    the training step, the difference is added as "loading" so the total is still the peak.
    """
    model = _meta_model(model_config)
    cfg = model.config
    cpu = device_type == "cpu"
    dtype_bytes = 4 if cpu else 2
    linears = _linear_layers(model)
    linear_names = {n for n, _, _ in linears}
    targeted = _targeted(linears, targets)

    seen: set[int] = set()
    quantized_params = rows = n_quantized = 0
    other_params = 0
    for name, p in model.named_parameters():
        if id(p) in seen:  # tied embeddings count once
            continue
        seen.add(id(p))
        owner = name.rsplit(".", 1)[0]
        if bits < 16 and owner in linear_names and name.endswith("weight"):
            quantized_params += p.numel()
            rows += p.shape[0]
            n_quantized += 1
        else:
            other_params += p.numel()
    est = MemoryEstimate()
    other_bytes = 4 if (bits < 16 and train) else dtype_bytes
    if bits == 16:
        est.components["weights"] = other_params * dtype_bytes
    else:
        est.components["weights (quantized layers)"] = int(quantized_params * bits_per_param(bits, double_quant) / 8
                                                          + (rows * 4 if bits == 8 else 0)
                                                          + n_quantized * quantization_constants_per_layer(
                                                              bits, double_quant))
        est.components["weights (kept in full precision)"] = other_params * other_bytes
    weights = est.total
    tokens = batch_size * seq_len
    vocab = cfg.vocab_size
    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * h)

    if not (train and rank):
        # evaluate(): a no-grad forward keeps nothing for a backward, and a block's temporaries (SwiGLU's
        # three intermediates and the hidden states) are freed as it ends. The peak is at the loss, after
        # the forward returned: the logits (float32 on the CPU, bf16 on a GPU), the float32 copy of all
        # but the last position that evaluate() scores, and cross_entropy's log-softmax of that copy.
        # Measured on the embedded model (bench_memory, base rows): the heap's peak is these three alone.
        scored = batch_size * max(seq_len - 1, 1)
        logits = tokens * vocab * dtype_bytes + scored * vocab * 8
        block = tokens * (3 * inter + 2 * h) * dtype_bytes
        # activations: nothing at that moment; only a block bigger than the loss's tensors (a vocabulary
        # under ~3 x intermediate_size) would set the peak, and then by this much more
        est.components["activations"] = max(0, block - logits)
        est.components["logits and loss"] = logits
        est.notes.append("inference: one forward pass, no adapter gradients or optimizer")
    else:
        adapter = sum(rank * (i + o) for _, i, o in targeted)
        est.components["adapter"] = adapter * 4
        est.components["gradients"] = adapter * 4
        est.components["optimizer state"] = adapter * 8
        # LoRA dropout > 0 assumed (LoraSettings' default); with 0 fewer tensors are kept, see
        # activation_bytes_per_token(dropout=0.0) and docs/estimator.md
        per_token = activation_bytes_per_token(cfg, bits=bits, rank=rank, targets=targets,
                                               device_type=device_type, model=model)
        layers = sum(per_token.values())
        if gradient_checkpointing:
            # each block keeps only its input (float32 residual stream on the CPU and after k-bit
            # preparation; bf16 on a GPU otherwise), and one block at a time is recomputed
            resid = 4 if (cpu or bits < 16) else 2
            layers = cfg.num_hidden_layers * h * resid + layers / cfg.num_hidden_layers
        est.components["activations"] = int(tokens * layers)
        est.components["logits and loss"] = tokens * vocab * LOSS_BYTES_PER_TOKEN_AND_VOCAB
    if cpu:
        est.components["runtime (CPU)"] = CPU_RUNTIME_BYTES if (train and rank) else CPU_EVAL_RUNTIME_BYTES
        if bits < 16:
            # the float32 (or bf16) checkpoint's pages, all read while quantizing, stay mapped until the
            # load ends, next to the quantized weights (models.release_checkpoint_pages)
            # (a config without a dtype: float32, transformers' default)
            checkpoint = (quantized_params + other_params) * _dtype_bytes(getattr(cfg, "dtype", None))
            loading = checkpoint + weights + CPU_LOAD_RUNTIME_BYTES
            if loading > est.total:
                est.components["loading (checkpoint read while quantizing)"] = loading - est.total
                est.notes.append("the peak is the load: the checkpoint is read whole while quantizing")
    return est


# Short names for the configs shipped in data/model_configs/ (see its README.md), matched case-insensitively.
MODEL_ALIASES = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "smollm2-1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-65b": "huggyllama/llama-65b",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
}


def model_config_for(name: str):
    """A model's config without its weights: a local folder, a config shipped in data/model_configs/ (by its
    Hugging Face name or a short alias from MODEL_ALIASES), the converted embedded model, or the Hugging Face
    cache/hub (config.json only)."""
    from pathlib import Path

    from transformers import AutoConfig

    from .data import data_dir
    from .models import hub_reachable, resolve_model

    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(str(path))
    name = MODEL_ALIASES.get(name.strip().lower(), name)
    shipped = data_dir() / "model_configs" / (name.replace("/", "__") + ".json")
    if shipped.is_file():
        return AutoConfig.from_pretrained(str(shipped))
    try:
        return AutoConfig.from_pretrained(str(resolve_model(name, convert=False)))
    except ValueError:
        pass
    try:
        return AutoConfig.from_pretrained(name, local_files_only=not hub_reachable())
    except Exception as exc:  # noqa: BLE001 - turn any lookup failure into one actionable line
        raise ValueError(f"model: no config found for {name!r} (not a folder, not shipped in data/model_configs, "
                         f"not in the Hugging Face cache: {type(exc).__name__}); give a local model folder or a "
                         f"shipped name: {', '.join(MODEL_ALIASES)}") from None
