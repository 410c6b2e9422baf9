import csv
import json
import re

import pytest
import torch

from workbench.core.config import LoraSettings, TrainSettings
from workbench.core.events import MetricEvent
from workbench.core.files import write_json
from workbench.engine import models
from workbench.engine.train import seed_everything, train
from workbench.records import runs, scan


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


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

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=trained_lora.get_base_model().dtype)
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
    result = train(
        model, tiny_tokenizer, tiny_task, TrainSettings(steps=3, batch_size=4, seq_len=32), variant="lora", sinks=[sink]
    )
    rows = list(csv.DictReader(path.open()))  # readable before close: every row is flushed
    sink.close()
    assert len(rows) == 3
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx(result.losses)
    assert all(r["variant"] == "lora" and r["total_steps"] == "3" for r in rows)
    assert list(rows[0]) == runs.MetricsCSV.FIELDS


def test_load_results(tmp_path):
    write_json(tmp_path / "results.json", {"config": {}, "variants": [{"name": "base", "bits": 16}]})
    assert runs.Run(tmp_path).read() == {"config": {}, "variants": [{"name": "base", "bits": 16}]}
    write_json(tmp_path / "results.json", {"config": {}, "variants": [{"name": "base", "bits": "16"}]})
    with pytest.raises(ValueError, match=r"variants\[0\]: bits must be 16, 8 or 4; got '16'"):
        runs.Run(tmp_path).read()  # checked as read: no reader gets a number that is text


def test_result_fields_cover_the_documented_columns():
    documented = [
        "name",
        "bits",
        "rank",
        "target_modules",
        "trainable_params",
        "total_params",
        "weight_bytes",
        "peak_memory_bytes",
        "estimated_peak_bytes",
        "train_seconds",
        "tokens_per_second",
        "final_train_loss",
        "eval_loss",
        "perplexity",
        "accuracy",
    ]
    assert runs.RESULT_FIELDS[: len(documented)] == documented
    later = ["steps_done", "status", "base_dtype", "general_loss", "forgetting", "error"]
    sureness = [
        "eval_examples",
        *(
            f"{score}_{end}"
            for score in ("accuracy", "eval_loss", "perplexity", "forgetting")
            for end in ("low", "high")
        ),
        "eval_seconds",
    ]
    assert runs.RESULT_FIELDS[len(documented) :] == later + sureness


# --------------------------------------------------------------------------- a run folder as an object


def test_run_object_reads_its_folder(tmp_path):
    from workbench.core.config import RunConfig
    from workbench.records.results import VariantResult

    run = runs.Run(tmp_path / "r1")
    assert not run.finished and run.status == "incomplete" and run.trained_variants() == []
    cfg = RunConfig(variants=["base", "lora"])
    results = [VariantResult("base", 16), VariantResult("lora", 16, rank=8, target_modules="all-linear")]
    runs.write_results(
        run, {"config": cfg.to_dict(), "device": "cpu (float32)", "device_type": "cpu", "stopped": True}, results
    )
    assert run.finished and run.status == "stopped" and run.device_type == "cpu"
    assert run.config() == cfg and run.results() == results
    (run.adapter_dir("lora")).mkdir(parents=True)
    assert run.trained_variants() == []  # an empty folder is no adapter
    (run.adapter_dir("lora") / "adapter_config.json").write_text("{}")
    assert run.trained_variants() == ["lora"] and run.has_adapter("lora") and not run.has_adapter("qlora")
    assert run.adapter_dir("qlora") == tmp_path / "r1" / "adapters" / "qlora"
    assert scan.find_runs(tmp_path) == [run]


