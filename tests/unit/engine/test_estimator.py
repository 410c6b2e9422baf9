"""The memory estimate before any weight loads (engine.estimator): its components on the tiny model, bits per
parameter, what checkpointing, batch, length and targets change, the CPU-only terms, and the estimate against the
weights a loaded model holds."""

from __future__ import annotations

import pytest
from helpers import FAMILIES, NOT_QUANTIZED, family_folder

from workbench.engine import estimator, models
from workbench.engine.estimator import bits_per_param, estimate
from workbench.engine.layout import ModelLayout
from workbench.engine.models import load_model, weight_bytes
from workbench.engine.resolve import model_config_for
from workbench.machine.memory import MiB

SMOL = "smollm2-135m"  # the shipped config of the embedded model's architecture


def test_activation_terms_on_the_tiny_config(tiny_model_config):
    """Per token, summed over the tiny model's 2 blocks (hidden 64, intermediate 128, 4 heads of 16, 2 KV
    heads), rank 4 on all 14 linear layers; float32 on the CPU."""
    t = estimator.activation_bytes_per_token(tiny_model_config, bits=8, rank=4, targets="all-linear")
    assert t["norms"] == 2 * 2 * (64 + 1) * 4  # each norm's input and rsqrt, 2 per block
    assert t["attention"] == 2 * ((2 * 4 + 2 * 2) * 16 * 4 + 4 * 4)  # q, out at 4 heads; k, v at 2; logsumexp
    assert t["mlp"] == 2 * 3 * 128 * 4  # gate's output, silu of it, up's output
    # dropped input + float32 dropout mask per adapted layer (the first block's q/k/v read an input that needs no
    # gradient: no mask kept), plus lora_A's rank-4 output
    inputs = 2 * (6 * 64 + 128)
    assert t["lora"] == inputs * 8 - 3 * 64 * 4 + 14 * 4 * 4
    # LLM.int8 layers keep their input once per distinct input: q/k/v's and gate/up's (normed hidden states),
    # down's (intermediate), not o's (the attention output already kept); the first block's q/k/v input not
    assert t["8-bit base inputs"] == (2 * (64 + 64 + 128) - 64) * 4
    gpu = estimator.activation_bytes_per_token(
        tiny_model_config, bits=16, rank=4, targets="all-linear", device_type="cuda"
    )
    assert gpu["attention"] == 2 * ((2 * 4 + 2 * 2) * 16 * 2 + 4 * 4)  # bf16 compute
    assert gpu["lora"] == inputs * 5 - 3 * 64 + 14 * 4 * 4  # float32 input, one-byte mask (fused dropout)
    assert "8-bit base inputs" not in gpu


def test_loss_term_is_three_float32_vocabulary_tensors(tiny_model_config):
    for device in ("cpu", "cuda"):
        c = estimate(tiny_model_config, bits=16, rank=4, batch_size=3, seq_len=20, device_type=device).components
        assert c["logits and loss"] == 3 * 20 * tiny_model_config.vocab_size * 12, device
    # only the scored positions: the output head runs on those (models.scored_loss)
    c = estimate(tiny_model_config, bits=16, rank=4, batch_size=3, seq_len=20, scored_tokens=7).components
    assert c["logits and loss"] == 7 * tiny_model_config.vocab_size * 12
    # evaluation: the head's output, its float32 copy and log-softmax, at every scored position
    ev = estimate(tiny_model_config, bits=16, rank=4, batch_size=3, seq_len=20, train=False).components
    assert ev["logits and loss"] == 3 * 19 * tiny_model_config.vocab_size * (4 + 4)  # float32: no copy to make


def test_glibc_adds_what_it_keeps_of_the_activations_to_cpu_training_only():
    """A process on glibc as it is (no fast allocator preloaded) is estimated for glibc: shares of the activations
    and of the loss's tensors on top (fitted on glibc runs, docs/benchmarks.md); evaluation, GPUs and the other
    allocators: nothing."""
    from workbench.engine.estimator import GLIBC_KEPT_ACTIVATIONS, GLIBC_KEPT_LOSS

    cfg = model_config_for(SMOL)
    kw = dict(bits=4, rank=8, batch_size=8, seq_len=64)
    fast, glibc = estimate(cfg, **kw), estimate(cfg, allocator="glibc", **kw)
    kept = glibc.components["kept by glibc (freed activations)"]
    c = fast.components
    assert kept == int(GLIBC_KEPT_ACTIVATIONS * c["activations"] + GLIBC_KEPT_LOSS * c["logits and loss"])
    assert glibc.total == fast.total + kept
    for other in ("tcmalloc", "mimalloc", "glibc (mmap threshold fixed)"):
        assert estimate(cfg, allocator=other, **kw).components == fast.components
    assert estimate(cfg, allocator="glibc", train=False, **kw).components == estimate(cfg, train=False, **kw).components
    assert (
        estimate(cfg, allocator="glibc", device_type="cuda", **kw).total
        == estimate(cfg, device_type="cuda", **kw).total
    )


