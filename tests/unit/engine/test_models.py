"""Loading (engine.models): the device and dtype (bfloat16 for a 16-bit base on a CPU that has it natively), 16, 8
and 4 bits, the 4-bit repack switched off, weight bytes, attaching LoRA and counting its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import family_folder

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


def test_the_cpu_is_asked_unless_the_answer_is_pinned(monkeypatch):
    monkeypatch.delenv(models.NATIVE_BF16_ENV, raising=False)
    for has_bf16, has_amx, want in [(True, False, True), (False, True, True), (False, False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=has_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=has_amx: v, raising=False)
        assert models.native_bf16_cpu() is want
    # a pin wins over the probes, either way
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "1")
    assert models.native_bf16_cpu() is True
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "0")
    assert models.native_bf16_cpu() is False


def test_native_bf16_cpu_gets_bfloat16_at_16_bits_and_float32_below(bf16_native):
    assert models.pick_device("cpu").dtype == torch.bfloat16
    assert models.pick_device("cpu", "auto", 16).describe() == "cpu (bfloat16)"
    assert models.pick_device("cpu", "auto", 8).dtype == torch.float32
    assert models.pick_device("cpu", "auto", 4).dtype == torch.float32
    # one setting away, and what is asked for is taken at every width
    assert models.pick_device("cpu", "float32").dtype == torch.float32
    assert models.pick_device("cpu", "bfloat16", 4).dtype == torch.bfloat16


def test_other_cpus_keep_float32(bf16_emulated):
    for bits in (16, 8, 4):
        assert models.pick_device("cpu", "auto", bits).dtype == torch.float32


def test_a_gpu_is_not_affected_by_the_cpu_choice(bf16_native, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert models.pick_device("cuda", "auto", 16).dtype == torch.float16
    assert models.pick_device("cuda", "auto", 4).dtype == torch.float16


def test_loading_follows_the_choice(bf16_native, tiny_model_dir):
    lora, choice = models.load_model(tiny_model_dir, bits=16, device="cpu")
    assert choice.dtype == torch.bfloat16
    assert lora.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    qlora, choice4 = models.load_model(tiny_model_dir, bits=4, device="cpu")
    assert choice4.dtype == torch.float32
    q_proj = qlora.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "Linear4bit" and q_proj.compute_dtype == torch.float32
    assert qlora.model.embed_tokens.weight.dtype == torch.float32


def test_weight_bytes_counts_the_quantization_constants(load_tiny):
    """get_memory_footprint sums parameters() and buffers(); bitsandbytes keeps a 4-bit weight's absmax (8-bit
    with double quantization, plus float32 nested absmax, code tables and offset) in quant_state and an 8-bit
    weight's float32 row scales in SCB. weight_bytes counts them: it equals the bytes of the state dict (where
    each double-quantized layer's float32 offset travels inside the JSON blob: 4 bytes more per layer)."""
    for bits in (4, 8):
        model = load_tiny(bits)
        counted = models.weight_bytes(model)
        footprint = model.get_memory_footprint()
        stored = {}
        for key, t in model.state_dict().items():
            if "quant_state.bitsandbytes" in key or key.endswith("weight_format"):
                continue  # a JSON blob / format flag written for serialization, not held as a tensor
            stored.setdefault(t.data_ptr(), t.nbytes)  # tied embeddings once
        assert counted > footprint, bits
        offsets = 4 * sum(type(p).__name__ == "Params4bit" for p in model.parameters())
        assert counted == sum(stored.values()) + sum(b.nbytes for b in model.buffers()) + offsets, bits
    assert models.weight_bytes(load_tiny(16)) == load_tiny(16).get_memory_footprint()


def test_the_head_runs_on_the_scored_positions_only(load_tiny, tiny_tokenizer, tiny_task):
    """models.scored_loss: transformers' own loss and gradients, from the output head applied to the labelled
    positions only (on answer-only data a few per example, not every position)."""
    from workbench.data import collate, encode

    model = models.attach_lora(load_tiny(16, dtype="float32"), LoraSettings(rank=4), 16)
    batch = collate(encode(tiny_tokenizer, tiny_task[:4], 32).rows, tiny_tokenizer.pad_token_id)
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        torch.manual_seed(0)  # the same LoRA dropout masks on both passes
        ours = models.scored_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        ours.backward()
        ours_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad()
        torch.manual_seed(0)
        theirs = model(**batch).loss
        theirs.backward()
    finally:
        handle.remove()
    scored = int((batch["labels"][:, 1:] != -100).sum())
    assert seen[0] == (scored,) + seen[0][1:] and scored < batch["input_ids"].numel() / 3
    assert seen[1][:2] == batch["input_ids"].shape  # transformers: every position
    torch.testing.assert_close(ours, theirs)
    for mine, theirs_grad in zip(ours_grads, (p.grad for p in model.parameters() if p.requires_grad)):
        torch.testing.assert_close(mine, theirs_grad)