def test_an_older_run_without_new_fields_still_reads(tmp_path):
    write_json(
        tmp_path / "old" / "results.json",
        {"config": {}, "device": "cuda (A100, bfloat16)", "variants": [{"name": "lora", "bits": 16}]},
    )
    run = runs.Run(tmp_path / "old")
    assert run.device_type == "cuda"  # told by the description, as older runs wrote it
    (res,) = run.results()
    assert res.name == "lora" and res.status == "done" and res.accuracy is None
    (row,) = scan.all_results(tmp_path)
    assert row.run == "old" and row.result == res
    # a field this version does not know is another version's layout: listed with its name, not dropped
    write_json(tmp_path / "newer" / "results.json", {"config": {}, "variants": [{"name": "lora", "bits": 16, "x": 1}]})
    assert [(u.run, u.reason) for u in scan.scan(tmp_path)[1]] == [
        (
            "newer",
            "results.json: written by another version of the workbench, or damaged: variants[0]: unknown field 'x'",
        )
    ]


def test_a_speed_is_quoted_only_for_answers_long_enough_to_measure_one():
    from workbench.engine.generate import MIN_TOKENS_FOR_SPEED, Generation

    short = Generation("positive", 0.7, 1).summary()
    assert short.startswith("1 token in 0.7 s") and "tok/s" not in short and "prompt" in short
    long = Generation("x" * 40, 2.0, MIN_TOKENS_FOR_SPEED * 4).summary()
    assert long == f"{MIN_TOKENS_FOR_SPEED * 4} tokens in 2.0 s · {MIN_TOKENS_FOR_SPEED * 2:.1f} tok/s"


def test_long_names_are_cut_in_the_middle():
    from workbench.records.results import shorten

    name = "20261201-135300-lora+qlora-r8-all-linear"
    short = shorten(name, 28)
    assert len(short) == 28 and short.startswith("20261201-1353") and short.endswith("all-linear") and "…" in short
    assert shorten("short", 28) == "short"


def test_the_loss_axis_reads_plain_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from workbench.analysis import plots
    from workbench.core.events import MetricEvent

    for start, factor in ((5.0, 0.7), (3.0, 1.02)):  # several decades, and less than one
        events = [MetricEvent("lora", i, 20, start * factor**i, 1e-3, 1.0, 1, 1, 1.0) for i in range(1, 21)]
        fig = plots.loss_figure(events)
        FigureCanvasAgg(fig).draw()
        ax = fig.axes[0]
        labels = [t.get_text() for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)] if t.get_text()]
        assert labels and all(re.fullmatch(r"[0-9.]+", text) for text in labels), labels


def test_best_and_worst_examples_by_loss():
    from workbench.records.results import best_and_worst

    preds = [{"prompt": str(i), "loss": loss} for i, loss in enumerate([0.5, 0.1, 2.0, 0.3, 1.0])]
    best, worst = best_and_worst(preds, n=2)
    assert [p["prompt"] for p in best] == ["1", "3"] and [p["prompt"] for p in worst] == ["2", "4"]
    assert best_and_worst([{"prompt": "x"}]) == ([], [])  # runs from before per-example losses


def test_a_runs_metrics_and_settings_read_back(tmp_path):
    from workbench.core.config import preset_config
    from workbench.core.events import MetricEvent
    from workbench.core.files import write_json
    from workbench.records.results import CompareResult

    events = [MetricEvent("lora", i, 3, 1.0 / i, 1e-3, 100.0, 2**20 * i, 2**21, 0.5 * i) for i in (1, 2, 3)]
    folders = []
    for rank in (4, 8):
        out = tmp_path / f"r{rank}"
        sink = runs.MetricsCSV(out / "metrics.csv")
        for e in events:
            sink(e)
        sink.close()
        cfg = preset_config("cpu-demo", {"lora": {"rank": rank}})
        result = CompareResult(config=cfg.to_dict(), device="cpu", device_type="cpu", model_path="m", task="t")
        write_json(out / "results.json", {**result.to_json(), "variants": []})  # as runs.write_results writes it
        folders.append(runs.Run(out))
    assert folders[0].metrics() == events
    diff = runs.settings_table(folders, only_differences=True)
    assert list(diff.index) == ["lora.rank"] and list(diff.loc["lora.rank"]) == [4, 8]
    assert len(runs.settings_table(folders)) > 10
