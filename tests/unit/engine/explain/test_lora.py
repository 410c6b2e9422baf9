"""The LoRA and quantization explainers: geometry and counts, ΔW's spectrum from a saved adapter,
bitsandbytes' real errors and stored bytes, and both panels driven without a browser (tiny model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core.config import LoraSettings, preset_config
from workbench.engine import explain
from workbench.engine.estimator import bits_per_param
from workbench.engine.layout import ModelLayout
from workbench.ui import AppState
from workbench.ui.explain import LoraExplainer
from workbench.ui.quant import QuantExplainer, quant_table_html

PNG = b"\x89PNG"


@pytest.fixture
def quant_panel():
    """quant_panel(state) -> a QuantExplainer whose model is released after the test: ipywidgets keeps every
    widget alive, and a model loaded from the tiny checkpoint would keep that file mapped for later tests."""
    made = []

    def make(state: AppState) -> QuantExplainer:
        made.append(QuantExplainer(state))
        return made[-1]

    yield make
    for panel in made:
        panel.state.jobs.join(60)
        panel.release()


def tiny_state(model_dir: Path, runs_dir: Path, **lora) -> AppState:
    cfg = preset_config(
        None,
        {
            "model": {"name": str(model_dir), "device": "cpu"},
            "task": "sentiment",
            "lora": {"rank": 4, "alpha": 8.0, "target_modules": "all-linear", **lora},
            "variants": ["lora"],
        },
    )
    return AppState(cfg, runs_dir=runs_dir)


def trained_adapter(
    load_tiny,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets="all-linear",
    rslora: bool = False,
    seed: int = 0,
):
    """A real PEFT adapter on the tiny model, with B made non-zero (peft starts it at zero), saved to `out`."""
    from workbench.engine.models import attach_lora

    model = attach_lora(
        load_tiny(16), LoraSettings(rank=rank, alpha=alpha, target_modules=targets, use_rslora=rslora), 16
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(out)
    return model


# =========================================================================== LoRA: shapes


def test_geometry_is_to_scale():
    d, k, r = 96, 160, 4
    g = explain.lora_geometry(d, k, r)
    w, b, a = g["W"], g["B"], g["A"]
    assert (w.width, w.height) == (k, d) and (b.width, b.height) == (r, d) and (a.width, a.height) == (k, r)
    assert b.width / w.height == pytest.approx(r / d)  # B is r wide where W is d tall: thin at small rank
    assert a.height / w.width == pytest.approx(r / k)
    assert b.height == w.height and b.y == w.y  # B's rows line up with W's
    assert a.y == b.y  # A's r rows meet B's r columns
    assert w.x + w.width < b.x and b.x + b.width < a.x  # side by side, no overlap
    g64 = explain.lora_geometry(d, k, 64)
    assert g64["B"].width == 16 * b.width and g64["W"] == w


def test_counts():
    c = explain.lora_counts(576, 1536, 8)
    assert c["W"] == 576 * 1536 and c["B"] == 576 * 8 and c["A"] == 8 * 1536
    assert c["BA"] == 8 * (576 + 1536) == c["A"] + c["B"]
    assert c["fraction"] == pytest.approx(8 * (576 + 1536) / (576 * 1536))
    assert explain.lora_counts(64, 64, 64)["fraction"] == 2.0  # full rank costs twice W


def test_shapes_figure_follows_the_rank():
    from workbench.ui.common import png

    one, two = png(explain.lora_shapes_figure("x", 64, 128, 1)), png(explain.lora_shapes_figure("x", 64, 128, 32))
    assert one.startswith(PNG) and two.startswith(PNG) and one != two


# =========================================================================== LoRA: spectra


@pytest.mark.parametrize("d,k,r", [(48, 80, 6), (5, 40, 8), (40, 5, 8)])
def test_singular_values_from_the_small_core_equal_the_dense_ones(d, k, r):
    g = torch.Generator().manual_seed(d + k + r)
    B, A = torch.randn(d, r, generator=g), torch.randn(r, k, generator=g)
    fast = explain.delta_singular_values(B, A, 0.5)
    dense = torch.linalg.svdvals(B.double() @ A.double() * 0.5)[: len(fast)]
    assert len(fast) == min(d, k, r)
    torch.testing.assert_close(fast, dense, rtol=1e-9, atol=1e-12)


def test_effective_rank_of_a_rank_two_update():
    g = torch.Generator().manual_seed(1)
    d, k, r = 40, 30, 8
    u = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(k, 2, generator=g, dtype=torch.float64))[0]
    B = torch.zeros(d, r, dtype=torch.float64)
    B[:, 0], B[:, 1] = 3 * u[:, 0], 2 * u[:, 1]
    A = torch.randn(r, k, generator=g, dtype=torch.float64)  # rows 2.. meet zero columns of B
    A[0], A[1] = v[:, 0], v[:, 1]
    s = explain.delta_singular_values(B, A)
    torch.testing.assert_close(s[:2], torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert explain.numerical_rank(s) == 2
    assert explain.energy_rank(s, 0.9) == 2  # 9/13 of the energy in the first: not enough
    assert explain.energy_rank(s, 0.6) == 1
    assert explain.energy_fraction(s)[1].item() == pytest.approx(1.0)
    assert explain.energy_rank(torch.zeros(4)) == 0


def test_saved_adapter_read_without_the_base_model_matches_peft(load_tiny, tmp_path):
    model = trained_adapter(load_tiny, tmp_path / "a", rank=4, alpha=12.0)
    factors = explain.read_adapter(tmp_path / "a")
    live = explain.peft_factors(model)
    assert [f.name for f in factors] == [f.name for f in live] and len(factors) == 14  # 2 layers x 7
    assert factors[0].name == "model.layers.0.self_attn.q_proj" and factors[0].layer == 0
    modules = dict(model.named_modules())
    for f, f2 in zip(factors, live):
        assert f.scaling == pytest.approx(12.0 / 4) == f2.scaling
        torch.testing.assert_close(f.A, f2.A)
        peft_delta = modules["base_model.model." + f.name].get_delta_weight("default").double()
        torch.testing.assert_close(f.delta(), peft_delta, rtol=1e-5, atol=1e-7)  # peft's own ΔW
    spectra = explain.adapter_spectra(tmp_path / "a")
    for s, f in zip(spectra, factors):
        torch.testing.assert_close(s.singular_values, torch.linalg.svdvals(f.delta())[: s.rank], rtol=1e-8, atol=1e-10)
        assert s.fro_norm == pytest.approx(torch.linalg.norm(f.delta()).item(), rel=1e-9)
        assert 1 <= s.effective_rank <= 4


def test_rslora_scaling_is_read_from_the_config(load_tiny, tmp_path):
    trained_adapter(load_tiny, tmp_path / "rs", rank=4, alpha=8.0, targets=["q_proj", "v_proj"], rslora=True)
    factors = explain.read_adapter(tmp_path / "rs")
    assert {f.module for f in factors} == {"q_proj", "v_proj"}
    assert all(f.scaling == pytest.approx(8.0 / math.sqrt(4)) for f in factors)


def test_heatmap_is_layers_by_modules_of_frobenius_norms(load_tiny, tmp_path):
    trained_adapter(load_tiny, tmp_path / "a")
    spectra = explain.adapter_spectra(tmp_path / "a")
    layers, modules, values = explain.norm_heatmap(spectra)
    assert layers == [0, 1] and modules == explain.MODULE_ORDER and values.shape == (2, 7)
    for f in explain.read_adapter(tmp_path / "a"):
        assert values[f.layer, modules.index(f.module)] == pytest.approx(torch.linalg.norm(f.delta()).item())
    # a module adapted in one layer only leaves the other cell empty
    partial = [s for s in spectra if not (s.layer == 1 and s.module == "k_proj")]
    _, _, holes = explain.norm_heatmap(partial)
    assert np.isnan(holes[1, 1]) and not np.isnan(holes[0, 1])


def test_trained_figures(load_tiny, tmp_path):
    from workbench.ui.common import png

    trained_adapter(load_tiny, tmp_path / "a")
    spectra = explain.adapter_spectra(tmp_path / "a")
    by_module = png(explain.spectra_figure(spectra, module="v_proj"))
    by_layer = png(explain.spectra_figure(spectra, layer=1))
    assert by_module.startswith(PNG) and by_layer.startswith(PNG) and by_module != by_layer
    assert png(explain.heatmap_figure(spectra)).startswith(PNG)
    assert png(explain.adapter_figure(spectra, title="t")).startswith(PNG)


def test_not_an_adapter_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        explain.read_adapter(tmp_path)


# =========================================================================== quantization


def test_code_points_come_from_bitsandbytes():
    from bitsandbytes.functional import get_4bit_type

    nf4, fp4 = explain.distinct_code_points("nf4"), explain.distinct_code_points("fp4")
    assert len(nf4) == 16 and nf4[0] == -1 and nf4[-1] == 1 and 0.0 in nf4.tolist()
    assert len(fp4) == 15  # +0 and -0 are two codes for one value
    torch.testing.assert_close(explain.code_points("nf4"), get_4bit_type("nf4", device="cpu"))


def on_code_points(quant_type: str, blocks: int = 256, seed: int = 0) -> torch.Tensor:
    """Weights that 4-bit storage holds exactly: code point × the block's absmax, ±1 present in every block."""
    g = torch.Generator().manual_seed(seed)
    codes = explain.code_points(quant_type)
    idx = torch.randint(0, 16, (blocks, 64), generator=g)
    idx[:, 0] = int(torch.argmax(codes))  # the code for +1 sets the block's absmax
    absmax = torch.rand(blocks, 1, generator=g) * 0.1 + 0.01
    return (codes[idx] * absmax).reshape(64, -1)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_weights_on_the_code_points_come_back_exactly(quant_type):
    w = on_code_points(quant_type)
    exact = explain.quant_error(w, quant_type)
    assert exact.max_abs_error <= 1e-7
    random = explain.quant_error(
        torch.randn(w.shape, generator=torch.Generator().manual_seed(2)) * float(w.std()), quant_type
    )
    # with double quantization the absmax itself is rounded to 8 bits: small, but no longer zero
    dq = explain.quant_error(w, quant_type, double_quant=True)
    assert 0 < dq.mean_abs_error < 0.1 * random.mean_abs_error


