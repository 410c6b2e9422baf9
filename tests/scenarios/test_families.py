"""The family matrix: every causal-LM family people fine-tune, built tiny in-process (tests/families.py, the
tokenizer of conftest's tiny model), saved to a folder and run through the workbench: the layout's targets and
adapter size against peft's, fresh and from the layout cache; the estimate; loading at 16, 8 and 4 bits, two
training steps, evaluation, answers (one run_compare of base, lora, lora8 and qlora); a merged export that plain
transformers reloads. A family transformers cannot build is skipped with one line saying so."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_tiny_tokenizer
from families import FAMILIES, family_config
from test_compare_cli import tiny_config
from transformers import AutoModelForCausalLM

from workbench.core.config import LoraSettings
from workbench.engine import export
from workbench.engine.estimator import estimate
from workbench.engine.generate import DecodeSettings
from workbench.engine.layout import ModelLayout
from workbench.engine.models import attach_lora, load_model, weight_bytes
from workbench.experiments import comparison as compare

# what all-linear adapts in each family (docs/families.md has the same table)
ALL_LINEAR = {
    "llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "mistral": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen3": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "gemma2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "opt": ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"],
    "falcon": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "starcoder2": ["c_fc", "c_proj", "k_proj", "o_proj", "q_proj", "v_proj"],
    "bloom": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "mixtral": ["k_proj", "o_proj", "q_proj", "v_proj"],
    "qwen3_moe": ["k_proj", "o_proj", "q_proj", "v_proj"],
    "qwen2_moe": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
}
MOE = {"mixtral", "qwen3_moe", "qwen2_moe"}
# families whose layers transformers' bitsandbytes integration leaves alone (a Linear subclass): 16 bits only
NOT_QUANTIZED = {"falcon": "bits: bitsandbytes quantizes none of falcon's layers"}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """family -> a saved tiny model folder (or the one line saying why transformers could not build it)."""
    tokenizer = build_tiny_tokenizer()
    out = {}
    for family in FAMILIES:
        try:
            config = family_config(
                family, vocab=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=None
            )
            config.initializer_range = 0.1  # as the tiny Llama: logits that can move in two steps
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
        except Exception as exc:  # noqa: BLE001 - reported as one line, not a traceback
            out[family] = f"transformers cannot build {family}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[family] = folder
    return out


def _folder(family_dirs, family):
    found = family_dirs[family]
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_layout_counts_what_peft_builds_fresh_and_cached(family, family_dirs, tmp_path, monkeypatch):
    folder = _folder(family_dirs, family)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    fresh = ModelLayout.for_model(str(folder))
    cached = ModelLayout.for_model(str(folder))  # read back from $WORKBENCH_HOME/layouts
    assert len(list((tmp_path / "layouts").glob("*.json"))) == 1
    assert type(cached.config) is type(fresh.config)  # the family's own config class: its aliases work
    assert cached.config.hidden_size == fresh.config.hidden_size == 32
    assert cached.config.num_hidden_layers == 2
    assert (cached.linears, cached.experts, cached.routers) == (fresh.linears, fresh.experts, fresh.routers)
    assert fresh.target_names == ALL_LINEAR[family]
    assert fresh.is_moe == (family in MOE)
    for layout in (fresh, cached):
        kw = dict(rank=4, batch_size=2, seq_len=16)
        assert estimate(layout, bits=4, **kw).components == estimate(fresh, bits=4, **kw).components
        sixteen, four = estimate(layout, bits=16, **kw).total, estimate(layout, bits=4, **kw).total
        assert (sixteen == four) if family in NOT_QUANTIZED else (sixteen > four > 0)
        assert "2 layers, hidden size 32" in layout.describe()
    settings = [LoraSettings(rank=4), LoraSettings(rank=4, target_modules=ALL_LINEAR[family][:2])]
    if family in MOE:
        settings.append(LoraSettings(rank=4, adapt_experts=False))
    model = AutoModelForCausalLM.from_pretrained(folder)
    for lora in settings:
        peft_model = attach_lora(model, lora, bits=16)
        assert (
            fresh.adapter_params(4, lora.target_modules, lora.adapt_experts)
            == (peft_model.get_nb_trainable_parameters()[0])
        ), lora
        model = peft_model.unload()  # the bare model again, for the next setting
    if family in MOE:  # the experts cost what they add, and the router is in no adapter
        assert fresh.adapter_params(4, "all-linear") > fresh.adapter_params(4, "all-linear", adapt_experts=False)
        assert fresh.routers and not any(r in (lin.name for lin in fresh.linears) for r in fresh.routers)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_quantized_layers_hold_what_the_estimate_says(family, family_dirs):
    """bitsandbytes quantizes exactly the layers the layout counts (Conv1D included; stacked experts and routers
    left in full precision): the 4-bit model's weight bytes are the estimate's weights."""
    import bitsandbytes as bnb

    folder = _folder(family_dirs, family)
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


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_trains_at_16_8_and_4_bits_scores_answers_and_exports(family, family_dirs, tiny_jsonl, tmp_path):
    """run_compare from the Adapter tab's defaults (all-linear, dropout 0.05, experts adapted): LoRA at 16 bits
    and QLoRA at 4 (8 bits loads in the test above), two steps with the loss moving, evaluation, answers; then a
    merged export plain transformers loads."""
    folder = _folder(family_dirs, family)
    trained = ["lora"] if family in NOT_QUANTIZED else ["lora", "qlora"]
    cfg = tiny_config(folder, tiny_jsonl, variants=",".join(["base", *trained]), steps=2, eval_examples=3)
    assert cfg.lora.dropout > 0 and cfg.lora.target_modules == "all-linear" and cfg.lora.adapt_experts
    # answers of 4 tokens: a random tiny model never ends one, and 48 tokens per answer were half the time
    result = compare.run_compare(cfg, tmp_path / "run", fit_check=False, decode=DecodeSettings(max_new_tokens=4))
    rows = {v.name: v for v in result.variants}
    assert set(rows) == {"base", *trained}
    layout = ModelLayout.for_model(str(folder))
    for name in trained:
        row = rows[name]
        assert row.status == "done" and row.steps_done == 2, (name, row.error)
        assert row.trainable_params == layout.adapter_params(4, "all-linear")
        losses = [m.loss for m in result.metrics if m.variant == name]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
        assert abs(losses[1] - losses[0]) > 1e-4, (name, losses)  # the adapter moved
        assert row.estimated_peak_bytes > 0 and math.isfinite(row.eval_loss)
    dropout_note = [n for n in result.notes if "becomes 0 for this adapter" in n]
    assert len(dropout_note) == (1 if family in MOE else 0)  # said once, where the run's notes are
    assert rows["base"].accuracy is not None and result.generations  # scored, and answered
    assert all(set(answers) == set(rows) for answers in result.generations.values())
    done = export.export(tmp_path / "run", trained[-1], tmp_path / "merged", merge=True, dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(done.out)
    assert type(merged).__name__ == type(AutoModelForCausalLM.from_pretrained(folder)).__name__
    assert done.gap is not None and done.gap.top1_agreement > 0.9 and done.gap.mean_abs < 1e-3


def test_the_adapter_tab_offers_the_experts_as_a_choice_with_its_cost(family_dirs, tiny_jsonl, tmp_path):
    from workbench.ui import AdapterPanel, AppState

    def panel(family):
        cfg = tiny_config(_folder(family_dirs, family), tiny_jsonl)
        return AdapterPanel(AppState(cfg, runs_dir=tmp_path))

    assert panel("llama").experts.layout.display == "none"  # no experts: no checkbox
    tab = panel("mixtral")
    layout = ModelLayout.for_model(str(family_dirs["mixtral"]))
    assert tab.experts.layout.display is None and tab.experts.value  # shown, on by default
    with_experts = layout.adapter_params(4, "all-linear")
    assert f"Trainable parameters: {with_experts:,}</b>" in tab.params_info.value
    assert "and 4 expert weights" in tab.params_info.value
    assert "Dropout 0.05 becomes 0 for this adapter" in tab.params_info.value
    assert "expert updates" in tab.estimates()["lora"].components
    tab.experts.value = False
    assert tab.state.config.lora.adapt_experts is False
    without = layout.adapter_params(4, "all-linear", adapt_experts=False)
    assert without < with_experts and f"Trainable parameters: {without:,}</b>" in tab.params_info.value
    assert "becomes 0" not in tab.params_info.value and "expert updates" not in tab.estimates()["lora"].components


def test_adapt_experts_is_a_checked_setting():
    from workbench.core.config import help_for

    with pytest.raises(ValueError, match="adapt_experts must be true or false; got 'no'"):
        LoraSettings(adapt_experts="no")
    assert "router is never adapted" in help_for(LoraSettings, "adapt_experts")
    with pytest.raises(ValueError, match="use_dora: peft cannot put DoRA on expert weights"):
        LoraSettings(use_dora=True).to_lora_config(target_parameters=["model.layers.0.mlp.experts.down_proj"])
    assert LoraSettings(dropout=0.1).to_lora_config(["x.experts.down_proj"]).lora_dropout == 0.0
    assert LoraSettings(dropout=0.1).to_lora_config().lora_dropout == 0.1


def test_no_experts_on_the_command_line_reaches_the_settings():
    from workbench import cli
    from workbench.core.config import preset_config

    parser = cli.build_parser()
    for argv, adapted in (
        (["compare"], True),
        (["compare", "--no-experts"], False),
        (["sweep", "--no-experts"], False),
    ):
        assert preset_config(None, cli.options.overrides(parser.parse_args(argv))).lora.adapt_experts is adapted
    assert parser.parse_args(["estimate", "--no-experts"]).no_experts is True


@pytest.mark.parametrize(("family", "released"), [("qwen3_moe", True), ("llama", False)])
def test_a_16_bit_mixture_of_experts_lets_the_checkpoint_go(family, released, family_dirs, monkeypatch):
    """Its experts are stacked from per-expert tensors at load: the weights are copied out of the file's mapping, so
    the pages read to stack them are not held beside the stacks (docs/estimator.md: 216 MiB of a 146M model). A
    dense model keeps its weights mapped: the file's pages, held once and shared between processes."""
    from workbench.engine import models

    calls = []
    real = models.release_checkpoint_pages
    monkeypatch.setattr(models, "release_checkpoint_pages", lambda m: calls.append(m) or real(m))
    model, _ = models.load_model(_folder(family_dirs, family), bits=16, device="cpu", dtype="float32")
    assert bool(calls) is released
