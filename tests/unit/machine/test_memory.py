import time
from pathlib import Path

import pytest

from workbench.core.config import DEFAULT_MODEL
from workbench.engine import models
from workbench.engine.estimator import bits_per_param, estimate
from workbench.engine.resolve import model_config_for
from workbench.machine import memory
from workbench.machine.memory import MemoryMonitor, MiB

TINY_LINEAR_WEIGHTS = 73_728  # the 14 linear layers inside the blocks


def tiny_params(config) -> int:
    # embeddings vocab x 64 (tied to the head, so counted once) + 2 blocks of 36,992 + the final norm
    return config.vocab_size * 64 + 2 * 36_992 + 64


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir):
    return model_config_for(str(tiny_model_dir))


def test_bits_per_param():
    assert bits_per_param(4, True) == pytest.approx(4.127, abs=5e-4)  # 4 + 8/64 + 32/(64*256)
    assert bits_per_param(4, False) == 4.5  # 4 + one fp32 absmax per 64 weights
    assert bits_per_param(8) == 8.0
    assert bits_per_param(16) == 16.0


def test_model_config_for_tiny_folder(tiny_config, load_tiny):
    assert tiny_config.model_type == "llama" and tiny_config.hidden_size == 64 and tiny_config.num_hidden_layers == 2
    assert sum(p.numel() for p in load_tiny(16).parameters()) == tiny_params(tiny_config)


def test_model_config_for_default_model_offline():
    start = time.perf_counter()
    cfg = model_config_for(DEFAULT_MODEL)  # shipped in data/model_configs, no network, no weights
    assert time.perf_counter() - start < 10
    assert cfg.model_type == "llama"
    assert cfg.hidden_size == 576 and cfg.num_hidden_layers == 30


def test_model_config_for_unknown_name():
    with pytest.raises(ValueError) as info:
        model_config_for("nobody-here/no-such-model-xyz")
    assert str(info.value).startswith("model:") and "no-such-model-xyz" in str(info.value)


def test_training_estimate_components(tiny_config):
    est = estimate(tiny_config, bits=16, rank=4, batch_size=2, seq_len=16)
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
    assert c["weights"] == tiny_params(tiny_config) * 4  # fp32 on the CPU, tied embeddings once
    assert c["adapter"] == c["gradients"] == 4 * 2048 * 4  # rank x sum(in+out) x fp32
    assert c["optimizer state"] == 2 * c["gradients"]  # AdamW: two moments
    assert c["activations"] > 0
    assert est.total == sum(c.values())
    d = est.to_dict()
    assert d["total"] == est.total and d["components"] == c
    assert est.table().splitlines()[-1].startswith("total")
    assert len(est.table().splitlines()) == len(c) + 1


def test_estimate_matches_the_loaded_model(tiny_config, load_tiny):
    """Weights estimated from the config alone land near what bitsandbytes really stores (as loaded: before
    peft's k-bit preparation casts what stays unquantized to float32, which train=True counts)."""
    for bits in (16, 8, 4):
        for dtype in ("float32", "bfloat16"):
            est = estimate(tiny_config, bits=bits, rank=4, batch_size=1, seq_len=8, dtype=dtype, train=False)
            weights = sum(v for k, v in est.components.items() if k.startswith("weights"))
            measured = models.weight_bytes(load_tiny(bits, dtype=dtype))
            assert weights == pytest.approx(measured, rel=0.1), (bits, dtype)


def test_four_bit_weights_are_smaller(tiny_config):
    def weights(bits, dq=True):
        est = estimate(tiny_config, bits=bits, rank=4, batch_size=1, seq_len=8, double_quant=dq)
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
    est4 = estimate(tiny_config, bits=4, rank=4, batch_size=1, seq_len=8)
    # bits per weight, plus each of the 14 layers' own code tables (NF4's 16 entries, the nested 256, an offset)
    assert est4.components["weights (quantized layers)"] == int(
        TINY_LINEAR_WEIGHTS * bits_per_param(4) / 8 + 14 * (16 + 256 + 1) * 4
    )
    assert est4.components["weights (kept in full precision)"] == (tiny_params(tiny_config) - TINY_LINEAR_WEIGHTS) * 4


def test_gradient_checkpointing_lowers_activations(tiny_config):
    plain = estimate(tiny_config, bits=16, rank=4, batch_size=4, seq_len=64)
    ckpt = estimate(tiny_config, bits=16, rank=4, batch_size=4, seq_len=64, gradient_checkpointing=True)
    assert ckpt.components["activations"] < plain.components["activations"]
    assert {k: v for k, v in ckpt.components.items() if k != "activations"} == {
        k: v for k, v in plain.components.items() if k != "activations"
    }


