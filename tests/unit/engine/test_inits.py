"""workbench.engine.inits: each init's start, measured against the 16-bit weights, on the tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import tiny_examples, value_error

from workbench.core.config import LoraSettings, QuantSettings, TrainSettings
from workbench.engine import inits, models

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "q_proj,v_proj,down_proj"}


def attached(load_tiny, bits: int, init: str, **kw):
    lora = LoraSettings(**LORA, init=init, **kw)
    torch.manual_seed(0)
    model = models.attach_lora(load_tiny(bits, dtype="float32"), lora, bits)
    return model, lora


def effective(layer) -> torch.Tensor:
    """What the layer computes with its adapter on: its base weight (dequantized) + scale · B · A."""
    base = layer.get_base_layer().weight
    w = inits.dequantized(base) if type(base).__name__ == "Params4bit" else base.detach().float()
    a, b = layer.lora_A[inits.ADAPTER].weight.float(), layer.lora_B[inits.ADAPTER].weight.float()
    return (w + layer.scaling[inits.ADAPTER] * (b @ a)).detach()


def relative_errors(model, reference) -> dict[str, float]:
    out = {}
    for name, layer in inits.lora_layers(model):
        w = reference.get_submodule(name.removeprefix("base_model.model.")).weight.detach().float()
        out[name] = float((effective(layer) - w).norm() / w.norm())
    return out


def total(errors: dict[str, float]) -> float:
    return sum(errors.values()) / len(errors)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    model, _ = models.load_model(tiny_model_dir, bits=16, device="cpu", dtype="float32")
    return model


@pytest.fixture
def start(load_tiny, tiny_model_dir, reference):
    def run(bits: int, init: str, **kw):
        model, lora = attached(load_tiny, bits, init, **kw)
        report = inits.apply_init(model, lora, QuantSettings(bits=bits), bits, tiny_model_dir)
        return model, report, relative_errors(model, reference)

    return run


def test_gaussian_changes_nothing_and_a_plain_qlora_start_carries_the_rounding_error(start):
    model, report, errors = start(4, "gaussian")
    assert report.layers == 6 and report.start is None
    # B starts at zero, so the model is its 4-bit base: NF4 with blocks of 64 rounds a normal weight by ~10%
    assert 0.05 < total(errors) < 0.2


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_at_16_bits_pissa_and_olora_move_the_top_of_w_into_the_adapter_and_keep_the_model(start, reference, init):
    model, report, errors = start(16, init)
    assert max(errors.values()) < 1e-5  # residual + adapter is W again
    layer = dict(inits.lora_layers(model))["base_model.model.model.layers.0.self_attn.q_proj"]
    w = reference.model.layers[0].self_attn.q_proj.weight
    assert (layer.get_base_layer().weight - w).norm() / w.norm() > 0.05  # the base lost what the adapter holds
    assert report.start is not None and any("lora_B" in k for k in report.start)


def test_loftq_takes_back_part_of_the_4_bit_rounding_error_and_more_with_more_iterations(start):
    plain = total(start(4, "gaussian")[2])
    _, report, one = start(4, "loftq", loftq_iter=1)
    _, again, three = start(4, "loftq", loftq_iter=3)
    assert total(one) < 0.95 * plain
    assert total(three) <= total(one) * 1.001
    # one iteration fits the adapter to the base as loaded, and leaves it; more quantize a new base
    assert report.start is None and again.start is not None
    # the report's totals are the same figures, pooled over the layers
    assert report.error_before == pytest.approx(plain, rel=0.05)
    assert report.error_after == pytest.approx(total(one), rel=0.05) and again.error_after <= report.error_after
    assert "4-bit weight error" in report.describe()


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_on_a_4_bit_base_qpissa_and_olora_quantize_only_the_residual(start, init):
    plain = total(start(4, "gaussian")[2])
    model, _, errors = start(4, init)
    base = model.base_model.model.model.layers[0].self_attn.q_proj.get_base_layer().weight
    assert type(base).__name__ == "Params4bit" and base.quant_type == "nf4" and base.compress_statistics
    if init == "pissa":
        # the top singular directions are held exactly: the residual, and its rounding error, are smaller (about 10%
        # here: a random weight's spectrum is flat; a trained model's is steeper, see docs/guide/inits.md)
        assert total(errors) < 0.95 * plain
    else:
        # OLoRA's first QR columns are not W's largest directions: the residual is about as large as W, and so is
        # its rounding error (OLoRA aims at faster training, not at the quantization gap)
        assert total(errors) == pytest.approx(plain, rel=0.05)


def test_pissa_exact_svd_matches_the_fast_one_closely(start):
    exact = total(start(4, "pissa", pissa_niter=0)[2])
    fast = total(start(4, "pissa", pissa_niter=4)[2])
    assert fast == pytest.approx(exact, rel=0.05)


def test_eva_starts_a_from_the_inputs_and_keeps_the_model(load_tiny, tiny_model_dir, tiny_tokenizer, reference):
    model, lora = attached(load_tiny, 16, "eva")
    before = {n: layer.lora_A[inits.ADAPTER].weight.detach().clone() for n, layer in inits.lora_layers(model)}
    batches = inits.init_batches(tiny_tokenizer, tiny_examples(), TrainSettings(batch_size=4, seq_len=32), lora.rank)
    report = inits.apply_init(model, lora, QuantSettings(bits=16), 16, tiny_model_dir, batches=batches)
    assert "forward passes" in report.notes[0] and report.start is None
    for n, layer in inits.lora_layers(model):
        a = layer.lora_A[inits.ADAPTER].weight
        assert not torch.allclose(a, before[n])
        # EVA's A rows are orthonormal directions of the layer's inputs
        assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4)
    assert max(relative_errors(model, reference).values()) < 1e-6  # B is still zero
    assert model.peft_config[inits.ADAPTER].init_lora_weights is True  # saved as a plain LoRA adapter


def test_eva_refuses_batches_with_fewer_tokens_than_the_rank(tiny_tokenizer):
    message = value_error(
        inits.init_batches, tiny_tokenizer, tiny_examples()[:1], TrainSettings(batch_size=1, seq_len=32), 64
    )
    assert message.startswith("init: eva needs at least 64 tokens") and "batch_size" in message


def test_an_init_that_cannot_work_is_refused_before_anything_loads(tiny_model_dir, tmp_path):
    assert "works on 4-bit bases" in value_error(inits.check_init, LoraSettings(init="loftq"), tiny_model_dir, 16)
    quantized = tmp_path / "quantized"
    shutil.copytree(tiny_model_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))
    message = value_error(inits.check_init, LoraSettings(init="pissa"), quantized, 4)
    assert "holds only quantized ones" in message and "init gaussian or eva" in message
    inits.check_init(LoraSettings(init="pissa"), quantized, 16)  # at 16 bits peft starts it from the loaded weights
    unsafe = tmp_path / "bin"
    shutil.copytree(tiny_model_dir, unsafe)
    for f in unsafe.glob("*.safetensors"):
        f.unlink()
    assert ".safetensors" in value_error(inits.check_init, LoraSettings(init="olora"), unsafe, 4)


def test_the_checkpoint_weights_are_the_models_own(tiny_model_dir, reference, load_tiny):
    model, _ = attached(load_tiny, 4, "gaussian")
    weights = inits.CheckpointWeights(tiny_model_dir, model)
    for name, layer in inits.lora_layers(model):
        w = reference.get_submodule(name.removeprefix("base_model.model.")).weight
        assert torch.equal(weights.weight(name, layer), w.float())
    assert weights.copy is None  # found in the file, no 16-bit copy loaded
