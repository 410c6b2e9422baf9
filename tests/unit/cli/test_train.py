"""`workbench train CONFIG.yaml`: one variant an experiment, and launches it cannot run refused in one line."""

from __future__ import annotations

import pytest
from helpers import ddp_config

from workbench import cli
from workbench.experiments.experiment import check_launch, for_variant, to_yaml, trained_variant, write_config


@pytest.mark.parametrize("variants", [("base", "lora"), ("lora", "qlora"), ("base",)])
def test_an_experiment_trains_exactly_one_variant(variants, tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    cfg = ddp_config(tiny_model_dir, tiny_jsonl, variants)
    with pytest.raises(ValueError, match="variants: an experiment trains exactly one of lora, lora8 or qlora"):
        trained_variant(cfg)
    path = tmp_path / "x.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    assert cli.main(["train", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench: error: variants:") and "\n" not in err
    assert trained_variant(for_variant(cfg, "lora")) == "lora"


@pytest.mark.parametrize("env, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_an_fsdp_or_deepspeed_launch_is_refused_in_one_line(
    env, name, tiny_model_dir, tiny_jsonl, tmp_path, capsys, monkeypatch
):
    check_launch({})  # no launcher, or a plain multi-GPU one: fine
    path = write_config(ddp_config(tiny_model_dir, tiny_jsonl), tmp_path / "x.yaml")
    monkeypatch.setenv(env, "true")  # what accelerate launch sets for distributed_type: FSDP (or DEEPSPEED)
    assert cli.main(["train", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "runs data-parallel (DDP) only" in err and f"asks for {name};" in err and "\n" not in err
    assert not (tmp_path / "x").exists()
