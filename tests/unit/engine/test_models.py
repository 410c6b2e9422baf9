from pathlib import Path

import pytest
import torch

from workbench.core.config import LoraSettings, QuantSettings
from workbench.engine import models

ALL_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
# sum of in+out features over the 7 linear layers of one tiny block (kv width 2 heads x 16 = 32):
# q 64+64, k 64+32, v 64+32, o 64+64, gate 64+128, up 64+128, down 128+64 -> 1024, times 2 layers
LORA_PARAMS_PER_RANK = 2048


# --------------------------------------------------------------------------- devices


def test_pick_device_cpu_is_float32_and_bfloat16_when_asked():
    choice = models.pick_device("cpu")
    assert choice.device == torch.device("cpu") and choice.type == "cpu"
    assert choice.dtype == torch.float32 and choice.describe() == "cpu (float32)"
    bf16 = models.pick_device("cpu", "bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.describe() == "cpu (bfloat16)"
    with pytest.raises(ValueError, match="dtype must be auto, float32, bfloat16 or float16"):
        models.pick_device("cpu", "int4")


def test_pick_device_cuda_without_gpu_says_use_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        models.pick_device("cuda")
    msg = str(info.value)
    assert "cuda" in msg and "cpu" in msg


def test_pick_device_auto_without_accelerators_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.pick_device("auto") == models.pick_device("cpu")


def test_pick_device_mps_unavailable(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="mps"):
        models.pick_device("mps")


def test_pick_device_unknown():
    with pytest.raises(ValueError, match="device"):
        models.pick_device("tpu")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("bits, kind", [(16, "Linear"), (8, "Linear8bitLt"), (4, "Linear4bit")])
def test_load_model_at_each_bit_width(load_tiny, tiny_tokenizer, bits, kind, dtype):
    model = load_tiny(bits, dtype=dtype)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == kind
    assert model.config.use_cache is False
    assert model.model.embed_tokens.weight.dtype == getattr(torch, dtype)
    if bits == 4:
        assert q_proj.compute_dtype == getattr(torch, dtype)  # 4-bit layers compute in the model's dtype
    ids = tiny_tokenizer("Review : superb", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tiny_tokenizer))
    assert torch.isfinite(logits).all()


def test_load_model_passes_quant_settings(load_tiny):
    model = load_tiny(4, quant=QuantSettings(bits=16, quant_type="fp4", double_quant=False))
    state = model.model.layers[0].mlp.up_proj.weight.quant_state
    assert state.quant_type == "fp4"
    assert state.nested is False
    nf4 = load_tiny(4).model.layers[0].mlp.up_proj.weight.quant_state
    assert nf4.quant_type == "nf4" and nf4.nested is True


def test_load_tokenizer_has_pad(tiny_model_dir):
    tok = models.load_tokenizer(tiny_model_dir)
    assert tok.pad_token_id is not None and tok.eos_token == "<|im_end|>"


def test_weight_bytes_shrink_with_bits(load_tiny):
    w16 = models.weight_bytes(load_tiny(16, dtype="float32"))
    w8 = models.weight_bytes(load_tiny(8, dtype="float32"))
    w4 = models.weight_bytes(load_tiny(4, dtype="float32"))
    # seen: 341,568 / 120,384 / 83,520 bytes -> 4-bit is ~0.245 of 16-bit (fp32 on the CPU). The
    # embeddings (kept in fp32) are a large share of so small a model, hence not the ~1/8 of the layers.
    assert w4 < w8 < w16
    assert w4 / w16 < 0.35
    model16 = load_tiny(16, dtype="float32")
    assert w16 == sum(p.numel() * p.element_size() for p in model16.parameters()) + sum(
        b.numel() * b.element_size() for b in model16.buffers()
    )


def test_disable_cpu_repack_counts_4bit_layers(load_tiny):
    import bitsandbytes as bnb

    model = load_tiny(4)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14
    for m in layers:
        m.support_avx512bf16_for_cpu = True
    assert models.disable_cpu_repack(model) == 14
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)
    assert models.disable_cpu_repack(load_tiny(16)) == 0