def test_activations_grow_with_batch_and_sequence(tiny_config):
    def act(**kw):
        return estimate(tiny_config, bits=16, rank=4, **kw).components["activations"]

    assert act(batch_size=4, seq_len=32) == pytest.approx(2 * act(batch_size=2, seq_len=32), rel=1e-6)
    assert act(batch_size=2, seq_len=64) == pytest.approx(2 * act(batch_size=2, seq_len=32), rel=1e-6)


def test_targets_shrink_the_adapter(tiny_config):
    full = estimate(tiny_config, bits=16, rank=4, batch_size=1, seq_len=8)
    qv = estimate(tiny_config, bits=16, rank=4, targets=["q_proj", "v_proj"], batch_size=1, seq_len=8)
    assert qv.components["adapter"] == 4 * 2 * (128 + 96) * 4
    assert qv.components["adapter"] < full.components["adapter"]


def test_inference_estimate_has_no_training_state(tiny_config):
    est = estimate(tiny_config, bits=16, rank=4, batch_size=2, seq_len=16, train=False)
    assert set(est.components) == {"weights", "activations", "logits and loss", "runtime (CPU)"}
    assert est.notes and "inference" in est.notes[0]
    base = estimate(tiny_config, bits=16, rank=None, batch_size=2, seq_len=16)
    assert set(base.components) == {"weights", "activations", "logits and loss", "runtime (CPU)"}
    gpu = estimate(tiny_config, bits=16, rank=4, batch_size=2, seq_len=16, train=False, device_type="cuda")
    assert set(gpu.components) == {"weights", "activations", "logits and loss"}


def test_cuda_estimate_uses_half_precision(tiny_config):
    cpu = estimate(tiny_config, bits=16, rank=4, batch_size=1, seq_len=8, device_type="cpu")
    gpu = estimate(tiny_config, bits=16, rank=4, batch_size=1, seq_len=8, device_type="cuda")
    assert gpu.components["weights"] * 2 == cpu.components["weights"]
    assert gpu.components["adapter"] == cpu.components["adapter"]  # the adapter stays fp32


def _resident(n_bytes: int):
    """n_bytes of fresh pages, every one touched, straight from the kernel (mmap): a C allocator's cache of
    freed memory (what earlier tests left) cannot serve them without the RSS growing."""
    import mmap

    block = mmap.mmap(-1, n_bytes)
    for offset in range(0, n_bytes, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_memory_monitor_cpu_sees_a_short_lived_allocation():
    mon = MemoryMonitor("cpu").start()
    try:
        assert mon.peak() < 100 * MiB
        big = _resident(200 * MiB)
        time.sleep(0.1)  # give the sampling thread (where there is one) a few 5 ms ticks
        during = mon.now()
        big.close()
        del big
        time.sleep(0.05)
        peak = mon.peak()
        assert during >= 150 * MiB
        assert peak >= 150 * MiB  # still there after the tensor is gone: the thread saw it
        assert peak >= mon.now()
    finally:
        final = mon.stop()
    assert final >= 150 * MiB
    assert mon._thread is None


def test_memory_monitor_context_manager(monkeypatch):
    with MemoryMonitor("cpu") as mon:
        assert mon.now() >= 0 and mon.peak() >= 0
    assert mon._thread is None
    # where the kernel keeps no peak (not Linux), a thread samples the RSS instead
    monkeypatch.setattr(memory, "STATUS", Path("/nonexistent/status"))
    with MemoryMonitor("cpu") as mon:
        assert not mon._kernel and mon._thread is not None and mon._thread.is_alive()
    assert mon._thread is None


@pytest.mark.skipif(memory.kernel_peak() is None, reason="the kernel keeps no peak RSS here (not Linux)")
def test_the_kernel_peak_catches_what_sampling_misses_and_monitors_nest():
    """On Linux the peak is VmHWM: exact, with no thread. A spike freed before any sampler could look is
    still counted, and a monitor started inside another keeps the outer one's peak."""
    outer = MemoryMonitor("cpu").start()
    assert outer._kernel and outer._thread is None
    _resident(200 * MiB).close()  # touched and freed at once, no sleep for a sampler to see it
    inner = MemoryMonitor("cpu").start()  # resets the kernel's peak: the outer keeps what it had
    small = _resident(20 * MiB)
    assert 15 * MiB <= inner.peak() < 100 * MiB
    assert outer.peak() >= 150 * MiB
    small.close()
    assert 15 * MiB <= inner.stop() < 100 * MiB and outer.stop() >= 150 * MiB
    assert outer not in memory.live and inner not in memory.live


def test_mib_and_gib():
    assert memory.MiB == 2**20 and memory.GiB == 2**30
