"""Memory: measured while work runs, and estimated from a model config before any weight loads.

Measured: on CUDA the allocator's own counters (allocated now / peak since reset); on the CPU the
process resident set size (psutil), sampled by a background thread because tensors live outside
Python's allocator and tracemalloc never sees them. CPU figures are reported above the RSS the
process had when measurement started, so the libraries' own footprint is not charged to a variant.
"""

from __future__ import annotations

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


def estimate(model_config, *, bits: int = 16, rank: int | None = 8, targets="all-linear", batch_size: int = 8,
             seq_len: int = 128, gradient_checkpointing: bool = False, device_type: str = "cpu",
             double_quant: bool = True, train: bool = True) -> MemoryEstimate:
    """Analytic memory breakdown for fine-tuning (or, with train=False, running) one variant.

    Weights count every parameter at its stored size (bitsandbytes quantizes the linear layers
    inside the blocks; embeddings, norms and the output head stay in the base dtype, and
    peft's k-bit preparation upcasts those to float32 for training). The adapter, its gradients
    and AdamW's two moments are float32. Activations are what autograd keeps per token and layer
    for a Llama-style block (projections, attention, SwiGLU, the LoRA inputs), plus the float32
    logits and their log-softmax at the output.
    """
    model = _meta_model(model_config)
    cfg = model.config
    dtype_bytes = 4 if device_type == "cpu" else 2
    linears = _linear_layers(model)
    linear_names = {n for n, _, _ in linears}
    if targets == "all-linear":
        targeted = linears
    else:
        wanted = set(targets)
        targeted = [t for t in linears if t[0].split(".")[-1] in wanted]

    seen: set[int] = set()
    quantized_params = rows = 0
    other_params = 0
    for name, p in model.named_parameters():
        if id(p) in seen:  # tied embeddings count once
            continue
        seen.add(id(p))
        owner = name.rsplit(".", 1)[0]
        if bits < 16 and owner in linear_names and name.endswith("weight"):
            quantized_params += p.numel()
            rows += p.shape[0]
        else:
            other_params += p.numel()
    est = MemoryEstimate()
    other_bytes = 4 if (bits < 16 and train) else dtype_bytes
    if bits == 16:
        est.components["weights"] = other_params * dtype_bytes
    else:
        est.components["weights (quantized layers)"] = int(quantized_params * bits_per_param(bits, double_quant) / 8
                                                          + (rows * 4 if bits == 8 else 0))
        est.components["weights (kept in full precision)"] = other_params * other_bytes

    if not (train and rank):
        tokens = batch_size * seq_len
        est.components["activations"] = int(tokens * cfg.vocab_size * 4 + tokens * cfg.hidden_size * dtype_bytes * 4)
        est.notes.append("inference: one forward pass, no adapter gradients or optimizer")
        return est

    adapter = sum(rank * (i + o) for _, i, o in targeted)
    est.components["adapter"] = adapter * 4
    est.components["gradients"] = adapter * 4
    est.components["optimizer state"] = adapter * 8

    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * h)
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    kv = kv_heads * head_dim
    tokens = batch_size * seq_len
    # elements autograd keeps per token in one block: two norms (in and out), q/k/v (before and
    # after RoPE, k/v also repeated to all heads for attention), attention output, SwiGLU's four
    # intermediates, residual adds
    per_layer = 8 * h + 4 * kv + 2 * heads * head_dim + 4 * inter
    # LoRA keeps each targeted layer's (dropped-out) input and its rank-r projection
    per_layer += sum(i + rank for _, i, _ in targeted) / max(n_layers, 1)
    act_bytes = dtype_bytes if bits == 16 else (4 if device_type == "cpu" else 2)
    if gradient_checkpointing:
        layers_bytes = tokens * (n_layers * h + per_layer) * act_bytes
    else:
        layers_bytes = tokens * n_layers * per_layer * act_bytes
    logits_bytes = tokens * cfg.vocab_size * 4 * 3  # logits, float32 log-softmax, its gradient
    est.components["activations"] = int(layers_bytes + logits_bytes)
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
