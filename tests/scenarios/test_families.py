"""The family matrix, end to end: every causal-LM family people fine-tune, built tiny in-process (helpers.py's
FAMILIES, with the tiny model's tokenizer), trained at 16, 8 and 4 bits (one run_compare of base, lora, lora8 and
qlora), scored, answering, and exported merged so that plain transformers reloads it. A family transformers
cannot build is skipped with one line saying so."""

from __future__ import annotations

import math

import pytest
from helpers import FAMILIES, MOE, NOT_QUANTIZED, family_folder, tiny_config
from transformers import AutoModelForCausalLM

from workbench.engine import export
from workbench.engine.generate import DecodeSettings
from workbench.engine.layout import ModelLayout
from workbench.experiments import comparison as compare


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_trains_at_16_8_and_4_bits_scores_answers_and_exports(family, family_dirs, tiny_jsonl, tmp_path):
    """run_compare from the Adapter tab's defaults (all-linear, dropout 0.05, experts adapted): LoRA at 16 and 8
    bits and QLoRA at 4 (Falcon's FalconLinear layers built as torch's Linear there), two steps each with the loss
    moving, evaluation, answers; then the 4-bit adapter merged and exported, and plain transformers loads it."""
    folder = family_folder(family_dirs, family)
    trained = ["lora"] if family in NOT_QUANTIZED else ["lora", "lora8", "qlora"]
    cfg = tiny_config(folder, tiny_jsonl, variants=",".join(["base", *trained]), steps=2, eval_examples=3)
    assert cfg.lora.dropout > 0 and cfg.lora.target_modules == "all-linear" and cfg.lora.adapt_experts
    # answers of 4 tokens: a random tiny model never ends one, and 48 tokens per answer were half the time
    result = compare.run_compare(cfg, tmp_path / "run", fit_check=False, decode=DecodeSettings(max_new_tokens=4))
    rows = {v.name: v for v in result.variants}
    assert set(rows) == {"base", *trained}
    layout = ModelLayout.for_model(str(folder))
    for name in trained:
        row = rows[name]
        assert row.status == "done" and row.steps_done == 2, (name, row.error)
        assert row.trainable_params == layout.adapter_params(4, "all-linear")
        losses = [m.loss for m in result.metrics if m.variant == name]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
        assert abs(losses[1] - losses[0]) > 1e-4, (name, losses)  # the adapter moved
        assert row.estimated_peak_bytes > 0 and math.isfinite(row.eval_loss)
    dropout_note = [n for n in result.notes if "becomes 0 for this adapter" in n]
    assert len(dropout_note) == (1 if family in MOE else 0)  # said once, where the run's notes are
    assert rows["base"].accuracy is not None and result.generations  # scored, and answered
    assert all(set(answers) == set(rows) for answers in result.generations.values())
    done = export.export(tmp_path / "run", trained[-1], tmp_path / "merged", merge=True, dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(done.out)
    assert type(merged).__name__ == type(AutoModelForCausalLM.from_pretrained(folder)).__name__
    assert done.gap is not None and done.gap.top1_agreement > 0.9 and done.gap.mean_abs < 1e-3
