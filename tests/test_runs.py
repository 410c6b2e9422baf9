import csv
import json

import pytest
import torch

from workbench import models, runs
from workbench.config import LoraSettings, TrainSettings
from workbench.train import MetricEvent, seed_everything, train


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- atomic files


def test_write_json_round_trip(tmp_path):
    path = runs.write_json(tmp_path / "sub" / "r.json", {"a": [1, 2.5, None], "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None], "p": str(tmp_path)}
    assert _listing(path.parent) == ["r.json"]


@pytest.mark.parametrize("bad", [
    {("tuple", "key"): 1},  # json cannot write non-string keys, default=str or not
    "circular",
])
def test_write_json_failure_leaves_old_file(tmp_path, bad):
    if bad == "circular":
        bad = []
        bad.append(bad)
    path = tmp_path / "results.json"
    runs.write_json(path, {"old": True})
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        runs.write_json(path, {"new": bad})
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["results.json"]


def test_write_text_failure_at_replace_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "notes.md"
    runs.write_text(path, "old")

    def boom(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        runs.write_text(path, "new")
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["notes.md"]


def test_write_csv(tmp_path):
    path = runs.write_csv(tmp_path / "t.csv", [{"a": 1, "b": ["q_proj", "v_proj"], "c": None, "extra": 9},
                                               {"a": 2.5, "b": "all-linear"}], ["a", "b", "c"])
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "1", "b": "q_proj,v_proj", "c": ""}, {"a": "2.5", "b": "all-linear", "c": ""}]


def test_write_csv_failure_midway_leaves_old_file(tmp_path):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot format (simulated)")

    path = tmp_path / "results.csv"
    runs.write_csv(path, [{"a": 1}], ["a"])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="simulated"):
        runs.write_csv(path, [{"a": 2}, {"a": 3}, {"a": Unprintable()}], ["a"])  # two rows already written
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["results.csv"]


def test_save_figure(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = runs.save_figure(fig, tmp_path / "plots" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _listing(path.parent) == ["f.png"]


# --------------------------------------------------------------------------- adapters


@pytest.fixture
def trained_lora(load_tiny, tiny_tokenizer, tiny_task):
    model = load_tiny(16)
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=4, target_modules="q_proj,v_proj,down_proj"), 16)
    train(model, tiny_tokenizer, tiny_task, TrainSettings(steps=3, lr=5e-2, batch_size=4, seq_len=32))
    return model


def test_save_adapter_loads_with_plain_peft(tmp_path, trained_lora, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = runs.save_adapter(trained_lora, tmp_path / "adapters" / "lora")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(_listing(out))
    assert _listing(out.parent) == ["lora"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and set(cfg["target_modules"]) == {"q_proj", "v_proj", "down_proj"}

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    loaded = PeftModel.from_pretrained(base, str(out))
    ids = torch.tensor([[3, 10, 20, 30, 40]])
    with torch.no_grad():
        expected = trained_lora(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        with loaded.disable_adapter():
            plain = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(plain, expected, atol=1e-4)  # the adapter really changes the output


def test_save_adapter_replaces_an_old_one(tmp_path, trained_lora):
    target = tmp_path / "adapters" / "lora"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    runs.save_adapter(trained_lora, target)
    assert "stale.txt" not in _listing(target) and "adapter_config.json" in _listing(target)
    assert _listing(target.parent) == ["lora"]  # no temp or .old folder left


def test_save_adapter_failure_keeps_old_adapter(tmp_path, trained_lora, monkeypatch):
    target = tmp_path / "adapters" / "lora"
    runs.save_adapter(trained_lora, target)
    before = (target / "adapter_model.safetensors").read_bytes()

    def half_save(folder, *a, **kw):
        (folder / "adapter_config.json").write_text("{}")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(trained_lora, "save_pretrained", half_save)
    with pytest.raises(OSError, match="simulated"):
        runs.save_adapter(trained_lora, target)
    assert (target / "adapter_model.safetensors").read_bytes() == before
    assert _listing(target.parent) == ["lora"]


# --------------------------------------------------------------------------- metrics


def test_metrics_csv_one_row_per_event(tmp_path, load_tiny, tiny_tokenizer, tiny_task):
    path = tmp_path / "run" / "metrics.csv"
    sink = runs.MetricsCSV(path)
    assert path.read_text().strip() == ",".join(MetricEvent.__dataclass_fields__)  # header at once
    model = load_tiny(16)
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=2), 16)
    result = train(model, tiny_tokenizer, tiny_task, TrainSettings(steps=3, batch_size=4, seq_len=32),
                   variant="lora", sinks=[sink])
    rows = list(csv.DictReader(path.open()))  # readable before close: every row is flushed
    sink.close()
    assert len(rows) == 3
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx(result.losses)
    assert all(r["variant"] == "lora" and r["total_steps"] == "3" for r in rows)
    assert list(rows[0]) == runs.MetricsCSV.FIELDS


def test_load_results(tmp_path):
    runs.write_json(tmp_path / "results.json", {"variants": [{"name": "base"}]})
    assert runs.load_results(tmp_path) == {"variants": [{"name": "base"}]}


def test_result_fields_cover_the_documented_columns():
    documented = ["name", "bits", "rank", "target_modules", "trainable_params", "total_params", "weight_bytes",
                  "peak_memory_bytes", "estimated_peak_bytes", "train_seconds", "tokens_per_second",
                  "final_train_loss", "eval_loss", "perplexity", "accuracy"]
    assert runs.RESULT_FIELDS[:len(documented)] == documented
    assert runs.RESULT_FIELDS[len(documented):] == ["steps_done", "status"]
