"""The quantization explainer (engine.explain.quant): bitsandbytes' code points, round trips of weights, NF4
against FP4, the stored bits per parameter, the block absmax, the histogram figure."""

from __future__ import annotations

import pytest
import torch

from workbench.engine import explain
from workbench.engine.estimator import bits_per_param
from workbench.ui.quant import quant_table_html

PNG = b"\x89PNG"


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
