"""The quantization explainer panel (ui.quant): loaded once in the background, waits its turn, forgets a
changed model; its whole-model section measures the gap before training, with the Adapter tab's init at step 0."""

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


def test_the_gap_section_measures_every_format_in_the_background(tiny_model_dir, tmp_path, quant_panel):
    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    panel = quant_panel(state)
    assert "wb-quant-gap" in panel.gap_box._dom_classes and panel.gap_button.description == "Measure the gap"
    panel.gap_examples.value = 6
    assert panel.measure_gap() is None
    assert state.jobs.join(120)
    assert "wb-ok" in panel.gap_status.value, panel.gap_status.value
    table = panel.gap_table.value
    assert table.startswith("<table class='wb-gap-table'>") and table.count("<tr") == 7  # header, 16-bit, 5 formats
    assert "step 0" not in table  # the preset's init is gaussian: B = 0, nothing to show
    report = panel.gap_report
    assert report.examples == 6 and report.row("nf4-dq").total_rel_error == pytest.approx(0.0919, abs=0.002)
    assert f"{report.row('nf4-dq').total_rel_error:.2%}" in table and f"{report.row('fp4').kl:.4f}" in table
    assert bytes(panel.gap_figure.value).startswith(PNG) and "6 eval examples" in panel.gap_notes.value
    assert panel.model is None  # the one-layer view's model did not load for this


def test_the_gap_section_shows_the_adapter_tabs_init_at_step_0(tiny_model_dir, tmp_path, quant_panel):
    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    state.update(variants=["qlora"])
    state.update("lora", init="loftq")
    panel = quant_panel(state)
    panel.gap_examples.value = 4
    panel.measure_gap()
    assert state.jobs.join(120) and "wb-ok" in panel.gap_status.value, panel.gap_status.value
    table = panel.gap_table.value
    assert table.count("with loftq at step 0") == 4  # the four 4-bit formats; LoftQ has no 8-bit start
    plain, started = panel.gap_report.row("nf4-dq"), panel.gap_report.row("nf4-dq+loftq")
    assert started.total_rel_error < plain.total_rel_error and started.kl < plain.kl
    assert "loftq works on 4 bits" in panel.gap_notes.value
    state.update("model", name="HuggingFaceTB/SmolLM2-135M-Instruct")  # a changed model forgets the gap
    assert panel.gap_report is None and panel.gap_table.value == ""


def test_the_gap_waits_its_turn(tiny_model_dir, tmp_path, quant_panel):
    import threading

    state = tiny_state(tiny_model_dir, tmp_path / "runs")
    panel = quant_panel(state)
    gate = threading.Event()
    state.jobs.start("training", gate.wait, on_error=lambda e, tb: None)
    try:
        refused = panel.measure_gap()
        assert refused and "training is still running" in refused and "wb-warn" in panel.gap_status.value
    finally:
        gate.set()
        state.jobs.join(10)
    assert panel.gap_report is None
