"""`workbench estimate`: the memory breakdown as a table and as JSON, for a folder, a shipped family or the
default model, with the dtype a run here would get."""

from __future__ import annotations

import json

import pytest

from workbench import cli
from workbench.core.config import DEFAULT_MODEL
from workbench.engine.layout import ModelLayout


def test_the_estimate_command_assumes_what_a_run_here_gets(bf16_native, capsys):
    for bits, want in [(16, "bfloat16"), (4, "float32")]:
        assert cli.main(["estimate", "--bits", str(bits), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["dtype"] == want


@pytest.mark.parametrize("model", ["tiny", DEFAULT_MODEL])
def test_cli_estimate_json(model, tiny_model_dir, capsys):
    name = str(tiny_model_dir) if model == "tiny" else model
    rc = cli.main(
        ["estimate", "--model", name, "--bits", "4", "--rank", "8", "--batch-size", "2", "--seq-len", "64", "--json"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["total"] == sum(doc["components"].values())
    assert doc["bits"] == 4 and doc["rank"] == 8 and doc["model"] == name
    assert {"adapter", "gradients", "optimizer state", "activations"} <= set(doc["components"])
    assert doc["components"]["optimizer state"] == 2 * doc["components"]["gradients"]


def test_cli_estimate_table(capsys):
    assert cli.main(["estimate", "--bits", "16", "--gradient-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{DEFAULT_MODEL}: 16-bit base")
    assert out.strip().splitlines()[-1].startswith("total") and "MiB" in out


# published sizes: GPT-2 124M and 1.5B (the GPT-2 paper's 117M/1542M count the output head apart), Phi-3-mini
# 3.8B, Gemma-2-2B 2.6B, Mixtral-8x7B 46.7B (model cards)
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "phi-3-mini": 3_821_079_552,
    "gemma-2-2b": 2_614_341_888,
    "mixtral-8x7b": 46_702_792_704,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_workbench_estimate_knows_the_shipped_families(name, capsys):
    import json

    from workbench import cli

    assert cli.main(["estimate", "--model", name, "--bits", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    layout = ModelLayout.for_model(name)
    assert layout.total_params == PUBLISHED[name]
    assert out["adapter_params"] == layout.adapter_params(8, "all-linear") > 0 and out["total"] > 0
    if name == "mixtral-8x7b":  # the experts: 64 stacked weights, a choice with its own cost
        assert len(layout.experts) == 64 and "expert updates" in out["components"]
        assert cli.main(["estimate", "--model", name, "--bits", "4", "--json", "--no-experts"]) == 0
        without = json.loads(capsys.readouterr().out)
        assert without["adapter_params"] == layout.adapter_params(8, "all-linear", adapt_experts=False)
        assert without["adapter_params"] < out["adapter_params"] and "expert updates" not in without["components"]


def test_the_estimate_says_what_an_init_costs_and_counts_it(capsys):
    assert cli.main(["estimate", "--bits", "4", "--init", "eva", "--json"]) == 0
    with_eva = json.loads(capsys.readouterr().out)
    assert cli.main(["estimate", "--bits", "4", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    cost = with_eva["init_cost"]
    assert with_eva["init"] == "eva" and cost["layers"] == 210 and cost["seconds"] > 0  # SmolLM2: 30 × 7 layers
    assert plain["init_cost"] is None and with_eva["total"] >= plain["total"]
    assert cli.main(["estimate", "--bits", "4", "--init", "pissa"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("init pissa: one fast SVD per layer (210 layers)")
    assert cli.main(["estimate", "--bits", "16", "--init", "loftq"]) == 2
    assert capsys.readouterr().err.strip() == "workbench: error: init: loftq works on 4-bit bases; give those --bits"
