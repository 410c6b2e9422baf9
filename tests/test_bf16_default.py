"""dtype auto on a CPU: bfloat16 for a 16-bit base where the CPU multiplies it natively, float32 for 4 and 8
bits and on every other CPU (models.cpu_dtype; the decision and its figures in docs/benchmarks.md). The CPU's
answer is mocked both ways here, never timed: this machine may have avx512_bf16 or AVX2 only."""

from __future__ import annotations

import json

import pytest
import torch
from test_compare_cli import tiny_config

from workbench import cli
from workbench.engine import models
from workbench.experiments.comparison import run_compare


@pytest.fixture
def native(monkeypatch):
    """This CPU multiplies bfloat16 natively, as far as the workbench can tell."""
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "1")


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "0")


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


def test_native_bf16_cpu_gets_bfloat16_at_16_bits_and_float32_below(native):
    assert models.pick_device("cpu").dtype == torch.bfloat16
    assert models.pick_device("cpu", "auto", 16).describe() == "cpu (bfloat16)"
    assert models.pick_device("cpu", "auto", 8).dtype == torch.float32
    assert models.pick_device("cpu", "auto", 4).dtype == torch.float32
    # one setting away, and what is asked for is taken at every width
    assert models.pick_device("cpu", "float32").dtype == torch.float32
    assert models.pick_device("cpu", "bfloat16", 4).dtype == torch.bfloat16


def test_other_cpus_keep_float32(emulated):
    for bits in (16, 8, 4):
        assert models.pick_device("cpu", "auto", bits).dtype == torch.float32


def test_a_gpu_is_not_affected_by_the_cpu_choice(native, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert models.pick_device("cuda", "auto", 16).dtype == torch.float16
    assert models.pick_device("cuda", "auto", 4).dtype == torch.float16


def test_loading_follows_the_choice(native, tiny_model_dir):
    lora, choice = models.load_model(tiny_model_dir, bits=16, device="cpu")
    assert choice.dtype == torch.bfloat16
    assert lora.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    qlora, choice4 = models.load_model(tiny_model_dir, bits=4, device="cpu")
    assert choice4.dtype == torch.float32
    q_proj = qlora.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "Linear4bit" and q_proj.compute_dtype == torch.float32
    assert qlora.model.embed_tokens.weight.dtype == torch.float32


def test_a_run_says_which_dtype_each_variant_got(native, tiny_model_dir, tiny_jsonl, tmp_path):
    """The bfloat16 path end to end on the tiny model: LoRA trains and scores on a bfloat16 base, QLoRA
    computes in float32, and the results name each base's dtype."""
    result = run_compare(tiny_config(tiny_model_dir, tiny_jsonl, steps=2), tmp_path / "run")
    dtypes = {v.name: v.base_dtype for v in result.variants}
    assert dtypes == {"base": "bfloat16", "lora": "bfloat16", "qlora": "nf4"}
    for v in result.variants:
        assert v.eval_loss is not None and v.eval_loss == v.eval_loss  # scored, not NaN


def test_the_estimate_command_assumes_what_a_run_here_gets(native, capsys):
    for bits, want in [(16, "bfloat16"), (4, "float32")]:
        assert cli.main(["estimate", "--bits", str(bits), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["dtype"] == want


def test_evaluate_reads_back_every_variant_a_bfloat16_run_scored(native, tiny_model_dir, tiny_jsonl, tmp_path):
    """The run's 4-bit variant is keyed by its own float32 choice, as the Compare tab's session keys it."""
    from workbench.engine.session import Session
    from workbench.experiments import run_setup

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=1)
    run_compare(cfg, tmp_path / "run")
    examples = run_setup.setup(cfg).eval_set
    s = Session.from_run(tmp_path / "run")
    for variant in ("base", "lora", "qlora"):
        assert s.kept(variant, examples, seq_len=cfg.train.seq_len) is not None, variant
    s.release()
