"""The LoRA explainer panel (ui.explain): drawn to scale as the rank moves, a trained adapter taken apart."""

from __future__ import annotations

import json

from helpers import tiny_state, trained_adapter

from workbench.engine.layout import ModelLayout
from workbench.ui.explain import LoraExplainer

PNG = b"\x89PNG"


def test_lora_panel_draws_to_scale_as_the_rank_moves(tiny_model_dir, tmp_path):
    panel = LoraExplainer(tiny_state(tiny_model_dir, tmp_path / "runs"))
    names = [v for _, v in panel.layer.options]
    assert names == [lin.name for lin in ModelLayout.for_model(str(tiny_model_dir)).linears]
    assert panel.layer.value == "model.layers.1.mlp.down_proj"  # the middle block's down_proj
    assert panel.rank.value == 4 and bytes(panel.shape_image.value).startswith(PNG)
    assert "4·(64+128) = <b>768</b>" in panel.counts.value
    before = panel.shape_image.value
    panel.rank.value = 32
    assert panel.shape_image.value != before and "32·(64+128) = <b>6,144</b>" in panel.counts.value
    assert f"{32 * 192 / (64 * 128):.2%}" in panel.counts.value
    before = panel.shape_image.value
    panel.layer.value = "model.layers.0.self_attn.k_proj"  # 32×64 with 2 kv heads of 16
    assert panel.shape_image.value != before and "(32+64)" in panel.counts.value
    assert "No run with a saved adapter" in panel.trained_info.value and panel.spectra_image.value == b""


def test_lora_panel_takes_a_trained_adapter_apart(tiny_model_dir, load_tiny, tmp_path):
    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    panel = LoraExplainer(state)
    run = tmp_path / "runs" / "r1"
    (run / "adapters").mkdir(parents=True)
    trained_adapter(load_tiny, run / "adapters" / "lora")
    trained_adapter(load_tiny, run / "adapters" / "qlora", seed=1)
    (run / "results.json").write_text(json.dumps({"variants": []}))
    state.notify("runs")  # what a finished training does
    assert panel.run.value == run and [v for _, v in panel.variant.options] == ["lora", "qlora"]
    assert "14 adapted layers" in panel.trained_info.value and "r = 4" in panel.trained_info.value
    spectra, heat = panel.spectra_image.value, panel.heatmap_image.value
    assert bytes(spectra).startswith(PNG) and bytes(heat).startswith(PNG)
    panel.spectra_of.value = "layer:1"
    assert panel.spectra_image.value != spectra and panel.heatmap_image.value == heat
    panel.variant.value = "qlora"
    assert panel.heatmap_image.value != heat  # another adapter, other norms
    assert panel.spectra_of.value == "layer:1"  # the choice survives the switch
    assert not panel.show_adapter(tmp_path / "nowhere") and "wb-error" in panel.trained_info.value
