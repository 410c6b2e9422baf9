"""A model's layout from its config alone: the linear layers, the targets peft would adapt, adapter sizes,
scaling and block indices, checked against a loaded model and against peft itself."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.core.config import LoraSettings
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


def test_the_app_appears_without_the_heavy_libraries(tmp_path):
    """Workbench() builds its first tab only: peft, bitsandbytes and transformers' model code load when a tab
    or a job needs them (the app is ready in about a second once the layout cache is warm)."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\nfrom workbench.ui import Workbench\nWorkbench(runs_dir=sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in ('peft', 'bitsandbytes', 'transformers.models.llama.modeling_llama')"
        " if m in sys.modules)))"
    )
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home")}
    for _ in range(2):  # the first fills the layout cache
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "runs")], capture_output=True, text=True, env=env, check=True
        )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# published sizes: GPT-2 124M and 1.5B (the GPT-2 paper's 117M/1542M count the output head apart), Phi-3-mini
# 3.8B, Gemma-2-2B 2.6B, Mixtral-8x7B 46.7B (model cards)
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "phi-3-mini": 3_821_079_552,
    "gemma-2-2b": 2_614_341_888,
    "mixtral-8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_workbench_estimate_knows_the_shipped_families(name, capsys):
    import json

    from workbench import cli

    assert cli.main(["estimate", "--model", name, "--bits", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    layout = ModelLayout.for_model(name)
    assert layout.total_params == PUBLISHED[name]
    assert out["adapter_params"] == layout.adapter_params(8, "all-linear") > 0 and out["total"] > 0
    if name == "mixtral-8x7b":  # the experts: 64 stacked weights, a choice with its own cost
        assert len(layout.experts) == 64 and "expert updates" in out["components"]
        assert cli.main(["estimate", "--model", name, "--bits", "4", "--json", "--no-experts"]) == 0
        without = json.loads(capsys.readouterr().out)
        assert without["adapter_params"] == layout.adapter_params(8, "all-linear", adapt_experts=False)
        assert without["adapter_params"] < out["adapter_params"] and "expert updates" not in without["components"]
