"""A saved adapter whose init moved the base (PiSSA, OLoRA, LoftQ past one iteration: engine.inits.moves_base): the
run's model rebuilt as it was (the init run again, seeded), or the adapter turned into a plain LoRA adapter for the
original base. The Compare tab (engine.session) and the export (engine.export) use both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workbench.core.config import LoraSettings, QuantSettings
from workbench.engine.inits import apply_init, moves_base


def changed_base(lora: LoraSettings, adapter_dir: Path) -> bool:
    """Whether a saved adapter was trained on a base its init changed (its starting weights are kept beside it)."""
    from workbench.records.runs import ADAPTER_START

    return moves_base(lora) and (Path(adapter_dir) / ADAPTER_START).is_file()


def reproduce(model, lora: LoraSettings, quant: QuantSettings, seed: int, adapter_dir: Path, bits: int, path: Path):
    """A run's saved adapter on `model` (its base as loaded at `bits`), computing exactly what the run computed:
    the adapter attached, the init run again (seeded as the run seeded it, so the base it changed is the same),
    then the saved weights put in."""
    from peft import load_peft_weights, set_peft_model_state_dict

    from workbench.engine.models import attach_lora
    from workbench.engine.train import seed_everything

    seed_everything(seed)
    peft_model = attach_lora(model, lora, bits)
    seed_everything(seed)
    apply_init(peft_model, lora, quant, bits, path)
    set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter_dir)))
    return peft_model.eval()


def plain_adapter(adapter_dir: Path, out: Path) -> int:
    """Write, into `out`, the saved adapter as a plain LoRA adapter for the ORIGINAL base, whose weights its init
    had moved into the adapter's start: W_res + B·A = W + (B·A - B0·A0) = W + [B | -B0]·[A ; A0], so the new
    adapter has rank 2r and twice the alpha (√2 times with rsLoRA), keeping the scale. This is peft's
    conversion (path_initial_model_for_weight_conversion), done on the saved files: peft's needs the trained
    model loaded with both adapters. Returns the new rank."""
    from safetensors.torch import load_file, save_file

    from workbench.core.files import write_json
    from workbench.records.runs import ADAPTER_START

    adapter_dir, out = Path(adapter_dir), Path(out)
    trained = load_file(str(adapter_dir / "adapter_model.safetensors"))
    start = load_file(str(adapter_dir / ADAPTER_START))
    tensors = {}
    for key, value in trained.items():
        if ".lora_A." in key:
            tensors[key] = torch.cat([value, start[key].to(value.dtype)], dim=0).contiguous()
        elif ".lora_B." in key:
            tensors[key] = torch.cat([value, -start[key].to(value.dtype)], dim=1).contiguous()
        else:
            tensors[key] = value
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    grow = 2**0.5 if config.get("use_rslora") else 2
    config["r"] *= 2
    config["lora_alpha"] *= grow
    config["rank_pattern"] = {k: 2 * v for k, v in (config.get("rank_pattern") or {}).items()}
    config["alpha_pattern"] = {k: grow * v for k, v in (config.get("alpha_pattern") or {}).items()}
    config["init_lora_weights"] = True
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    write_json(out / "adapter_config.json", config)
    return config["r"]