def test_load_model_4bit_turns_repack_off(load_tiny):
    import bitsandbytes as bnb

    model = load_tiny(4)
    assert all(m.support_avx512bf16_for_cpu is False for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


# --------------------------------------------------------------------------- LoRA


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cpu_load_does_not_keep_the_checkpoint_mapped(tiny_model_dir, bits):
    """Unquantized layers must own their memory: a view into the mmapped float32 checkpoint keeps
    the whole file resident and charges it to the quantized model's memory."""
    import gc

    model, _ = models.load_model(tiny_model_dir, bits=bits, device="cpu")
    gc.collect()
    ckpt = str(next(Path(tiny_model_dir).glob("*.safetensors")).resolve())
    maps = Path("/proc/self/maps").read_text()
    assert ckpt not in maps
    # the tied output head still shares the (now owned) embedding
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    del model


def test_attach_lora_bad_targets_lists_valid_names(load_tiny):
    with pytest.raises(ValueError) as info:
        models.attach_lora(load_tiny(16), LoraSettings(target_modules="q_proj,not_a_module"), 16)
    msg = str(info.value)
    assert msg.startswith("targets:") and "not_a_module" in msg
    for name in ALL_LINEAR:
        assert name in msg
    assert "all-linear" in msg


def test_attach_lora_rank_above_hidden_size(load_tiny):
    with pytest.raises(ValueError) as info:
        models.attach_lora(load_tiny(16), LoraSettings(rank=65), 16)
    assert "rank" in str(info.value) and "64" in str(info.value)
    models.attach_lora(load_tiny(16), LoraSettings(rank=64), 16)  # the edge is allowed


@pytest.mark.parametrize("bits", [16, 4])
def test_attach_lora_trains_only_the_adapter(load_tiny, bits):
    model = models.attach_lora(load_tiny(bits), LoraSettings(rank=4), bits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_trainable, n_total = models.parameter_counts(model)
    assert n_trainable == 4 * LORA_PARAMS_PER_RANK
    assert n_total > n_trainable
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)


def test_parameter_counts_count_4bit_weights_whole(load_tiny):
    # a plain 4-bit model (no adapter yet) stores two weights per byte; the count is still per weight
    assert models.parameter_counts(load_tiny(4))[1] == models.parameter_counts(load_tiny(16))[1]


def test_attach_lora_named_targets_only(load_tiny):
    model = models.attach_lora(load_tiny(16), LoraSettings(rank=2, target_modules="q_proj,v_proj"), 16)
    wrapped = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert wrapped == {"q_proj", "v_proj"}
    # q: 64+64, v: 64+32 per layer, 2 layers
    assert models.parameter_counts(model)[0] == 2 * 2 * (128 + 96)


def test_attach_lora_gradient_checkpointing(load_tiny):
    model = models.attach_lora(load_tiny(16), LoraSettings(rank=2), 16, gradient_checkpointing=True)
    assert model.get_base_model().is_gradient_checkpointing


@pytest.mark.parametrize("bits", [16, 4])
def test_generation_hands_the_output_head_a_contiguous_input(load_tiny, tiny_model_dir, tiny_tokenizer, bits):
    """Why QLoRA answered at 2 tok/s: transformers hands the head hidden[:, -1:, :], a non-contiguous view,
    and torch multiplies a frozen weight by it through expanded copies. load_model's hook makes it
    contiguous; the same model loaded plainly shows the view the hook exists for (so this check can fail)."""
    from transformers import AutoModelForCausalLM

    from workbench.engine.generate import DecodeSettings, generate

    def head_inputs(model) -> list[bool]:
        seen = []
        model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
        generate(model, tiny_tokenizer, ["Review: good", "Review: a much longer prompt here"], DecodeSettings(4))
        return seen

    ours = head_inputs(models.attach_lora(load_tiny(bits), LoraSettings(rank=4), bits))
    assert ours and all(ours)
    plain = head_inputs(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert not all(plain)
