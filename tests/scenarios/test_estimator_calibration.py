"""The CPU memory estimate against what a training step really holds.

Each activation term of estimator.estimate against the tensors autograd saves in a real forward pass (the tiny
model); glibc's heap retention and each allocator's, measured in fresh processes.
End to end (the embedded SmolLM2-135M, marked e2e): measured training peaks in fresh processes
(bench/bench_memory.py, what docs/estimator.md tabulates) within 10% of the estimate.
The estimate's terms on their own are tests/unit/engine/test_estimator.py's.
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
from workbench.machine.memory import MiB


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
def test_activation_terms_match_what_autograd_saves(tiny_model_config, load_tiny, bits, targets, dropout, dtype):
    """The activation terms (norms, attention, SwiGLU, LoRA's dropout masks and inputs, 8-bit inputs) plus the
    saved float32 log-softmax (a third of "logits and loss") equal the saved tensors of a real forward, within
    1% (the rest: one rsqrt per token of the final norm, RoPE's cos/sin, the labels)."""
    torch.manual_seed(0)
    lora = LoraSettings(rank=4, target_modules=targets, dropout=dropout)
    model = models.attach_lora(load_tiny(bits, dtype=dtype), lora, bits)
    model.train()
    b, s = 4, 32
    ids = torch.randint(0, tiny_model_config.vocab_size, (b, s))
    saved = _saved_tensor_bytes(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    per_token = estimator.activation_bytes_per_token(
        tiny_model_config, bits=bits, rank=4, targets=targets, dropout=dropout, dtype=dtype
    )
    c = estimate(tiny_model_config, bits=bits, rank=4, targets=targets, batch_size=b, seq_len=s, dtype=dtype).components
    predicted = b * s * sum(per_token.values()) + c["logits and loss"] // 3
    assert predicted == pytest.approx(saved, rel=0.01), (saved, predicted)
    if dropout:  # estimate() assumes LoraSettings' default dropout
        assert c["activations"] == int(b * s * sum(per_token.values()))


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