@pytest.mark.parametrize(("family", "released"), [("qwen3_moe", True), ("llama", False)])
def test_a_16_bit_mixture_of_experts_lets_the_checkpoint_go(family, released, family_dirs, monkeypatch):
    """Its experts are stacked from per-expert tensors at load: the weights are copied out of the file's mapping, so
    the pages read to stack them are not held beside the stacks (docs/estimator.md: 216 MiB of a 146M model). A
    dense model keeps its weights mapped: the file's pages, held once and shared between processes."""
    from workbench.engine import models

    calls = []
    real = models.release_checkpoint_pages
    monkeypatch.setattr(models, "release_checkpoint_pages", lambda m: calls.append(m) or real(m))
    model, _ = models.load_model(family_folder(family_dirs, family), bits=16, device="cpu", dtype="float32")
    assert bool(calls) is released


# --------------------------------------------------------------------------- Falcon's FalconLinear at 8 and 4 bits
FALCON_LAYERS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def _tiny_falcon(folder: Path, bias: bool) -> Path:
    from helpers import family_config
    from transformers import AutoModelForCausalLM

    config = family_config("falcon", bias=bias)
    config.initializer_range = 0.1  # as the family matrix: logits far enough apart to compare
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in _falcon_layers(model).values():
            if layer.bias is not None:
                layer.bias.normal_(0, 0.1)  # Falcon initialises biases to zero, which would hide how they are added
    model.save_pretrained(folder)
    return folder


def _falcon_layers(model) -> dict[str, torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: m for n, m in base.named_modules() if n.rsplit(".", 1)[-1] in FALCON_LAYERS}


@pytest.mark.parametrize("bias", [False, True])
def test_falcon_built_with_torch_linear_gives_the_same_logits(tmp_path, bias):
    """FalconLinear computes input @ W.T (+ b); built as torch's Linear (what 8 and 4 bits do before
    bitsandbytes replaces it), the 16-bit model gives the same float32 logits: bit for bit without a bias (one op,
    a matmul with W.T), and with one to float32 rounding (Linear adds the bias inside the matmul; seen: bit for bit
    on this CPU in float32, up to 0.016 apart in bfloat16, where FalconLinear rounds twice; only 8 and 4 bits build
    it so, and there bitsandbytes' layer replaces it)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.falcon import modeling_falcon

    folder = _tiny_falcon(tmp_path / "falcon", bias)
    original = AutoModelForCausalLM.from_pretrained(folder).eval()
    with models.built_as_linear("falcon"):
        converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert modeling_falcon.FalconLinear.__name__ == "FalconLinear"  # the class is back once loaded
    before, after = _falcon_layers(original), _falcon_layers(converted)
    assert len(before) == 8 and list(before) == list(after)  # 4 kinds x 2 blocks, same names
    assert {type(m) for m in before.values()} == {modeling_falcon.FalconLinear}
    assert {type(m) for m in after.values()} == {torch.nn.Linear}
    assert all((m.bias is not None) == bias for m in after.values())
    for name, m in after.items():
        assert torch.equal(m.weight, before[name].weight)  # the checkpoint's weights, not fresh ones
        assert not bias or (torch.equal(m.bias, before[name].bias) and m.bias.abs().max() > 0.05)
    ids = torch.tensor([[5, 17, 42, 99, 3, 64, 120, 7]])
    with torch.no_grad():
        want, got = original(input_ids=ids).logits, converted(input_ids=ids).logits
    assert want.abs().max() > 0.1  # logits worth comparing
    if bias:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    else:
        assert torch.equal(got, want)


def test_another_family_is_built_as_it_always_was(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    with models.built_as_linear("llama"), models.built_as_linear(None):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear


@pytest.mark.parametrize("bits", [8, 4])
def test_falcon_quantizes_its_four_layer_kinds_and_lora_attaches_to_them(tmp_path, bits):
    """At 8 and 4 bits every FalconLinear is a bitsandbytes layer holding the checkpoint's weights, and peft's
    all-linear puts its quantized LoRA layer on each of them."""
    import bitsandbytes as bnb
    from peft.tuners import lora

    folder = _tiny_falcon(tmp_path / "falcon", bias=False)
    model16, _ = models.load_model(folder, bits=16, device="cpu", dtype="float32")
    model, _ = models.load_model(folder, bits=bits, device="cpu", dtype="float32")
    bnb_cls, lora_cls = (bnb.nn.Linear8bitLt, lora.Linear8bitLt) if bits == 8 else (bnb.nn.Linear4bit, lora.Linear4bit)
    layers = _falcon_layers(model)
    assert len(layers) == 8 and all(type(m) is bnb_cls for m in layers.values())
    if bits == 4:
        assert all(m.support_avx512bf16_for_cpu is False for m in layers.values())
    # what each holds is the checkpoint's weight quantized by bitsandbytes itself, by hand
    for name, layer in layers.items():
        weight = _falcon_layers(model16)[name].weight.detach()
        if bits == 4:
            packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
            assert torch.equal(packed, layer.weight.data), name
            got = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
            assert torch.equal(got, bnb.functional.dequantize_4bit(packed, state)), name
        else:
            rows, scales, _ = bnb.functional.int8_vectorwise_quant(weight.to(torch.float16))
            assert torch.equal(rows, layer.weight.data) and torch.equal(scales, layer.weight.SCB), name
    peft_model = models.attach_lora(model, LoraSettings(rank=4), bits=bits)
    adapted = _falcon_layers(peft_model)
    assert len(adapted) == 8 and all(type(m) is lora_cls for m in adapted.values())
    assert all(type(m.base_layer) is bnb_cls for m in adapted.values())
