"""A model's layout, from its config alone: the layers LoRA can adapt, which of them a target setting
selects, how many parameters an adapter adds, how its update is scaled, and which block a module belongs to.

What peft's LoRA adapts, in every causal-LM family transformers ships (docs/families.md has the table):
`nn.Linear` and its subclasses (Falcon's FalconLinear, bitsandbytes' 4- and 8-bit layers), transformers'
`Conv1D` (GPT-2: its weight is stored in x out, and peft sets fan_in_fan_out for it), fused projections
(qkv_proj, query_key_value, gate_up_proj, c_attn: one layer to peft, so one target name here), and the
stacked expert weights of a mixture of experts (experts x out x in parameters that peft adapts through
`target_parameters` with lora.ParamWrapper). A router (the gate that picks the experts) is neither adapted
nor quantized: it is left out of the layers here, of peft's all-linear and of bitsandbytes' conversion.

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


# a router: the layer that scores the experts for each token (Mixtral's and Qwen-MoE's `gate`, PhiMoE's
# router, Qwen2-MoE's one-output `shared_expert_gate`); a wrong router weight sends tokens to the wrong experts
ROUTER_NAMES = ("gate", "router", "shared_expert_gate")
# config fields that hold a mixture of experts' expert count, by family
_EXPERT_COUNTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")

# nn.Linear subclasses, by model_type, whose forward was read and is torch's Linear's (x·Wᵀ + b) and which hold
# nothing besides weight and bias: built as torch's Linear (models.load_model, at 8 and 4 bits) bitsandbytes
# quantizes them. Adding no parameters is not enough: Llama4's and PhiMoE's routers add none and route.
AS_LINEAR = {"falcon": ("transformers.models.falcon.modeling_falcon", "FalconLinear")}

_CACHE_VERSION = 4  # 4: Falcon's FalconLinear counts as quantized (AS_LINEAR)


def _cache_path(config_file: Path) -> Path:
    from workbench.core.paths import workbench_home

    return workbench_home() / "layouts" / (hashlib.sha1(config_file.read_bytes()).hexdigest() + ".json")


class _Named:
    """What a layer's or a stacked weight's dotted name says: its module name and its block."""

    name: str

    @property
    def module(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def block(self) -> int | None:
        return block_index(self.name)


@dataclass(frozen=True)
class Linear(_Named):
    """One linear layer. W is out × in as torch stores it: d = out_features rows, k = in_features columns.
    kind "conv1d": transformers' Conv1D, which stores its weight transposed (in × out) and computes x·W + b;
    the layer's fan-in and fan-out are the same, and so is LoRA's A (r × in) and B (out × r). kind "subclass":
    a family's own Linear subclass that is not in AS_LINEAR, which peft adapts but transformers' bitsandbytes
    integration does not quantize (it converts torch's Linear and Conv1D only); Falcon's FalconLinear is
    "linear", since the workbench builds it as torch's Linear at 8 and 4 bits."""

    name: str
    in_features: int
    out_features: int
    kind: str = "linear"

    @property
    def quantized(self) -> bool:
        """Whether bitsandbytes stores this layer in 8 or 4 bits when the model loads quantized."""
        return self.kind != "subclass"

    @property
    def d(self) -> int:
        return self.out_features

    @property
    def k(self) -> int:
        return self.in_features

    def adapter_params(self, rank: int) -> int:
        return lora_params(self.in_features, self.out_features, rank)


@dataclass(frozen=True)
class ExpertWeights(_Named):
    """One stacked weight of a mixture of experts (a parameter, experts × out × in: Mixtral's
    mlp.experts.gate_up_proj), which peft adapts through LoraConfig.target_parameters with lora.ParamWrapper:
    A is in × (r·experts) and B is (r·experts) × out, one rank-r update per expert."""

    name: str
    experts: int
    in_features: int
    out_features: int

    @property
    def numel(self) -> int:
        return self.experts * self.in_features * self.out_features

    def adapter_params(self, rank: int) -> int:
        return self.experts * lora_params(self.in_features, self.out_features, rank)


def meta_model(model_config):
    """The model a config describes, on the meta device: every shape, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def expert_count(config) -> int:
    """How many routed experts a config's mixture of experts has (0: not a mixture of experts)."""
    for key in _EXPERT_COUNTS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return value
    return 0


def _is_router(name: str, module, n_experts: int) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    if "Router" in type(module).__name__ or leaf == "shared_expert_gate":
        return True
    return leaf in ROUTER_NAMES and n_experts > 0 and getattr(module, "out_features", None) == n_experts


def _clean(name: str) -> str:
    """A module's own name inside a peft-wrapped model (peft inserts base_layer; parametrizations likewise)."""
    return name.replace(".base_layer", "").replace(".parametrizations", "")


def adaptable_layers(model) -> tuple[list[Linear], list[ExpertWeights], list[str]]:
    """(linear layers, stacked expert weights, routers) of a built model, in module order.

    Linear layers are what peft's all-linear takes (torch Linear, bitsandbytes' 4- and 8-bit layers, which
    are Linear subclasses, and transformers' Conv1D), less the output head, the routers and a wrapped
    model's LoRA parts. Expert weights are 3-d parameters (experts × out × in, or × in × out where the
    module says is_transposed, as peft reads it). Routers are named so that they can be kept out of LoRA
    and of quantization."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    n_experts = expert_count(getattr(model, "config", None))
    linears, experts, routers = [], [], []
    for name, module in model.named_modules():
        if "lora_" in name or module is head:
            continue
        clean = _clean(name)
        if _is_router(clean, module, n_experts):
            routers.append(clean)
            continue
        if any(clean.startswith(r + ".") for r in routers):  # inside a router (DBRX's router.layer is a Linear)
            continue
        if isinstance(module, torch.nn.Linear):
            # bitsandbytes' own layers are subclasses too, quantized already
            plain = type(module) is torch.nn.Linear or type(module).__module__.startswith("bitsandbytes")
            plain = plain or (type(module).__module__, type(module).__name__) in AS_LINEAR.values()
            if clean.rsplit(".", 1)[-1] not in OUTPUT_HEADS:
                linears.append(
                    Linear(clean, module.in_features, module.out_features, "linear" if plain else "subclass")
                )
        elif isinstance(module, Conv1D):  # weight nx × nf: in × out
            linears.append(Linear(clean, module.nx, module.nf, "conv1d"))
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim == 3:
                e, a, b = param.shape  # peft: in × out as stored when is_transposed, else out × in
                i, o = (a, b) if getattr(module, "is_transposed", False) else (b, a)
                experts.append(ExpertWeights(f"{clean}.{pname}".replace(".original", ""), e, i, o))
    routers = list(dict.fromkeys(routers))
    return linears, experts, routers


def linear_layers(model) -> list[Linear]:
    """The linear layers of a built model that LoRA can target (see adaptable_layers)."""
    return adaptable_layers(model)[0]


class ModelLayout:
    """What is known of a model before its weights load."""

    def __init__(self, config, model=None):
        """From a transformers config (built on the meta device), or from a model already built."""
        self.config = config
        built = model if model is not None else meta_model(config)
        self.total_params = sum(p.numel() for p in built.parameters())  # parameters() yields tied weights once
        self.linears, self.experts, self.routers = adaptable_layers(built)

    @classmethod
    def for_model(cls, name: str) -> ModelLayout:
        """A model name, folder or shipped short name (see resolve.model_config_for); config only.

        A layout read from a config file on disk is kept in $WORKBENCH_HOME/layouts/, keyed by the file's
        bytes: building it imports transformers' model code and the model on the meta device (~2 s), and
        the app needs it before it can show anything."""
        from workbench.engine.resolve import config_file, model_config_for

        source = config_file(name)
        cached = _cache_path(source) if source is not None else None
        if cached is not None and cached.is_file():
            try:
                return cls._from_record(json.loads(cached.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                pass  # a damaged or older cache entry: build it again
        layout = cls(model_config_for(name))
        if cached is not None:
            from workbench.core.files import write_json

            write_json(cached, layout._record())
        return layout

    def _record(self) -> dict:
        return {
            "version": _CACHE_VERSION,
            "config": self.config.to_dict(),
            "total_params": self.total_params,
            "linears": [[lin.name, lin.in_features, lin.out_features, lin.kind] for lin in self.linears],
            "experts": [[e.name, e.experts, e.in_features, e.out_features] for e in self.experts],
            "routers": list(self.routers),
        }

    @classmethod
    def _from_record(cls, record: dict) -> ModelLayout:
        from transformers import AutoConfig

        if record["version"] != _CACHE_VERSION:
            raise ValueError("an older layout cache")
        layout = cls.__new__(cls)
        # the family's own config class again (configuration code only, no model code): its attribute map
        # turns GPT-2's n_embd into hidden_size, as the fresh layout's config does
        fields = dict(record["config"])
        layout.config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        layout.total_params = int(record["total_params"])
        layout.linears = [Linear(n, int(i), int(o), k) for n, i, o, k in record["linears"]]
        layout.experts = [ExpertWeights(n, int(e), int(i), int(o)) for n, e, i, o in record["experts"]]
        layout.routers = [str(r) for r in record["routers"]]
        return layout

    @property
    def target_names(self) -> list[str]:
        """The module names a target list can use (q_proj, v_proj, ...), sorted."""
        return sorted({lin.module for lin in self.linears})

    @property
    def quantized_linears(self) -> list[Linear]:
        """The layers bitsandbytes quantizes at 8 or 4 bits (not the stacked experts, routers or head)."""
        return [lin for lin in self.linears if lin.quantized]

    def check_bits(self, bits: int) -> None:
        """A ValueError when bitsandbytes would quantize nothing of this model at 8 or 4 bits."""
        if bits < 16 and not self.quantized_linears:
            kinds = sorted({self.config.model_type})
            raise ValueError(
                f"bits: bitsandbytes quantizes none of {', '.join(kinds)}'s layers (transformers converts torch's "
                "Linear and Conv1D, the workbench also the Linear subclasses it knows compute the same, such as "
                "Falcon's; this model's are none of these); train this model at 16 bits"
            )

    @property
    def is_moe(self) -> bool:
        """Whether the model has stacked expert weights (a mixture of experts peft adapts by parameter)."""
        return bool(self.experts)

    def selected(self, targets) -> list[Linear]:
        """The layers a target setting ('all-linear' or a list of names) puts an adapter on."""
        return [lin for lin in self.linears if targets_match(lin.name, targets)]

    def selected_experts(self, adapt_experts: bool = True) -> list[ExpertWeights]:
        """The stacked expert weights an adapter covers: all of them when the experts are adapted."""
        return list(self.experts) if adapt_experts else []

    def expert_targets(self, adapt_experts: bool = True) -> list[str] | None:
        """peft's LoraConfig.target_parameters for these settings (None: no expert weights adapted)."""
        return [e.name for e in self.experts] if (adapt_experts and self.experts) else None

    def expert_dropout_note(self, dropout: float, adapt_experts: bool = True) -> str | None:
        """What adapting the experts does to the dropout setting, in one sentence (None: nothing)."""
        if not (adapt_experts and self.experts and dropout > 0):
            return None
        return (
            f"dropout {dropout:g} becomes 0 for this adapter: peft adapts the stacked expert weights with "
            "lora.ParamWrapper, which cannot apply dropout, and one LoRA adapter has one dropout; "
            "untick 'adapt the experts' to keep it"
        )

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

    def adapter_params(self, rank: int, targets, adapt_experts: bool = True) -> int:
        """Trainable parameters of a LoRA adapter of this rank on these targets (and on the stacked expert
        weights of a mixture of experts, when they are adapted): peft's get_nb_trainable_parameters()."""
        return sum(lin.adapter_params(rank) for lin in self.selected(targets)) + sum(
            e.adapter_params(rank) for e in self.selected_experts(adapt_experts)
        )

    def describe(self) -> str:
        c = self.config
        text = (
            f"{self.total_params / 1e6:,.1f}M parameters, {c.num_hidden_layers} layers, hidden size "
            f"{c.hidden_size}, {len(self.linears)} linear layers LoRA can target"
        )
        if any(lin.kind == "conv1d" for lin in self.linears):
            text += " (transformers' Conv1D, weights stored in × out)"
        if self.experts:
            n = self.experts[0].experts
            text += f"; {len(self.experts)} stacked expert weights ({n} experts each) and {len(self.routers)} routers"
        return text
