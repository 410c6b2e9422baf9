"""A run folder (records.runs): adapters saved whole, metrics.csv one row per event (a last row cut short is
skipped), results read back, folders claimed by one writer only, who made a run."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import listing

from workbench.core.config import LoraSettings, TrainSettings
from workbench.core.events import MetricEvent
from workbench.core.files import write_json
from workbench.engine import models
from workbench.engine.train import seed_everything, train
from workbench.records import runs, scan


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
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(listing(out))
    assert listing(out.parent) == ["lora"]
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
    assert "stale.txt" not in listing(target) and "adapter_config.json" in listing(target)
    assert listing(target.parent) == ["lora"]  # no temp or .old folder left


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
    assert listing(target.parent) == ["lora"]


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
    start = ["init", "init_seconds", "init_error_before", "init_error_after"]
    assert runs.RESULT_FIELDS[len(documented) :] == later + sureness + start


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


def test_run_metrics_skips_a_last_row_cut_inside_its_last_number(tmp_path):
    """A row cut short inside its last field ("...,2.3456" cut to "...,2.3") still has every field, so it parses;
    only its missing newline tells it is not whole."""
    sink = runs.MetricsCSV(tmp_path / "metrics.csv")
    sink(MetricEvent("lora", 1, 2, 1.5, 0.01, 100.0, 1000, 2000, 1.2345))
    sink(MetricEvent("lora", 2, 2, 1.4, 0.01, 100.0, 1000, 2000, 2.3456))
    sink.close()
    path = tmp_path / "metrics.csv"
    path.write_bytes(path.read_bytes()[: -len(b"456\r\n")])
    got = runs.Run(tmp_path).metrics()
    assert [e.step for e in got] == [1]


def test_a_claimed_folder_nothing_was_written_to_can_be_dropped(tmp_path):
    first = runs.claim_run_dir(tmp_path, "run")
    second = runs.claim_run_dir(tmp_path, "run")
    assert (first.name, second.name) == ("run", "run-2")
    (second / "metrics.csv").write_text("step\n")
    runs.drop_if_empty(first)
    runs.drop_if_empty(second)  # holds something: kept
    assert not first.exists() and second.exists()


@pytest.mark.parametrize(
    "login, user",
    [
        ("ada", "ada"),
        ("ann/../etc", "ann_.._etc"),  # a slash would make the run folder two folders (or escape the runs folder)
        ("x" * 60, "x" * 40),  # check_user's limit
        ("jo@example.com", "jo_example.com"),
        ("  spaced   name ", "spaced name"),
        ("", "someone"),
        ("///", "___"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_the_login_name_default_is_a_name_check_user_accepts(monkeypatch, login, user):
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: login)
    assert runs.default_user() == user and runs.check_user(user) == user
    assert "/" not in runs.user_slug(runs.default_user())


def test_workbench_user_is_mended_the_same_way(monkeypatch):
    monkeypatch.setenv("WORKBENCH_USER", "Ms <b>Jones</b>")
    assert runs.default_user() == "Ms _b_Jones__b_"
    monkeypatch.setenv("WORKBENCH_USER", "Grace Hopper")
    assert runs.default_user() == "Grace Hopper"