def test_runtime_and_loading_terms_are_cpu_only():
    cfg = model_config_for(SMOL)
    cpu = estimate(cfg, bits=4, rank=16, batch_size=8, seq_len=64).components
    gpu = estimate(cfg, bits=4, rank=16, batch_size=8, seq_len=64, device_type="cuda").components
    assert cpu["runtime (CPU)"] == estimator.CPU_RUNTIME_BYTES
    assert estimate(cfg, bits=16, rank=16, train=False).components["runtime (CPU)"] == estimator.CPU_EVAL_RUNTIME_BYTES
    assert "runtime (CPU)" not in gpu and not any(k.startswith("loading") for k in gpu)
    assert not any(k.startswith("loading") for k in cpu)  # 8 x 64 tokens of training outweigh the load


def test_loading_sets_the_peak_of_a_small_kbit_cpu_run():
    """At 4 bits on the CPU the whole checkpoint is read while quantizing: for a small step the load is the peak
    (measured 716-743 MiB for the embedded model, whose float32 checkpoint is 513 MiB)."""
    cfg = model_config_for(SMOL)  # no dtype in the shipped config: a float32 checkpoint, as the embedded one
    small = estimate(cfg, bits=4, rank=4, targets=["q_proj", "v_proj"], batch_size=1, seq_len=32)
    weights = sum(v for k, v in small.components.items() if k.startswith("weights"))
    checkpoint = estimator.parameter_count(cfg) * 4  # float32 on disk
    assert small.total == checkpoint + weights + estimator.CPU_LOAD_RUNTIME_BYTES
    assert "loading (checkpoint read while quantizing)" in small.components and small.notes
    assert 700 * MiB < small.total < 760 * MiB
    assert not any(k.startswith("loading") for k in estimate(cfg, bits=16, rank=4, batch_size=1, seq_len=32).components)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_quantized_layers_hold_what_the_estimate_says(family, family_dirs):
    """bitsandbytes quantizes exactly the layers the layout counts (Conv1D included; stacked experts and routers
    left in full precision): the 4-bit model's weight bytes are the estimate's weights."""
    import bitsandbytes as bnb

    folder = family_folder(family_dirs, family)
    layout = ModelLayout.for_model(str(folder))
    if family in NOT_QUANTIZED:  # one line that says so, before anything loads
        for bits in (8, 4):
            with pytest.raises(ValueError, match=NOT_QUANTIZED[family]) as refused:
                load_model(folder, bits=bits, device="cpu")
            assert "\n" not in str(refused.value)
        return
    for bits, cls in ((8, bnb.nn.Linear8bitLt), (4, bnb.nn.Linear4bit)):
        model, _ = load_model(folder, bits=bits, device="cpu")
        quantized = sorted(n for n, m in model.named_modules() if isinstance(m, cls))
        assert quantized == sorted(lin.name for lin in layout.linears)
        est = estimate(layout, bits=bits, rank=4, train=False, batch_size=1, seq_len=8)
        # at evaluation the full-precision layers stay in the base's dtype (float32 here)
        expected = est.components["weights (quantized layers)"] + est.components["weights (kept in full precision)"]
        assert weight_bytes(model) == pytest.approx(expected, rel=0.02), bits


TINY_LINEAR_WEIGHTS = 73_728  # the 14 linear layers inside the blocks


def tiny_params(config) -> int:
    # embeddings vocab x 64 (tied to the head, so counted once) + 2 blocks of 36,992 + the final norm
    return config.vocab_size * 64 + 2 * 36_992 + 64


def test_bits_per_param():
    assert bits_per_param(4, True) == pytest.approx(4.127, abs=5e-4)  # 4 + 8/64 + 32/(64*256)
    assert bits_per_param(4, False) == 4.5  # 4 + one fp32 absmax per 64 weights
    assert bits_per_param(8) == 8.0
    assert bits_per_param(16) == 16.0


