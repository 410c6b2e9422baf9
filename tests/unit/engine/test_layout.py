"""A model's layout from its config alone: the linear layers, the targets peft would adapt, adapter sizes,
scaling and block indices, checked against a loaded model and against peft itself."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FAMILIES, FAMILY_LINEAR, MOE, NOT_QUANTIZED, family_folder
from transformers import AutoModelForCausalLM

from workbench.core.config import LoraSettings
from workbench.engine.estimator import estimate
from workbench.engine.layout import ModelLayout, block_index, lora_scaling, targets_match
from workbench.engine.models import attach_lora

ALL_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_linear_layers_from_the_config_match_the_loaded_model(tiny_model_dir, load_tiny):
    layout = ModelLayout.for_model(str(tiny_model_dir))  # meta device: no weights
    for bits in (16, 4):  # bitsandbytes' layers are torch Linear subclasses, with their logical shapes
        model = load_tiny(bits)
        real = [
            (n, m.out_features, m.in_features)
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
        ]
        assert [(lin.name, lin.d, lin.k) for lin in layout.linears] == real
        assert ModelLayout(model.config, model).linears == layout.linears
    assert layout.target_names == ALL_LINEAR
    assert "lm_head" not in {lin.module for lin in layout.linears}
    assert layout.total_params == sum(p.numel() for p in load_tiny(16).parameters())


@pytest.mark.parametrize(
    "targets",
    [
        "all-linear",
        ["q_proj", "v_proj"],
        ["self_attn.o_proj"],
        ["mlp.up_proj"],
        ["layers.1.self_attn.k_proj"],
        ["down_proj", "gate_proj"],
    ],
)
def test_targets_select_what_peft_adapts(tiny_model_dir, load_tiny, targets):
    """The layout's rule is peft's: the layers it selects are the ones get_peft_model wraps, and the adapter
    size is peft's trainable count."""
    from peft.tuners.lora import LoraLayer

    layout = ModelLayout.for_model(str(tiny_model_dir))
    model = attach_lora(load_tiny(16), LoraSettings(rank=4, target_modules=targets), bits=16)
    wrapped = sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert sorted(lin.name for lin in layout.selected(targets)) == wrapped
    assert layout.adapter_params(4, targets) == model.get_nb_trainable_parameters()[0]


def test_targets_match_is_peft_rule_for_lists():
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    names = ["model.layers.0.self_attn.q_proj", "model.layers.10.mlp.up_proj", "q_proj", "model.xq_proj"]
    for targets in (["q_proj"], ["self_attn.q_proj"], ["up_proj", "q_proj"], ["layers.10.mlp.up_proj"], ["proj"]):
        cfg = LoraConfig(target_modules=targets)
        for name in names:
            assert targets_match(name, targets) == bool(check_target_module_exists(cfg, name)), (targets, name)


def test_unknown_targets_are_named_with_the_valid_ones(tiny_model_dir):
    layout = ModelLayout.for_model(str(tiny_model_dir))
    assert layout.unknown_targets(["q_proj", "c_attn"]) == ["c_attn"]
    assert layout.unknown_targets("all-linear") == []
    with pytest.raises(ValueError, match=r"targets: c_attn not found in this model; valid names are down_proj"):
        layout.check_targets(["c_attn"])
    with pytest.raises(ValueError, match="rank must be between 1 and 64"):
        layout.check_rank(65)


def test_block_index_and_scaling():
    assert block_index("model.layers.3.self_attn.q_proj") == 3
    assert block_index("transformer.h.11.attn.c_attn") == 11
    assert block_index("model.layers.2.mlp.experts.7.up_proj") == 2  # the block, not the expert
    assert block_index("lm_head") is None and block_index("model.norm") is None
    assert lora_scaling(16, 8) == 2.0
    assert lora_scaling(16, 4, use_rslora=True) == pytest.approx(16 / math.sqrt(4))


def test_describe_says_what_loras_can_target(tiny_model_dir):
    text = ModelLayout.for_model(str(tiny_model_dir)).describe()
    assert "2 layers" in text and "hidden size 64" in text and "14 linear layers LoRA can target" in text


