"""workbench.engine.moved_base: a moved base's adapter made plain for the original base (the model, rebuilt as the run
had it, is checked end to end in tests/scenarios/test_inits.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from workbench.core.config import LoraSettings
from workbench.engine import moved_base
from workbench.records.runs import ADAPTER_START

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"


def saved(folder, *, rank=2, alpha=4.0, rslora=False, start=True):
    torch.manual_seed(0)
    trained = {KEY.format("A"): torch.randn(rank, 6), KEY.format("B"): torch.randn(5, rank)}
    first = {KEY.format("A"): torch.randn(rank, 6), KEY.format("B"): torch.randn(5, rank)}
    folder.mkdir()
    save_file(trained, str(folder / "adapter_model.safetensors"))
    if start:
        save_file(first, str(folder / ADAPTER_START))
    config = {"r": rank, "lora_alpha": alpha, "use_rslora": rslora, "init_lora_weights": True, "rank_pattern": {}}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return trained, first


def scale(config: dict) -> float:
    return config["lora_alpha"] / (config["r"] ** 0.5 if config["use_rslora"] else config["r"])


@pytest.mark.parametrize("rslora", [False, True])
def test_the_plain_adapter_adds_to_the_original_base_what_training_added_to_the_moved_one(tmp_path, rslora):
    trained, first = saved(tmp_path / "run", rslora=rslora)
    rank = moved_base.plain_adapter(tmp_path / "run", tmp_path / "plain")
    assert rank == 4
    from safetensors.torch import load_file

    plain = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    config = json.loads((tmp_path / "plain" / "adapter_config.json").read_text())
    before = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["r"] == 4 and scale(config) == pytest.approx(scale(before))  # the scale stays
    # W + s·B'·A' = (W - s·B0·A0) + s·B·A: the original base plus the plain adapter is the run's model
    update = scale(config) * plain[KEY.format("B")] @ plain[KEY.format("A")]
    expected = scale(before) * (
        trained[KEY.format("B")] @ trained[KEY.format("A")] - first[KEY.format("B")] @ first[KEY.format("A")]
    )
    assert torch.allclose(update, expected, atol=1e-5)


def test_only_an_adapter_whose_init_moved_the_base_counts_as_moved(tmp_path):
    saved(tmp_path / "moved")
    saved(tmp_path / "kept", start=False)
    assert moved_base.changed_base(LoraSettings(init="pissa"), tmp_path / "moved")
    assert not moved_base.changed_base(LoraSettings(init="pissa"), tmp_path / "kept")  # saved before inits
    assert not moved_base.changed_base(LoraSettings(init="loftq", loftq_iter=1), tmp_path / "moved")
    assert moved_base.changed_base(LoraSettings(init="loftq", loftq_iter=2), tmp_path / "moved")
    assert not moved_base.changed_base(LoraSettings(init="eva"), tmp_path / "moved")
