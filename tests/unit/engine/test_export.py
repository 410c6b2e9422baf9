"""Export: the adapter with a model card, and merged models that plain transformers loads (tiny model)."""

from __future__ import annotations

import json

import pytest
import torch
from test_compare_cli import tiny_config
from transformers import AutoModelForCausalLM

from workbench import cli
from workbench.engine import export
from workbench.experiments import comparison as compare
from workbench.records import runs

# What the merge may change, measured on the tiny model: at 16 bits in float32 the merge is exact to float
# rounding (2e-6 at most); bfloat16 storage rounds each weight (about 3e-2 at most); LLM.int8's matmul
# differs from its dequantized weights (about 0.14 at most, 8e-3 on average).
EXACT = 1e-4
BF16 = 0.1
INT8_MEAN = 0.05


@pytest.fixture(scope="module")
def run(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    cli_args = ["compare", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora,lora8,qlora", steps=6)
    compare.run_compare(cfg, out, command="workbench " + " ".join(cli_args))
    return runs.Run(out)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _ids(run):
    from workbench.engine.export import _eval_rows
    from workbench.engine.models import load_tokenizer

    return _eval_rows(run, load_tokenizer(run.model_path))


def _adapter_model(run, variant):
    from workbench.engine.export import _load_adapter_model

    return _load_adapter_model(run, variant, run.model_path, dequantized=False)


def test_the_adapter_export_has_the_adapter_and_a_model_card(run, tmp_path):
    done = export.export(run.path, "qlora", tmp_path / "qlora-adapter")
    files = sorted(p.name for p in done.out.iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]  # no training state
    card = (done.out / "README.md").read_text()
    assert f"base_model: {run.config().model.name}" in card and "library_name: peft" in card
    assert "rank 4" in card and "nf4" in card and "held-out accuracy" in card and "peak memory" in card
    assert "workbench compare --model" in card  # the command that made it
    saved = run.adapter_dir("qlora") / "adapter_model.safetensors"
    assert (done.out / "adapter_model.safetensors").read_bytes() == saved.read_bytes()


def test_a_16_bit_merge_gives_the_adapter_models_logits(run, tmp_path):
    done = export.export(run.path, "lora", tmp_path / "merged", merge=True, dtype="float32")
    assert done.gap.max_abs < EXACT and done.gap.top1_agreement == 1.0
    plain = AutoModelForCausalLM.from_pretrained(done.out)  # plain transformers, no peft
    assert not any("lora" in name for name, _ in plain.named_parameters())
    reference = _adapter_model(run, "lora")
    for ids in _ids(run):
        assert torch.allclose(_logits(plain, ids), _logits(reference, ids), atol=EXACT)
    gap = json.loads((done.out / "merge_gap.json").read_text())
    assert gap["max_abs"] == done.gap.max_abs and "The merge" in (done.out / "README.md").read_text()
    assert (done.out / "chat_template.jinja").is_file() or "chat_template" in (
        done.out / "tokenizer_config.json"
    ).read_text()


def test_a_bfloat16_merge_is_close_and_saved_in_bfloat16(run, tmp_path):
    done = export.export(run.path, "lora", tmp_path / "bf16", merge=True)
    assert done.dtype == "bfloat16" and done.gap.max_abs < BF16
    assert json.loads((done.out / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_4_bit_merge_goes_into_the_dequantized_base_and_its_gap_is_measured(run, tmp_path):
    done = export.export(run.path, "qlora", tmp_path / "q", merge=True, dtype="float32")
    # on the CPU the 4-bit layers compute with the dequantized weights, so the merge into them is near exact;
    # merged into the original (unquantized) weights instead it would be the quantization error away
    assert done.gap.max_abs < EXACT and done.gap.top1_agreement == 1.0
    assert "quantization_config" not in json.loads((done.out / "config.json").read_text())
    plain = AutoModelForCausalLM.from_pretrained(done.out)
    reference = _adapter_model(run, "qlora")
    ids = _ids(run)[0]
    assert torch.allclose(_logits(plain, ids), _logits(reference, ids), atol=EXACT)


def test_an_8_bit_merge_has_a_bounded_gap(run, tmp_path):
    done = export.export(run.path, "lora8", tmp_path / "int8", merge=True, dtype="float32")
    assert 0 < done.gap.mean_abs < INT8_MEAN and done.gap.top1_agreement >= 0.9


def test_bad_exports_are_refused_with_what_to_do(run, tmp_path, capsys):
    with pytest.raises(ValueError, match="no adapter to export"):
        export.export(run.path, "base", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export.export(run.path, "lora", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="dtype"):
        export.export(run.path, "lora", tmp_path / "y", merge=True, dtype="int3")
    code = cli.main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no finished run" in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_the_cli_exports_and_prints_the_gap(run, tmp_path, capsys):
    assert cli.main(["export", str(run.path), "--variant", "qlora", "--merge", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "merged, bfloat16" in out and "merge gap: on" in out and "next token agrees" in out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m") is not None


def test_the_results_tab_exports_the_chosen_adapter(run, tiny_model_dir, tiny_jsonl):
    from workbench.ui import Workbench

    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=run.path.parent)
    panel = wb.results
    assert panel.export_run.value == run.name and list(panel.export_variant.options) == ["lora", "lora8", "qlora"]
    panel.export_variant.value = "qlora"
    panel.export_merge.value = True
    assert panel.export_model() is None
    assert wb.wait(120)
    assert "wrote" in panel.export_model_info.value and "merge gap" in panel.export_model_info.value
    out = run.path.parent / "exports" / f"{run.name}-qlora-merged"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    panel.refresh()
    assert {r.run for r in panel.rows} == {run.name} and not panel.unreadable  # an export is not a run