def test_a_layout_read_from_disk_is_cached_and_estimates_the_same(tiny_model_dir, tmp_path, monkeypatch):
    from workbench.engine.estimator import estimate

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    built = ModelLayout.for_model(str(tiny_model_dir))
    cached_files = list((tmp_path / "layouts").glob("*.json"))
    assert len(cached_files) == 1
    again = ModelLayout.for_model(str(tiny_model_dir))  # read back: no meta model, the family's config class again
    assert type(again.config).__name__ == "LlamaConfig" and again.config.to_dict() == built.config.to_dict()
    assert again.linears == built.linears and again.total_params == built.total_params
    for bits in (16, 8, 4):
        kw = dict(bits=bits, rank=4, batch_size=2, seq_len=16)
        assert estimate(again, **kw).components == estimate(built, **kw).components
        assert estimate(again, train=False, **kw).components == estimate(built, train=False, **kw).components
    cached_files[0].write_text("{not json")  # damaged: built again, and written whole again
    assert ModelLayout.for_model(str(tiny_model_dir)).linears == built.linears


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_layout_counts_what_peft_builds_fresh_and_cached(family, family_dirs, tmp_path, monkeypatch):
    folder = family_folder(family_dirs, family)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    fresh = ModelLayout.for_model(str(folder))
    cached = ModelLayout.for_model(str(folder))  # read back from $WORKBENCH_HOME/layouts
    assert len(list((tmp_path / "layouts").glob("*.json"))) == 1
    assert type(cached.config) is type(fresh.config)  # the family's own config class: its aliases work
    assert cached.config.hidden_size == fresh.config.hidden_size == 32
    assert cached.config.num_hidden_layers == 2
    assert (cached.linears, cached.experts, cached.routers) == (fresh.linears, fresh.experts, fresh.routers)
    assert fresh.target_names == FAMILY_LINEAR[family]
    assert fresh.is_moe == (family in MOE)
    for layout in (fresh, cached):
        kw = dict(rank=4, batch_size=2, seq_len=16)
        assert estimate(layout, bits=4, **kw).components == estimate(fresh, bits=4, **kw).components
        sixteen, four = estimate(layout, bits=16, **kw).total, estimate(layout, bits=4, **kw).total
        assert (sixteen == four) if family in NOT_QUANTIZED else (sixteen > four > 0)
        assert "2 layers, hidden size 32" in layout.describe()
    settings = [LoraSettings(rank=4), LoraSettings(rank=4, target_modules=FAMILY_LINEAR[family][:2])]
    if family in MOE:
        settings.append(LoraSettings(rank=4, adapt_experts=False))
    model = AutoModelForCausalLM.from_pretrained(folder)
    for lora in settings:
        peft_model = attach_lora(model, lora, bits=16)
        assert (
            fresh.adapter_params(4, lora.target_modules, lora.adapt_experts)
            == (peft_model.get_nb_trainable_parameters()[0])
        ), lora
        model = peft_model.unload()  # the bare model again, for the next setting
    if family in MOE:  # the experts cost what they add, and the router is in no adapter
        assert fresh.adapter_params(4, "all-linear") > fresh.adapter_params(4, "all-linear", adapt_experts=False)
        assert fresh.routers and not any(r in (lin.name for lin in fresh.linears) for r in fresh.routers)


def test_a_linear_subclass_counts_as_quantized_only_where_it_is_torch_linear(family_dirs, tmp_path, monkeypatch):
    """Falcon's FalconLinear (x @ W.T + b, as torch's Linear) is built as torch's Linear at 8 and 4 bits: its layers
    are quantized, and an older cache entry that said otherwise is built again. A subclass the workbench has not
    read may compute something else (a router adds no parameters either): still refused at 8 and 4 bits."""
    import json

    from workbench.engine.layout import AS_LINEAR

    folder = family_folder(family_dirs, "falcon")
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    falcon = ModelLayout.for_model(str(folder))
    assert AS_LINEAR["falcon"] == ("transformers.models.falcon.modeling_falcon", "FalconLinear")
    assert len(falcon.linears) == 8 and falcon.quantized_linears == falcon.linears
    assert {lin.kind for lin in falcon.linears} == {"linear"}
    falcon.check_bits(4)  # no refusal
    (entry,) = (tmp_path / "layouts").glob("*.json")  # written by version 3, which called them unquantized
    record = json.loads(entry.read_text())
    entry.write_text(json.dumps({**record, "version": 3, "linears": [[*r[:3], "subclass"] for r in record["linears"]]}))
    assert ModelLayout.for_model(str(folder)).quantized_linears == falcon.linears

    class Doubled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(falcon.config)
    for module in model.modules():
        if type(module).__name__ == "FalconLinear":
            module.__class__ = Doubled
    other = ModelLayout(falcon.config, model)
    assert [lin.name for lin in other.linears] == [lin.name for lin in falcon.linears]
    assert {lin.kind for lin in other.linears} == {"subclass"} and other.quantized_linears == []
    other.check_bits(16)
    for bits in (8, 4):
        with pytest.raises(ValueError, match=r"^bits: bitsandbytes quantizes none of falcon's layers .*16 bits$") as no:
            other.check_bits(bits)
        assert "\n" not in str(no.value)
