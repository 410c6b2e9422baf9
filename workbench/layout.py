"""A model's layout, from its config alone: the linear layers LoRA can adapt, which of them a target
setting selects, how many parameters an adapter adds, how its update is scaled, and which block a
module belongs to.

The model is built on the meta device (shapes, no weights: ~25 ms for a 135M model, ~55 ms for 70B),
so the estimator, the explainers and the panels know a model before anything loads. Every other
module asks this one; none walks a model's modules for these facts itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

# the output head is never adapted (peft's all-linear leaves it out; bitsandbytes leaves it unquantized)
OUTPUT_HEADS = ("lm_head", "score")
# the first number between dots is the block: model.layers.3.mlp.experts.0.up_proj -> 3
_BLOCK = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def block_index(name: str) -> int | None:
    """The block a module belongs to: 3 for model.layers.3.self_attn.q_proj (None outside the blocks)."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def lora_params(in_features: int, out_features: int, rank: int) -> int:
    """Parameters LoRA adds to one layer: A is rank × in, B is out × rank."""
    return rank * (in_features + out_features)


def lora_scaling(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """peft's scale of B·A: alpha/r, or alpha/√r with rank-stabilised LoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def targets_match(name: str, targets) -> bool:
    """Whether a target setting selects the module `name`, by peft's rule for a list of names
    (tuners_utils.check_target_module_exists): the full name, or its end after a dot.
    Written out rather than called: importing peft pulls in bitsandbytes, seconds at start-up."""
    if targets == "all-linear":
        return True
    return any(name == t or name.endswith("." + t) for t in targets)


_CACHE_VERSION = 1


def _cache_path(config_file: Path) -> Path:
    from .paths import workbench_home

    return workbench_home() / "layouts" / (hashlib.sha1(config_file.read_bytes()).hexdigest() + ".json")


@dataclass(frozen=True)
class Linear:
    """One linear layer. W is out × in as torch stores it: d = out_features rows, k = in_features columns."""

    name: str
    in_features: int
    out_features: int

    @property
    def module(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def block(self) -> int | None:
        return block_index(self.name)

    @property
    def d(self) -> int:
        return self.out_features

    @property
    def k(self) -> int:
        return self.in_features

    def adapter_params(self, rank: int) -> int:
        return lora_params(self.in_features, self.out_features, rank)


def meta_model(model_config):
    """The model a config describes, on the meta device: every shape, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def linear_layers(model) -> list[Linear]:
    """The linear layers of a built model that LoRA can target (bitsandbytes' 4- and 8-bit layers are
    torch Linear subclasses), in module order; the output head and a wrapped model's LoRA parts are left out."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head or "lora_" in name:
            continue
        name = name.removesuffix(".base_layer")  # a peft-wrapped layer keeps its own name
        if name.rsplit(".", 1)[-1] not in OUTPUT_HEADS:
            out.append(Linear(name, module.in_features, module.out_features))
    return out


class ModelLayout:
    """What is known of a model before its weights load."""

    def __init__(self, config, model=None):
        """From a transformers config (built on the meta device), or from a model already built."""
        self.config = config
        built = model if model is not None else meta_model(config)
        self.total_params = sum(p.numel() for p in built.parameters())  # parameters() yields tied weights once
        self.linears = linear_layers(built)

    @classmethod
    def for_model(cls, name: str) -> ModelLayout:
        """A model name, folder or shipped short name (see resolve.model_config_for); config only.

        A layout read from a config file on disk is kept in $WORKBENCH_HOME/layouts/, keyed by the file's
        bytes: building it imports transformers' model code and the model on the meta device (~2 s), and
        the app needs it before it can show anything."""
        from .resolve import config_file, model_config_for

        source = config_file(name)
        cached = _cache_path(source) if source is not None else None
        if cached is not None and cached.is_file():
            try:
                return cls._from_record(json.loads(cached.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                pass  # a damaged or older cache entry: build it again
        layout = cls(model_config_for(name))
        if cached is not None:
            from .files import write_json

            write_json(cached, layout._record())
        return layout

    def _record(self) -> dict:
        return {
            "version": _CACHE_VERSION,
            "config": self.config.to_dict(),
            "total_params": self.total_params,
            "linears": [[lin.name, lin.in_features, lin.out_features] for lin in self.linears],
        }

    @classmethod
    def _from_record(cls, record: dict) -> ModelLayout:
        if record["version"] != _CACHE_VERSION:
            raise ValueError("an older layout cache")
        layout = cls.__new__(cls)
        layout.config = SimpleNamespace(**record["config"])  # every field the transformers config had
        layout.total_params = int(record["total_params"])
        layout.linears = [Linear(n, int(i), int(o)) for n, i, o in record["linears"]]
        return layout

    @property
    def target_names(self) -> list[str]:
        """The module names a target list can use (q_proj, v_proj, ...), sorted."""
        return sorted({lin.module for lin in self.linears})

    def selected(self, targets) -> list[Linear]:
        """The layers a target setting ('all-linear' or a list of names) puts an adapter on."""
        return [lin for lin in self.linears if targets_match(lin.name, targets)]

    def unknown_targets(self, targets) -> list[str]:
        """The names in a target list that select no layer of this model."""
        if targets == "all-linear":
            return []
        return [t for t in targets if not any(targets_match(lin.name, [t]) for lin in self.linears)]

    def check_targets(self, targets) -> None:
        """A ValueError naming the valid targets when a target list names a layer this model does not have."""
        unknown = self.unknown_targets(targets)
        if unknown:
            raise ValueError(
                f"targets: {', '.join(unknown)} not found in this model; valid names are "
                f"{', '.join(self.target_names)} or all-linear"
            )

    def check_rank(self, rank: int) -> None:
        hidden = getattr(self.config, "hidden_size", None)
        if hidden and rank > hidden:
            raise ValueError(f"rank must be between 1 and {hidden} (the model's hidden size); got {rank}")

    def adapter_params(self, rank: int, targets) -> int:
        """Trainable parameters of a LoRA adapter of this rank on these targets."""
        return sum(lin.adapter_params(rank) for lin in self.selected(targets))

    def describe(self) -> str:
        c = self.config
        return (
            f"{self.total_params / 1e6:,.1f}M parameters, {c.num_hidden_layers} layers, hidden size "
            f"{c.hidden_size}, {len(self.linears)} linear layers LoRA can target"
        )