def test_training_estimate_components(tiny_model_config):
    est = estimate(tiny_model_config, bits=16, rank=4, batch_size=2, seq_len=16)
    c = est.components
    assert set(c) == {
        "weights",
        "adapter",
        "gradients",
        "optimizer state",
        "activations",
        "logits and loss",
        "runtime (CPU)",
    }
    assert c["weights"] == tiny_params(tiny_model_config) * 4  # fp32 on the CPU, tied embeddings once
    assert c["adapter"] == c["gradients"] == 4 * 2048 * 4  # rank x sum(in+out) x fp32
    assert c["optimizer state"] == 2 * c["gradients"]  # AdamW: two moments
    assert c["activations"] > 0
    assert est.total == sum(c.values())
    d = est.to_dict()
    assert d["total"] == est.total and d["components"] == c
    assert est.table().splitlines()[-1].startswith("total")
    assert len(est.table().splitlines()) == len(c) + 1


def test_estimate_matches_the_loaded_model(tiny_model_config, load_tiny):
    """Weights estimated from the config alone land near what bitsandbytes really stores (as loaded: before
    peft's k-bit preparation casts what stays unquantized to float32, which train=True counts)."""
    for bits in (16, 8, 4):
        for dtype in ("float32", "bfloat16"):
            est = estimate(tiny_model_config, bits=bits, rank=4, batch_size=1, seq_len=8, dtype=dtype, train=False)
            weights = sum(v for k, v in est.components.items() if k.startswith("weights"))
            measured = models.weight_bytes(load_tiny(bits, dtype=dtype))
            assert weights == pytest.approx(measured, rel=0.1), (bits, dtype)


def test_four_bit_weights_are_smaller(tiny_model_config):
    def weights(bits, dq=True):
        est = estimate(tiny_model_config, bits=bits, rank=4, batch_size=1, seq_len=8, double_quant=dq)
        return sum(v for k, v in est.components.items() if k.startswith("weights"))

    assert weights(4, dq=False) < weights(8) < weights(16)
    # double quantization saves 0.373 bits per weight but stores a 256-entry float32 code table per layer:
    # on the tiny model's ~5,000-weight layers that costs more than it saves (as bitsandbytes really stores
    # it: models.weight_bytes measures 100,016 bytes with it, 89,024 without), on real layers far less
    assert weights(4) > weights(4, dq=False)
    real = model_config_for("smollm2-135m")
    dq, plain = (
        sum(
            v
            for k, v in estimate(real, bits=4, rank=4, batch_size=1, seq_len=8, double_quant=q).components.items()
            if k.startswith("weights")
        )
        for q in (True, False)
    )
    assert dq < plain
    est4 = estimate(tiny_model_config, bits=4, rank=4, batch_size=1, seq_len=8)
    # bits per weight, plus each of the 14 layers' own code tables (NF4's 16 entries, the nested 256, an offset)
    assert est4.components["weights (quantized layers)"] == int(
        TINY_LINEAR_WEIGHTS * bits_per_param(4) / 8 + 14 * (16 + 256 + 1) * 4
    )
    assert (
        est4.components["weights (kept in full precision)"]
        == (tiny_params(tiny_model_config) - TINY_LINEAR_WEIGHTS) * 4
    )


def test_gradient_checkpointing_lowers_activations(tiny_model_config):
    plain = estimate(tiny_model_config, bits=16, rank=4, batch_size=4, seq_len=64)
    ckpt = estimate(tiny_model_config, bits=16, rank=4, batch_size=4, seq_len=64, gradient_checkpointing=True)
    assert ckpt.components["activations"] < plain.components["activations"]
    assert {k: v for k, v in ckpt.components.items() if k != "activations"} == {
        k: v for k, v in plain.components.items() if k != "activations"
    }


def test_activations_grow_with_batch_and_sequence(tiny_model_config):
    def act(**kw):
        return estimate(tiny_model_config, bits=16, rank=4, **kw).components["activations"]

    assert act(batch_size=4, seq_len=32) == pytest.approx(2 * act(batch_size=2, seq_len=32), rel=1e-6)
    assert act(batch_size=2, seq_len=64) == pytest.approx(2 * act(batch_size=2, seq_len=32), rel=1e-6)


def test_targets_shrink_the_adapter(tiny_model_config):
    full = estimate(tiny_model_config, bits=16, rank=4, batch_size=1, seq_len=8)
    qv = estimate(tiny_model_config, bits=16, rank=4, targets=["q_proj", "v_proj"], batch_size=1, seq_len=8)
    assert qv.components["adapter"] == 4 * 2 * (128 + 96) * 4
    assert qv.components["adapter"] < full.components["adapter"]


