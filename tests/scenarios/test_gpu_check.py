"""`make gpu-check` runs on a GPU machine only; its CPU path runs here on the tiny model, so it cannot rot."""

from __future__ import annotations

import json

from bench import gpu_check


def test_gpu_check_cpu_path_writes_its_table(tiny_model_dir, tmp_path):
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--models",
            str(tiny_model_dir),
            "--bits",
            "16,4",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--skip-tests",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["bits"] for r in report["rows"]] == [16, 4]
    for r in report["rows"]:
        assert r["estimated_bytes"] > 0 and r["train_tok_s"] > 0 and r["generate_tok_s"] > 0
        assert r["device"].startswith("cpu")
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| model (random weights) | bits | peak MiB |" in md and md.count(str(tiny_model_dir.name)) == 2


def test_gpu_check_says_what_to_do_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is here: the real run is `make gpu-check`")
    assert gpu_check.main(["--skip-tests"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_random_models_are_built_from_a_config_alone(tiny_model_dir, tmp_path):
    from workbench.engine import models

    folder = gpu_check.random_model_folder(str(tiny_model_dir), tmp_path, "cpu")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    model, _ = models.load_model(folder, bits=4, device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 0