def test_nf4_beats_fp4_on_normal_weights():
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0)) * 0.02
    nf4, fp4 = explain.quant_error(w, "nf4"), explain.quant_error(w, "fp4")
    assert nf4.mean_abs_error < fp4.mean_abs_error  # the QLoRA paper's claim (section 3)
    int8 = explain.quant_error(w, "int8")
    bf16 = explain.quant_error(w, "bf16")
    assert bf16.mean_abs_error < int8.mean_abs_error < nf4.mean_abs_error
    assert nf4.rel_mean_error == pytest.approx(nf4.mean_abs_error / float(w.std()))


def test_stored_bits_per_param_match_the_estimator_formula():
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))  # 64 x 256 x 64: whole blocks
    results = {r.label: r for r in explain.quant_table(w)}
    for qt in ("nf4", "fp4"):
        plain = results[explain.format_label(qt)]
        dq = results[explain.format_label(qt, True)]
        assert plain.bits_per_param == pytest.approx(bits_per_param(4, double_quant=False), abs=0.05)
        assert dq.bits_per_param == pytest.approx(bits_per_param(4, double_quant=True), abs=0.05)
        assert plain.parts["packed 4-bit codes"] == w.numel() // 2
        assert plain.parts["absmax (fp32, one per 64)"] == w.numel() // 64 * 4
        assert dq.parts["absmax (8-bit, one per 64)"] == w.numel() // 64
        assert dq.stored_bytes < plain.stored_bytes
    int8 = results[explain.format_label("int8")]
    assert int8.stored_bytes == w.numel() + 1024 * 4  # int8 weights + one fp32 scale per row
    assert results[explain.format_label("bf16")].bits_per_param == 16