def test_inference_estimate_has_no_training_state(tiny_model_config):
    est = estimate(tiny_model_config, bits=16, rank=4, batch_size=2, seq_len=16, train=False)
    assert set(est.components) == {"weights", "activations", "logits and loss", "runtime (CPU)"}
    assert est.notes and "inference" in est.notes[0]
    base = estimate(tiny_model_config, bits=16, rank=None, batch_size=2, seq_len=16)
    assert set(base.components) == {"weights", "activations", "logits and loss", "runtime (CPU)"}
    gpu = estimate(tiny_model_config, bits=16, rank=4, batch_size=2, seq_len=16, train=False, device_type="cuda")
    assert set(gpu.components) == {"weights", "activations", "logits and loss"}


def test_cuda_estimate_uses_half_precision(tiny_model_config):
    cpu = estimate(tiny_model_config, bits=16, rank=4, batch_size=1, seq_len=8, device_type="cpu")
    gpu = estimate(tiny_model_config, bits=16, rank=4, batch_size=1, seq_len=8, device_type="cuda")
    assert gpu.components["weights"] * 2 == cpu.components["weights"]
    assert gpu.components["adapter"] == cpu.components["adapter"]  # the adapter stays fp32


def test_each_init_counts_its_work_and_its_largest_layer():
    from workbench.core.config import DEFAULT_MODEL

    layout = ModelLayout.for_model(DEFAULT_MODEL)  # the embedded model's config alone: 210 layers, 576 to 1536 wide
    assert estimator.init_cost(layout, init="gaussian") is None
    fast = estimator.init_cost(layout, init="pissa", rank=8, pissa_niter=4)
    # 2·m·n·r·(2·niter + 2) per layer: 30 blocks of q, o (576²), k, v (192×576) and gate, up, down (1536×576)
    per_block = 2 * 8 * 10 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576)
    assert fast.layers == 210 and fast.flops == pytest.approx(30 * per_block)
    # the largest layer (1536×576) twice in float32 and its rank-8 sketches
    assert fast.extra_bytes == (2 * 1536 * 576 + 2 * (1536 + 576) * 8) * 4
    exact = estimator.init_cost(layout, init="pissa", rank=8, pissa_niter=0)
    assert exact.flops == pytest.approx(
        30 * (2 * 12 * 576**3 + 2 * (4 * 576 * 192**2 + 8 * 192**3) + 3 * 3.57e9), rel=1e-3
    )
    # peft's own inits measured on one thread of the 2-core test machine (docs/estimator.md): 2.8 s, 17.7 s, 5.3 s
    olora = estimator.init_cost(layout, init="olora", rank=8)
    for cost, measured in ((fast, 2.84), (exact, 17.66), (olora, 5.33)):
        assert cost.seconds == pytest.approx(measured, rel=0.25)
    loftq = estimator.init_cost(layout, init="loftq", rank=8, bits=4, loftq_iter=3)
    assert loftq.flops > 3 * exact.flops and "3 times" in loftq.line()
    assert fast.line() == "init pissa: one fast SVD per layer (210 layers), about 3 s and 7 MiB at start"
    assert estimator.init_cost(layout, init="pissa", device_type="cuda").seconds is None  # no GPU measured
    with pytest.raises(ValueError, match="init must be one of"):
        estimator.init_cost(layout, init="lofty")


def test_the_peak_covers_the_init_when_it_is_larger_than_a_step(tiny_model_config):
    # a step on one short sequence is smaller than EVA's forward over a training batch plus its kept inputs
    kw = dict(bits=16, rank=4, batch_size=1, seq_len=8, device_type="cuda")
    plain = estimate(tiny_model_config, **kw)
    eva = estimator.init_cost(tiny_model_config, init="eva", rank=4, batch_size=64, seq_len=256, device_type="cuda")
    with_init = estimate(tiny_model_config, **kw, init=eva)
    start = plain.components["weights"] + plain.components["adapter"] + eva.extra_bytes
    assert start > plain.total and with_init.total == start
    assert with_init.components["init (eva) at start"] == start - plain.total
    small = estimator.init_cost(tiny_model_config, init="olora", rank=4)
    assert estimate(tiny_model_config, **kw, init=small).total == plain.total  # a QR's layer copies fit in a step


def test_eva_is_estimated_over_as_many_batches_as_the_init_reads():
    inits = pytest.importorskip("workbench.engine.inits")  # written beside this estimate (issue 33)
    assert estimator.EVA_BATCHES == inits.EVA_BATCHES
