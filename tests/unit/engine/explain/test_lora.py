"""The LoRA explainer (engine.explain.lora), on the tiny model: the geometry and counts to scale, the shapes
figure following the rank, ΔW's spectrum from the small core equal to the dense one, the effective rank, a saved
adapter read without the base model as peft reads it, rsLoRA's scaling, the heatmap of norms and the figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import trained_adapter

from workbench.engine import explain

PNG = b"\x89PNG"


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