def test_block_absmax_is_what_bitsandbytes_uses():
    import bitsandbytes.functional as bnbf

    w = torch.randn(64, 100, generator=torch.Generator().manual_seed(3))  # 6400: the last block is partial
    _, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    torch.testing.assert_close(explain.block_absmax(w), state.absmax)
    norm = explain.normalized_weights(w)
    assert norm.abs().max() == 1 and norm.shape == (w.numel(),)


def test_histogram_figure():
    from workbench.ui.common import png

    w = torch.randn(128, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    nf4, fp4 = png(explain.quant_histogram_figure(w, "nf4", "l")), png(explain.quant_histogram_figure(w, "fp4", "l"))
    assert nf4.startswith(PNG) and nf4 != fp4
    html = quant_table_html(explain.quant_table(w), highlight="4-bit NF4")
    assert html.count("<tr") == 7 and "font-weight:bold" in html


# =========================================================================== panels


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


# =========================================================================== the real embedded model


@pytest.mark.e2e
def test_quant_explainer_on_a_real_layer_of_the_embedded_model(embedded_dir, tmp_path, quant_panel):
    from workbench.ui.common import png

    state = AppState(
        preset_config("cpu-demo", {"model": {"name": str(embedded_dir), "device": "cpu"}}), runs_dir=tmp_path
    )
    panel = quant_panel(state)
    layer = "model.layers.15.mlp.down_proj"
    assert panel.layer.value == layer
    assert panel.quant_type.value == "nf4" and panel.double_quant.value  # the cpu-demo settings
    assert panel.analyse() is None
    assert state.jobs.join(300) and "wb-error" not in panel.status.value, panel.status.value
    w = panel.weight(layer)
    assert tuple(w.shape) == (576, 1536)
    res = {r.label: r for r in panel.results[layer]}
    nf4, fp4 = res["4-bit NF4"], res["4-bit FP4"]
    assert nf4.mean_abs_error < fp4.mean_abs_error
    assert 0.02 < nf4.rel_mean_error < 0.2  # a few per cent of the weights' spread
    assert res["8-bit LLM.int8 (row-wise)"].mean_abs_error < nf4.mean_abs_error / 4
    # 884,736 weights = 54 × 256 × 64: whole blocks, so the stored size is the formula's plus the code tables
    assert res["4-bit NF4 + double quant"].bits_per_param == pytest.approx(bits_per_param(4, True), abs=0.05)
    assert nf4.bits_per_param == pytest.approx(bits_per_param(4, False), abs=0.05)
    assert bytes(panel.figure.value).startswith(PNG)
    assert panel.figure.value == png(explain.quant_histogram_figure(w, "nf4", layer))
    assert ">4-bit NF4 + double quant<" in panel.table.value.split("font-weight:bold")[1].split("</tr>")[0]
