"""GPU checks, on the tiny in-process model only (no embedded model, no network), so the file runs as one
short script on a CUDA machine:  python -m pytest tests/test_cuda.py -m cuda -q
Every test skips cleanly where torch sees no CUDA device."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import lora_b

from workbench.core.config import LoraSettings, QuantSettings, TrainSettings
from workbench.engine import generate as gen
from workbench.engine import models
from workbench.engine.train import seed_everything, train
from workbench.machine.memory import MemoryMonitor, MiB

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() False)"),
]
FAST = dict(steps=4, lr=3e-2, batch_size=4, seq_len=32, warmup_steps=0)


def expected_dtype():
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def lora_on_cuda(tiny_model_dir, bits, quant=None):
    model, choice = models.load_model(tiny_model_dir, bits=bits, quant=quant, device="cuda")
    seed_everything(0)
    return models.attach_lora(model, LoraSettings(rank=4), bits), choice


def assert_trains(model, tokenizer, task):
    result = train(model, tokenizer, task, TrainSettings(**FAST))
    assert result.steps_done == FAST["steps"] and not result.stopped
    assert all(math.isfinite(x) for x in result.losses), result.losses
    assert max(result.losses) - min(result.losses) > 1e-3  # the loss moves
    assert all(t.abs().max() > 0 for t in lora_b(model).values())  # every lora_B moved off zero
    assert result.peak_memory_bytes > 0  # the CUDA allocator's own counter
    return result


def test_pick_device_auto_is_cuda_in_half_precision():
    choice = models.pick_device("auto")
    assert choice.type == "cuda"
    assert choice.dtype == expected_dtype()
    assert choice.dtype in (torch.bfloat16, torch.float16)
    assert choice == models.pick_device("cuda")
    assert choice.describe().startswith("cuda (") and str(choice.dtype).replace("torch.", "") in choice.describe()


def test_16bit_on_cuda_trains(tiny_model_dir, tiny_tokenizer, tiny_task):
    model, choice = lora_on_cuda(tiny_model_dir, 16)
    base = model.get_base_model()
    assert base.model.embed_tokens.weight.device.type == "cuda"
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == choice.dtype
    assert_trains(model, tiny_tokenizer, tiny_task)


def test_4bit_nf4_double_quant_on_cuda_trains(tiny_model_dir, tiny_tokenizer, tiny_task):
    import bitsandbytes as bnb

    model, choice = lora_on_cuda(tiny_model_dir, 4, QuantSettings(bits=4, quant_type="nf4", double_quant=True))
    layer = model.get_base_model().model.layers[0].mlp.up_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.device.type == "cuda"
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
    assert layer.compute_dtype == choice.dtype
    # generate first (a no-grad forward), then train: the order that trips the CPU repack
    out = gen.generate(model, tiny_tokenizer, ["Review: superb"], gen.DecodeSettings(max_new_tokens=3))
    assert len(out) == 1
    assert_trains(model, tiny_tokenizer, tiny_task)


def test_8bit_on_cuda_trains(tiny_model_dir, tiny_tokenizer, tiny_task):
    import bitsandbytes as bnb

    model, _ = lora_on_cuda(tiny_model_dir, 8)
    layer = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear8bitLt) and layer.weight.device.type == "cuda"
    assert_trains(model, tiny_tokenizer, tiny_task)


def test_weight_bytes_on_cuda_shrink_with_bits(tiny_model_dir):
    sizes = {
        bits: models.weight_bytes(models.load_model(tiny_model_dir, bits=bits, device="cuda")[0]) for bits in (16, 8, 4)
    }
    assert sizes[4] < sizes[8] < sizes[16]


def test_memory_monitor_on_cuda():
    device = torch.device("cuda", torch.cuda.current_device())
    mon = MemoryMonitor(device).start()
    x = torch.ones(16 * 1024 * 1024, device=device)  # 64 MiB
    torch.cuda.synchronize(device)
    now, peak = mon.now(), mon.peak()
    assert peak > 0 and peak >= now
    assert now >= 64 * MiB
    del x
    torch.cuda.synchronize(device)
    assert mon.now() <= now - 64 * MiB  # allocated counts live tensors only
    assert mon.peak() >= now  # the peak outlives the tensor
    assert mon.stop() >= 64 * MiB


def test_compare_on_cuda(tiny_model_dir, tiny_jsonl, tmp_path):
    from workbench.core.config import RunConfig
    from workbench.experiments.comparison import run_compare
    from workbench.records import runs

    cfg = RunConfig.from_dict(
        {
            "model": {"name": str(tiny_model_dir), "device": "cuda"},
            "lora": {"rank": 4},
            "train": {"steps": 2, "lr": 3e-2, "batch_size": 4, "seq_len": 32, "warmup_steps": 0},
            "task": None,
            "data": str(tiny_jsonl),
            "variants": "base,lora,lora8,qlora",
        }
    )
    result = run_compare(cfg, tmp_path / "run")
    doc = runs.Run(tmp_path / "run").read()
    assert result.device.startswith("cuda (")
    by_name = {v["name"]: v for v in doc["variants"]}
    assert list(by_name) == ["base", "lora", "lora8", "qlora"]
    assert all(v["status"] == "done" and v["peak_memory_bytes"] > 0 for v in doc["variants"])
    assert all(math.isfinite(by_name[n]["final_train_loss"]) for n in ("lora", "lora8", "qlora"))
    assert by_name["qlora"]["weight_bytes"] < by_name["lora8"]["weight_bytes"] < by_name["lora"]["weight_bytes"]
