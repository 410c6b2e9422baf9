"""The CPU memory estimate against what a training step really holds.

Unit tests (the tiny model, seconds): each activation term of estimator.estimate against the tensors autograd
saves in a real forward pass; the loss's vocabulary-sized tensors; the terms only the CPU has (the runtime
constant, the k-bit load); models.weight_bytes counting bitsandbytes' quantization constants; glibc's heap
retention and the setting that stops it; train() letting the logits go before the backward.
End to end (the embedded SmolLM2-135M, marked e2e): measured training peaks in fresh processes
(bench/bench_memory.py, what docs/estimator.md tabulates) within 10% of the estimate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from workbench.core.config import LoraSettings
from workbench.engine import estimator, models
from workbench.engine.estimator import estimate
from workbench.engine.resolve import model_config_for
from workbench.machine.memory import MiB

SMOL = "smollm2-135m"  # the shipped config of the embedded model's architecture


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir):
    return model_config_for(str(tiny_model_dir))


def _saved_tensor_bytes(model, batch: dict) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in one training forward of `model`,
    plus what bitsandbytes' 8-bit layers keep as ctx attributes (outside save_for_backward)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        # detached: handing back the tensor itself can tie an output to its own grad_fn in a reference
        # cycle through C++ that no garbage collection frees (and it would keep the model alive)
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    stack, visited = [loss.grad_fn], set()
    while stack:  # MatMul8bitFp keeps its input as ctx.A, which the hooks above do not see
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        a = getattr(node, "A", None)
        if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() not in params:
            seen.setdefault(a.untyped_storage().data_ptr(), a.untyped_storage().nbytes())
        stack.extend(f for f, _ in node.next_functions)
    return sum(seen.values())


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
@pytest.mark.parametrize("dropout", [0.05, 0.0])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_activation_terms_match_what_autograd_saves(tiny_config, load_tiny, bits, targets, dropout, dtype):
    """The activation terms (norms, attention, SwiGLU, LoRA's dropout masks and inputs, 8-bit inputs) plus the
    saved float32 log-softmax (a third of "logits and loss") equal the saved tensors of a real forward, within
    1% (the rest: one rsqrt per token of the final norm, RoPE's cos/sin, the labels)."""
    torch.manual_seed(0)
    lora = LoraSettings(rank=4, target_modules=targets, dropout=dropout)
    model = models.attach_lora(load_tiny(bits, dtype=dtype), lora, bits)
    model.train()
    b, s = 4, 32
    ids = torch.randint(0, tiny_config.vocab_size, (b, s))
    saved = _saved_tensor_bytes(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    per_token = estimator.activation_bytes_per_token(
        tiny_config, bits=bits, rank=4, targets=targets, dropout=dropout, dtype=dtype
    )
    c = estimate(tiny_config, bits=bits, rank=4, targets=targets, batch_size=b, seq_len=s, dtype=dtype).components
    predicted = b * s * sum(per_token.values()) + c["logits and loss"] // 3
    assert predicted == pytest.approx(saved, rel=0.01), (saved, predicted)
    if dropout:  # estimate() assumes LoraSettings' default dropout
        assert c["activations"] == int(b * s * sum(per_token.values()))


def test_activation_terms_on_the_tiny_config(tiny_config):
    """Per token, summed over the tiny model's 2 blocks (hidden 64, intermediate 128, 4 heads of 16, 2 KV
    heads), rank 4 on all 14 linear layers; float32 on the CPU."""
    t = estimator.activation_bytes_per_token(tiny_config, bits=8, rank=4, targets="all-linear")
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
    gpu = estimator.activation_bytes_per_token(tiny_config, bits=16, rank=4, targets="all-linear", device_type="cuda")
    assert gpu["attention"] == 2 * ((2 * 4 + 2 * 2) * 16 * 2 + 4 * 4)  # bf16 compute
    assert gpu["lora"] == inputs * 5 - 3 * 64 + 14 * 4 * 4  # float32 input, one-byte mask (fused dropout)
    assert "8-bit base inputs" not in gpu


def test_loss_term_is_three_float32_vocabulary_tensors(tiny_config):
    for device in ("cpu", "cuda"):
        c = estimate(tiny_config, bits=16, rank=4, batch_size=3, seq_len=20, device_type=device).components
        assert c["logits and loss"] == 3 * 20 * tiny_config.vocab_size * 12, device
    # only the scored positions: the output head runs on those (models.scored_loss)
    c = estimate(tiny_config, bits=16, rank=4, batch_size=3, seq_len=20, scored_tokens=7).components
    assert c["logits and loss"] == 7 * tiny_config.vocab_size * 12
    # evaluation: the head's output, its float32 copy and log-softmax, at every scored position
    ev = estimate(tiny_config, bits=16, rank=4, batch_size=3, seq_len=20, train=False).components
    assert ev["logits and loss"] == 3 * 19 * tiny_config.vocab_size * (4 + 4)  # float32: no copy to make


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


def test_components_have_colours_in_order():
    from workbench.analysis import plots

    keys = set()
    for bits in (16, 8, 4):
        for train in (True, False):
            for alloc in ("tcmalloc", "glibc"):
                cfg = model_config_for(SMOL)
                keys |= set(
                    estimate(cfg, bits=bits, rank=4, batch_size=1, seq_len=8, train=train, allocator=alloc).components
                )
    assert keys <= set(plots.COMPONENT_COLORS)
    order = list(plots.COMPONENT_COLORS)
    assert order[0] == "weights" and order.index("activations") > order.index("optimizer state")


# --------------------------------------------------------------------------- weight_bytes


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


# --------------------------------------------------------------------------- the C allocator


RETENTION_SCRIPT = textwrap.dedent("""
    import gc, json, psutil, torch
    from workbench.machine import allocator
    used = allocator.configure()
    proc = psutil.Process()
    x = torch.ones(2 * 2**20)  # 8 MiB: glibc serves it with mmap; freeing it raises the dynamic threshold
    del x
    base = proc.memory_info().rss
    big, pins = [], []
    for _ in range(100):
        big.append(torch.ones(2**19))  # 2 MiB each, touched
        pins.append(torch.ones(2**18))  # 1 MiB after each, still alive: the heap cannot shrink past it
    del big
    gc.collect()
    kept = proc.memory_info().rss - base - 100 * 2**20  # resident beyond the 100 MiB of pins still alive
    allocator.release_free_memory()
    after = proc.memory_info().rss - base - 100 * 2**20
    print(json.dumps({"allocator": used, "retained": kept, "after_release": after}))
""")


def _retained(choice: str, preload: bool = False) -> dict:
    import os

    from workbench.machine import allocator

    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["WORKBENCH_ALLOCATOR"] = choice
    if preload:
        env = allocator.preload_env(env)
    out = subprocess.run([sys.executable, "-c", RETENTION_SCRIPT], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_allocators_and_what_they_keep():
    """200 MiB of freed 2 MiB tensors between live ones: glibc's default keeps them resident (they came from the
    heap once the 8 MiB free raised the threshold, and the live blocks between them keep it from shrinking);
    with WORKBENCH_ALLOCATOR=limit each was its own mapping and went back at once; tcmalloc keeps them for
    reuse and hands them back when asked (memory.release does, between runs)."""
    from workbench.machine import allocator

    limit, system = _retained("limit"), _retained("system")
    assert limit["allocator"] == "glibc (mmap threshold fixed)" and system["allocator"] == "glibc"
    assert limit["retained"] < 30 * MiB, limit
    assert system["retained"] > 150 * MiB, system
    if allocator.fast_path() is None:
        pytest.skip("neither tcmalloc nor mimalloc is installed (make setup installs mimalloc); glibc checked")
    fast = _retained("auto", preload=True)
    assert fast["allocator"] in ("tcmalloc", "mimalloc") and fast["allocator"] in allocator.fast_path(), fast
    assert fast["after_release"] < 30 * MiB, fast


def test_preloading_is_decided_by_the_setting(monkeypatch):
    from workbench.machine import allocator

    tc, mi = "/usr/lib/libtcmalloc_minimal.so.4", "/venv/lib/python3.11/site-packages/cmeel.prefix/lib/libmimalloc.so"
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: tc)
    monkeypatch.setattr(allocator, "mimalloc_path", lambda: mi)
    first = {"tcmalloc": tc, "mimalloc": mi}[allocator.PREFERRED[0]]  # where both are installed
    assert allocator.preload_env({"WORKBENCH_ALLOCATOR": "auto"})["LD_PRELOAD"] == first
    assert allocator.preload_env({"LD_PRELOAD": "/x.so"})["LD_PRELOAD"] == f"{first}:/x.so"
    assert "LD_PRELOAD" not in allocator.preload_env({"WORKBENCH_ALLOCATOR": "system"})
    monkeypatch.setattr(allocator, "tcmalloc_path", lambda: None)
    assert allocator.preload_env({})["LD_PRELOAD"] == mi  # PyPI's mimalloc where tcmalloc is not installed
    monkeypatch.setattr(allocator, "mimalloc_path", lambda: None)
    assert "LD_PRELOAD" not in allocator.preload_env({})
    monkeypatch.setenv("WORKBENCH_ALLOCATOR", "fast")
    with pytest.raises(ValueError, match="WORKBENCH_ALLOCATOR must be one of auto, system, limit"):
        allocator.choice()


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


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_estimate_within_10_percent_of_the_measured_training_peak(embedded_dir):
    """Three configurations of docs/estimator.md's table (16/8/4 bits, ranks 16/4/64, three shapes), each in a
    fresh process as the benchmark runs them: the training peak (RSS above the start, from before the model
    loads to the last optimizer step) within 10% of the estimate."""
    from bench.bench_memory import BenchConfig, error, run_one
    from workbench.machine import allocator

    errors = {}
    for bits, rank, batch, seq in ((16, 16, 8, 64), (8, 4, 4, 128), (4, 64, 2, 256)):
        row = run_one(
            BenchConfig(bits=bits, rank=rank, targets="all-linear", batch_size=batch, seq_len=seq, steps=2),
            model_path=str(embedded_dir),
        )
        # run as the workbench runs: the preferred fast allocator where one is installed, glibc otherwise
        fast = allocator.fast_path()
        want = next((n for n in allocator.PREFERRED if fast and f"lib{n}" in fast), "glibc")
        assert row["allocator"] == want, row["allocator"]
        errors[bits] = (round(error(row), 4), row["peak"] // MiB, row["estimate"] // MiB)
    assert all(abs(e) <= 0.10 for e, _, _ in errors.values()), errors
