"""Export: the adapter with a model card, and merged models that plain transformers loads (tiny model)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import cli
from workbench.engine import export

# What the merge may change, measured on the tiny model: at 16 bits in float32 the merge is exact to float
# rounding (2e-6 at most); bfloat16 storage rounds each weight (about 3e-2 at most); LLM.int8's matmul
# differs from its dequantized weights (about 0.14 at most, 8e-3 on average).
EXACT = 1e-4
BF16 = 0.1
INT8_MEAN = 0.05


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _ids(finished_run):
    """The run's first export.GAP_EXAMPLES eval examples, tokenised as the run scored them."""
    from workbench.data import encode, task_for
    from workbench.engine.models import load_tokenizer

    cfg = finished_run.config()
    tokenizer = load_tokenizer(finished_run.model_path)
    rows = encode(tokenizer, task_for(cfg).eval[: export.GAP_EXAMPLES], cfg.train.seq_len)
    return [torch.tensor([r["input_ids"]]) for r in rows.rows[: export.GAP_EXAMPLES]]


def _adapter_model(finished_run, variant):
    """The run's base at the variant's bits with its adapter on, as peft loads it: what the merge must match."""
    from peft import PeftModel

    from workbench.core.config import VARIANTS
    from workbench.engine.models import load_model

    cfg = finished_run.config()
    model, _ = load_model(
        finished_run.model_path,
        bits=VARIANTS[variant].bits,
        quant=cfg.quant,
        device=cfg.model.device,
        dtype=cfg.model.dtype,
    )
    return PeftModel.from_pretrained(model, str(finished_run.adapter_dir(variant)), is_trainable=False).eval()


def test_the_adapter_export_has_the_adapter_and_a_model_card(finished_run, tmp_path):
    done = export.export(finished_run.path, "qlora", tmp_path / "qlora-adapter")
    files = sorted(p.name for p in done.out.iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]  # no training state
    card = (done.out / "README.md").read_text()
    assert f"base_model: {finished_run.config().model.name}" in card and "library_name: peft" in card
    assert "rank 4" in card and "nf4" in card and "held-out accuracy" in card and "peak memory" in card
    assert "workbench compare --model" in card  # the command that made it
    saved = finished_run.adapter_dir("qlora") / "adapter_model.safetensors"
    assert (done.out / "adapter_model.safetensors").read_bytes() == saved.read_bytes()


def test_a_16_bit_merge_gives_the_adapter_models_logits(finished_run, tmp_path):
    done = export.export(finished_run.path, "lora", tmp_path / "merged", merge=True, dtype="float32")
    assert done.gap.max_abs < EXACT and done.gap.top1_agreement == 1.0
    plain = AutoModelForCausalLM.from_pretrained(done.out)  # plain transformers, no peft
    assert not any("lora" in name for name, _ in plain.named_parameters())
    reference = _adapter_model(finished_run, "lora")
    for ids in _ids(finished_run):
        assert torch.allclose(_logits(plain, ids), _logits(reference, ids), atol=EXACT)
    gap = json.loads((done.out / "merge_gap.json").read_text())
    assert gap["max_abs"] == done.gap.max_abs and "The merge" in (done.out / "README.md").read_text()
    assert (done.out / "chat_template.jinja").is_file() or "chat_template" in (
        done.out / "tokenizer_config.json"
    ).read_text()


def test_a_bfloat16_merge_is_close_and_saved_in_bfloat16(finished_run, tmp_path):
    done = export.export(finished_run.path, "lora", tmp_path / "bf16", merge=True)
    assert done.dtype == "bfloat16" and done.gap.max_abs < BF16
    assert json.loads((done.out / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_4_bit_merge_goes_into_the_dequantized_base_and_its_gap_is_measured(finished_run, tmp_path):
    done = export.export(finished_run.path, "qlora", tmp_path / "q", merge=True, dtype="float32")
    # on the CPU the 4-bit layers compute with the dequantized weights, so the merge into them is near exact;
    # merged into the original (unquantized) weights instead it would be the quantization error away
    assert done.gap.max_abs < EXACT and done.gap.top1_agreement == 1.0
    assert "quantization_config" not in json.loads((done.out / "config.json").read_text())
    plain = AutoModelForCausalLM.from_pretrained(done.out)
    reference = _adapter_model(finished_run, "qlora")
    ids = _ids(finished_run)[0]
    assert torch.allclose(_logits(plain, ids), _logits(reference, ids), atol=EXACT)


def test_an_8_bit_merge_has_a_bounded_gap(finished_run, tmp_path):
    done = export.export(finished_run.path, "lora8", tmp_path / "int8", merge=True, dtype="float32")
    assert 0 < done.gap.mean_abs < INT8_MEAN and done.gap.top1_agreement >= 0.9


def test_bad_exports_are_refused_with_what_to_do(finished_run, tmp_path, capsys):
    with pytest.raises(ValueError, match="no adapter to export"):
        export.export(finished_run.path, "base", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export.export(finished_run.path, "lora", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="dtype"):
        export.export(finished_run.path, "lora", tmp_path / "y", merge=True, dtype="int3")
    code = cli.main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no finished run" in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
