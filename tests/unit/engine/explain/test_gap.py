"""The gap before training (engine/explain/gap.py): each format's weight error read from the really loaded
model, checked against a layer quantized by hand with bitsandbytes; the loss and KL against a hand computation
on two models' logits; the totals, intervals, the init's step-0 row, the embedded-model note and the figure."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from helpers import tiny_examples, value_error

from workbench.core.config import LoraSettings
from workbench.data import IGNORE_INDEX, collate, encode
from workbench.engine import models
from workbench.engine.explain import gap
from workbench.engine.explain.quant import format_label

LAYER = "model.layers.1.mlp.down_proj"


@pytest.fixture(scope="module")
def report(tiny_model_dir):
    return gap.measure_gap(
        tiny_model_dir, tiny_examples()[:8], formats=[("int8", False), ("nf4", True), ("fp4", False)]
    )


def layer_row(report, label: str, layer: str = LAYER) -> gap.LayerGap:
    return next(x for x in report.layers if x.row == label and x.layer == layer)


def test_a_layers_error_matches_bitsandbytes_by_hand(report, tiny_model_dir):
    import bitsandbytes.functional as bnbf
    from safetensors.torch import load_file

    w = load_file(str(tiny_model_dir / "model.safetensors"))[LAYER + ".weight"].float()
    for fmt, dq in (("nf4", True), ("fp4", False)):
        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=fmt, compress_statistics=dq)
        back = bnbf.dequantize_4bit(packed, state).float()
        by_hand = float((w - back).norm() / w.norm())
        assert layer_row(report, format_label(fmt, dq)).rel_error == pytest.approx(by_hand, rel=1e-5)
    # Int8Params rounds the weight to float16 before its row-wise int8 codes: so does the hand computation
    cb, scb, _ = bnbf.int8_vectorwise_quant(w.half())
    by_hand = float((w - bnbf.int8_vectorwise_dequant(cb, scb)).norm() / w.norm())
    assert layer_row(report, format_label("int8", False)).rel_error == pytest.approx(by_hand, rel=1e-5)
    # golden values for the tiny model's weights (std 0.02 normal): NF4 rounds ~9%, FP4 ~12%, int8 ~0.6%
    assert 0.085 < layer_row(report, format_label("nf4", True)).rel_error < 0.10
    assert 0.11 < layer_row(report, format_label("fp4", False)).rel_error < 0.135
    assert 0.004 < layer_row(report, format_label("int8", False)).rel_error < 0.008


def test_the_total_is_over_every_quantized_layer(report):
    nf4 = report.row("nf4-dq")
    got = [x for x in report.layers if x.row == nf4.label]
    assert len(got) == 14  # 2 blocks x (q, k, v, o, gate, up, down); the head stays unquantized
    by_hand = math.sqrt(sum(x.error_norm**2 for x in got)) / math.sqrt(sum(x.weight_norm**2 for x in got))
    assert nf4.total_rel_error == pytest.approx(by_hand)
    assert report.row("int8").total_rel_error < nf4.total_rel_error < report.row("fp4").total_rel_error


def test_loss_and_kl_match_a_hand_computation_on_two_models_logits(report, tiny_model_dir, tiny_tokenizer):
    ex = tiny_examples()[:8]
    row = encode(tiny_tokenizer, ex, 128).rows[3]
    batch = collate([row], tiny_tokenizer.pad_token_id)
    ref, _ = models.load_model(tiny_model_dir, bits=16, device="cpu", dtype="float32")
    q4, _ = models.load_model(
        tiny_model_dir, bits=4, quant=gap.quant_settings("nf4", True), device="cpu", dtype="float32"
    )
    with torch.no_grad():
        logits = [m(input_ids=batch["input_ids"]).logits[0, :-1].float() for m in (ref, q4)]
        answer = batch["labels"][0, 1:] != IGNORE_INDEX
        logp, logq = (torch.log_softmax(x[answer], -1) for x in logits)
        kl = torch.nn.functional.kl_div(logq, logp, log_target=True, reduction="none").sum(-1).mean()
        rows_loss = models.scored_loss(q4, batch["input_ids"], batch["attention_mask"], batch["labels"], "row")
    nf4 = report.row("nf4-dq")
    assert nf4.kls[3] == pytest.approx(float(kl), rel=1e-3, abs=1e-6)
    assert nf4.losses[3] == pytest.approx(float(rows_loss[0]) / int(answer.sum()), rel=1e-4)
    assert nf4.tokens[3] == int(answer.sum())
    assert report.row("16-bit").kls == [0.0] * 8


def test_intervals_are_paired_and_cover_the_means(report):
    ref = report.row("16-bit")
    for r in report.rows[1:]:
        assert r.loss_ci.contains(r.loss) and r.kl_ci.contains(r.kl) and r.loss_diff_ci.contains(r.loss_diff)
        assert r.loss_diff == pytest.approx(r.loss - ref.loss)
        assert r.kl > 0
    # paired: the difference's interval is narrower than the loss's own (the examples' spread cancels)
    nf4 = report.row("nf4-dq")
    width = lambda ci: ci.high - ci.low  # noqa: E731
    assert width(nf4.loss_diff_ci) < width(nf4.loss_ci)
    assert report.row("int8").kl < nf4.kl  # 8 bits move the next-token distribution far less than 4


def test_the_report_as_json_and_frames(report):
    doc = json.loads(json.dumps(report.to_dict()))
    assert [r["key"] for r in doc["rows"]] == ["16-bit", "int8", "nf4-dq", "fp4"]
    assert doc["rows"][2]["eval_loss_ci"][0] < doc["rows"][2]["eval_loss"] < doc["rows"][2]["eval_loss_ci"][1]
    assert len(doc["rows"][2]["per_example"]["kls"]) == 8 and not doc["embedded"] and doc["notes"] == []
    frame = report.frame()
    assert list(frame.index) == ["16-bit", "int8", "nf4-dq", "fp4"] and "loss_vs_16bit_ci" in frame
    layers = report.layer_frame()
    assert layers.shape == (14, 3) and layers.index[0] == "model.layers.0.self_attn.q_proj"


def test_the_figure_draws_a_line_per_format(report):
    fig = gap.gap_figure(report)
    left, right = fig.axes
    assert len(left.get_lines()) == 3 and len(right.patches) == 3


def test_formats_are_parsed_and_bad_ones_refused():
    assert gap.parse_formats("all") == list(gap.GAP_FORMATS)
    assert gap.parse_formats("fp4, int8") == [("int8", False), ("fp4", False)]
    assert gap.parse_formats("nf4-dq") == [("nf4", True)]
    msg = value_error(gap.parse_formats, "nf3,int8")
    assert msg.startswith("formats: 'nf3'") and "nf4-dq" in msg


def test_the_embedded_model_says_its_reference_was_rounded_already(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "embedded-like")
    (copy / gap.EMBEDDED_MARK).write_text("Dequantized from a Q4_1 GGUF\n")
    got = gap.measure_gap(copy, tiny_examples()[:2], formats=[("int8", False)])
    assert got.embedded and got.notes == [gap.EMBEDDED_NOTE] and "Q4_1" in gap.EMBEDDED_NOTE
    assert len(got.rows) == 2


def test_loftq_at_step_0_takes_back_part_of_the_rounding(tiny_model_dir):
    lora = LoraSettings(rank=4, alpha=8.0, target_modules="all-linear", init="loftq")
    got = gap.measure_gap(tiny_model_dir, tiny_examples()[:8], formats=[("int8", False), ("nf4", True)], lora=lora)
    assert [r.key for r in got.rows] == ["16-bit", "int8", "nf4-dq", "nf4-dq+loftq"]  # LoftQ: 4 bits only
    assert got.notes == ["loftq works on 4 bits: the other formats have no row with it"]
    plain, started = got.row("nf4-dq"), got.row("nf4-dq+loftq")
    assert started.label == "4-bit NF4 + double quant, with loftq at step 0"
    # measured on the tiny model: 9.19% -> 8.27% of the weights' norm, and the KL down by about a third
    assert plain.total_rel_error == pytest.approx(0.0919, abs=0.002)
    assert started.total_rel_error == pytest.approx(0.0827, abs=0.003)
    assert started.kl < plain.kl
    assert len([x for x in got.layers if x.row == started.label]) == 14


def test_nothing_to_measure_is_refused(tiny_model_dir):
    assert value_error(gap.measure_gap, tiny_model_dir, []).startswith("examples:")


def test_double_quantization_made_from_a_plain_4_bit_load_is_what_loading_with_it_gives(tiny_model_dir):
    """The gap loads each 4-bit type once: with_double_quant on a load without it gives, weight for weight, the
    model a load with double quantization gives (bitsandbytes computes the same codes either way)."""
    import bitsandbytes as bnb

    from workbench.engine.inits import dequantized

    for fmt in ("nf4", "fp4"):
        made, _ = models.load_model(tiny_model_dir, bits=4, quant=gap.quant_settings(fmt, False), device="cpu")
        loaded, _ = models.load_model(tiny_model_dir, bits=4, quant=gap.quant_settings(fmt, True), device="cpu")
        assert gap.with_double_quant(made) == 14
        pairs = [
            (a.weight, b.weight) for a, b in zip(made.modules(), loaded.modules()) if isinstance(a, bnb.nn.Linear4bit)
        ]
        assert len(pairs) == 14 and all(a.quant_state.nested for a, _ in pairs)
        for a, b in pairs:
            assert torch.equal(dequantized(a), dequantized(b))
    assert gap.load_groups(gap.GAP_FORMATS, []) == [
        [("int8", False)],
        [("nf4", False), ("nf4", True)],
        [("fp4", False), ("fp4", True)],
    ]
    # an init row changes the model it is measured on: each of its formats is then loaded as it is
    assert [("nf4", True)] in gap.load_groups(gap.GAP_FORMATS, [("nf4", True)])
