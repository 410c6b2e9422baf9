"""The quantization explainer panel (ui.quant): loaded once in the background, waits its turn, forgets a
changed model."""

from __future__ import annotations

import pytest
from helpers import tiny_state

from workbench.engine import explain

PNG = b"\x89PNG"


def test_quant_panel_loads_once_in_the_background_and_updates(tiny_model_dir, tmp_path, quant_panel):
    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    panel = quant_panel(state)
    assert panel.model is None and panel.figure.value == b""  # nothing loads until it is used
    assert panel.analyse() is None
    assert state.jobs.join(60)
    assert "wb-error" not in panel.status.value, panel.status.value
    assert panel.model is not None and bytes(panel.figure.value).startswith(PNG)
    table = panel.table.value
    assert table.count("<tr") == 7 and "4-bit NF4 + double quant" in table
    bold = table.split("font-weight:bold")[1].split("</tr>")[0]
    assert ">4-bit NF4 + double quant<" in bold  # the preset's settings: nf4 with double quantization
    nf4 = panel.figure.value
    panel.quant_type.value = "fp4"  # the model is loaded now: redrawn at once, no job
    assert panel.figure.value != nf4 and ">4-bit FP4 + double quant<" in panel.table.value.split("font-weight:bold")[1]
    panel.double_quant.value = False
    assert ">4-bit FP4<" in panel.table.value.split("font-weight:bold")[1].split("</tr>")[0]
    assert "packed 4-bit codes 4,096 B" in panel.parts.value  # 64×128 weights, two per byte
    first = panel.model
    panel.layer.value = "model.layers.0.self_attn.q_proj"
    assert panel.model is first and set(panel.results) == {
        "model.layers.1.mlp.down_proj",
        "model.layers.0.self_attn.q_proj",
    }
    w = panel.weight("model.layers.0.self_attn.q_proj")
    expected = explain.quant_error(w, "nf4")
    got = next(r for r in panel.results["model.layers.0.self_attn.q_proj"] if r.label == "4-bit NF4")
    assert got.mean_abs_error == pytest.approx(expected.mean_abs_error)


def test_quant_panel_waits_its_turn_and_forgets_a_changed_model(tiny_model_dir, tmp_path, quant_panel):
    import threading

    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    panel = quant_panel(state)
    gate = threading.Event()
    state.jobs.start("training", gate.wait, on_error=lambda e, tb: None)
    try:
        refused = panel.analyse()
        assert refused and "training is still running" in refused and "wb-warn" in panel.status.value
    finally:
        gate.set()
        state.jobs.join(10)
    panel.analyse()
    assert state.jobs.join(60) and panel.model is not None
    state.update("model", name="HuggingFaceTB/SmolLM2-135M-Instruct")  # shipped config: no weights needed
    assert panel.model is None and panel.results == {} and panel.figure.value == b""
    assert "model.layers.15.mlp.down_proj" in [v for _, v in panel.layer.options]
    assert panel.layer.value == "model.layers.15.mlp.down_proj"
