"""run_compare on the tiny model (experiments.comparison): the run folder it writes, progress of every phase,
sinks and status, Stop after a step, the same losses twice in one process, a stopped run continued as if it had
not stopped, the memory check before anything loads, and the dtype each variant got."""

from __future__ import annotations

import csv
import json
import math
import os
import threading

import pytest
import torch
from helpers import is_png, tiny_config

from workbench.core.events import Hooks, MetricEvent
from workbench.experiments import comparison, run_setup
from workbench.experiments.comparison import run_compare
from workbench.machine import memory
from workbench.records import runs
from workbench.records.results import results_frame

STEPS = 3
TRAINING_FIELDS = ["rank", "target_modules", "train_seconds", "tokens_per_second", "final_train_loss", "steps_done"]


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    """One compare of base, lora and qlora, shared by the tests that read its folder."""
    out = tmp_path_factory.mktemp("compare") / "run"
    events, statuses = [], []
    result = run_compare(
        tiny_config(tiny_model_dir, tiny_jsonl),
        out,
        Hooks(sinks=(events.append,), on_status=statuses.append, on_progress=PROGRESS.append),
    )
    return result, out, events, statuses


PROGRESS: list = []  # what full_run's on_progress was told


def test_each_variant_is_scored_on_the_general_text_for_forgetting(full_run):
    result, out, _, _ = full_run
    rows = {v["name"]: v for v in runs.Run(out).read()["variants"]}
    assert all(r["general_loss"] > 0 for r in rows.values())
    assert rows["base"]["forgetting"] is None
    # lora trains on the 16-bit base that the base row is: its forgetting is the difference of the two
    assert rows["lora"]["forgetting"] == pytest.approx(rows["lora"]["general_loss"] - rows["base"]["general_loss"])
    assert rows["qlora"]["forgetting"] is not None  # against its own 4-bit base


def test_every_phase_reports_progress_with_counts(full_run):
    """Loading, evaluating, training and answering each tell where they are, in order, to the end."""
    phases = list(dict.fromkeys((p.stage, p.phase, p.variant) for p in PROGRESS))
    assert [(st, ph, v) for st, ph, v in phases] == [
        (1, "load", "the 16-bit base"),
        (2, "evaluate", "base"),
        (3, "answer", "base"),
        (4, "train", "lora"),
        (5, "evaluate", "lora"),
        (6, "answer", "lora"),
        (7, "load", "the 4-bit base"),
        (8, "train", "qlora"),
        (9, "evaluate", "qlora"),
        (10, "answer", "qlora"),
    ]
    assert {p.stages for p in PROGRESS} == {10}
    for stage, _, _ in phases:
        told = [p for p in PROGRESS if p.stage == stage]
        assert told[0].done == 0 and told[-1].finished  # from the start of each phase to its end
        assert [p.done for p in told] == sorted(p.done for p in told)
    assert [p.done for p in PROGRESS if p.phase == "train" and p.variant == "lora"] == list(range(STEPS + 1))
    assert [(p.done, p.total, p.unit) for p in PROGRESS if p.stage == 2][-1] == (3, 3, "examples")
    middle = next(p for p in PROGRESS if p.phase == "train" and p.done == 1)
    assert middle.eta_s is not None and "ETA" in middle.describe() and f"1 of {STEPS} steps" in middle.describe()


def test_results_json_fields(full_run):
    result, out, _, _ = full_run
    doc = runs.Run(out).read()
    assert doc["stopped"] is False and result.stopped is False
    assert doc["task"] == "tiny" and doc["device"].startswith("cpu")
    assert doc["config"]["variants"] == ["base", "lora", "qlora"]
    by_name = {v["name"]: v for v in doc["variants"]}
    assert list(by_name) == ["base", "lora", "qlora"]
    for v in doc["variants"]:
        assert list(v) == runs.RESULT_FIELDS  # the documented fields, then steps_done and status
        assert v["status"] == "done"
        assert v["total_params"] > 0 and v["weight_bytes"] > 0
        assert v["peak_memory_bytes"] >= 0 and v["estimated_peak_bytes"] > 0
        assert 0.0 <= v["accuracy"] <= 1.0
        assert v["eval_loss"] > 0 and v["perplexity"] == pytest.approx(math.exp(v["eval_loss"]))
    base = by_name["base"]
    assert base["bits"] == 16 and base["trainable_params"] == 0
    assert all(base[k] is None for k in TRAINING_FIELDS)
    for name, bits in (("lora", 16), ("qlora", 4)):
        v = by_name[name]
        assert v["bits"] == bits and v["rank"] == 4 and v["target_modules"] == "all-linear"
        assert v["trainable_params"] == 4 * 2048 and v["steps_done"] == STEPS
        assert v["train_seconds"] > 0 and v["tokens_per_second"] > 0 and math.isfinite(v["final_train_loss"])
    assert by_name["qlora"]["weight_bytes"] < by_name["lora"]["weight_bytes"]
    assert all(v["estimated_peak_bytes"] > v["weight_bytes"] for v in doc["variants"])
    # the unquantized base is held in this machine's compute dtype, the 4-bit one in NF4
    assert by_name["qlora"]["base_dtype"] == "nf4" and by_name["lora"]["base_dtype"] == doc["device"].split("(")[1][:-1]
    assert len({v["total_params"] for v in doc["variants"]}) == 1  # 4-bit weights counted by element


def test_run_folder_files(full_run):
    result, out, _, _ = full_run
    expected = {
        "results.json",
        "results.csv",
        "metrics.csv",
        "loss.png",
        "memory.png",
        "accuracy_vs_memory.png",
        "generations.md",
        "predictions.json",
        "scores.json",
        "adapters",
    }
    assert set(os.listdir(out)) == expected  # nothing else: no temp files
    for png in ("loss.png", "memory.png", "accuracy_vs_memory.png"):
        assert is_png(out / png), png
    assert sorted(os.listdir(out / "adapters")) == ["lora", "qlora"]
    for name in ("lora", "qlora"):
        assert (out / "adapters" / name / "adapter_config.json").is_file()
        assert (out / "adapters" / name / "adapter_model.safetensors").is_file()

    table = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in table] == ["base", "lora", "qlora"]
    assert list(table[0]) == runs.RESULT_FIELDS
    assert table[0]["rank"] == "" and table[1]["rank"] == "4"

    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(metrics) == 2 * STEPS  # trained variants x steps
    assert [(m["variant"], int(m["step"])) for m in metrics] == [
        (v, s) for v in ("lora", "qlora") for s in range(1, STEPS + 1)
    ]
    assert list(metrics[0]) == list(MetricEvent.__dataclass_fields__)
    assert len(result.metrics) == 2 * STEPS

    md = (out / "generations.md").read_text()
    assert md.startswith("# Side-by-side answers (tiny)")
    assert "| base | lora | qlora |" in md
    prompts = list(result.generations)
    assert prompts and all(p in md for p in prompts)
    assert all(set(answers) == {"base", "lora", "qlora"} for answers in result.generations.values())

    preds = json.loads((out / "predictions.json").read_text())
    assert set(preds) == {"base", "lora", "qlora"} and len(preds["base"]) == 3  # 15% of 20 held out


def test_sinks_and_status(full_run):
    _, _, events, statuses = full_run
    assert [(e.variant, e.step) for e in events] == [(v, s) for v in ("lora", "qlora") for s in range(1, STEPS + 1)]
    assert statuses[0].startswith("resolving model")
    assert any("4 bits" in s for s in statuses) and any("training qlora" in s for s in statuses)


def test_results_frame_of_a_run(full_run):
    result, _, _, _ = full_run
    table = results_frame(result.variants)
    assert list(table.index) == ["base", "lora", "qlora"]
    assert table.loc["base", "trainable"] == "-" and table.loc["lora", "trainable"] == "8,192"


def test_stop_after_first_lora_step(tiny_model_dir, tiny_jsonl, tmp_path):
    stop = threading.Event()

    def sink(e):
        if e.variant == "lora" and e.step == 1:
            stop.set()

    out = tmp_path / "run"
    result = run_compare(tiny_config(tiny_model_dir, tiny_jsonl), out, Hooks(sinks=(sink,), stop=stop))
    assert result.stopped
    doc = runs.Run(out).read()
    assert doc["stopped"] is True
    assert [v["name"] for v in doc["variants"]] == ["base", "lora"]  # qlora never started
    lora = doc["variants"][1]
    assert lora["status"] == "stopped" and lora["steps_done"] == 1
    assert lora["eval_loss"] is None and lora["accuracy"] is None and lora["final_train_loss"] is not None
    assert doc["variants"][0]["status"] == "done"
    assert (out / "adapters" / "lora" / "adapter_model.safetensors").is_file()
    assert not (out / "adapters" / "qlora").exists()
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1
    assert is_png(out / "loss.png") and (out / "generations.md").is_file()


def test_same_config_same_losses_in_one_process(tiny_model_dir, tiny_jsonl, tmp_path):
    """'the same seed gives the same losses' also for a second compare in the same process (a notebook)."""
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=3)
    first = run_compare(cfg, tmp_path / "a")
    import torch

    torch.rand(100)  # whatever ran in between must not matter
    second = run_compare(cfg, tmp_path / "b")
    assert [m.loss for m in first.metrics] == [m.loss for m in second.metrics]


def test_a_stopped_run_continued_matches_one_run_in_one_go(tiny_model_dir, tiny_jsonl, tmp_path):
    """10 steps, a stop, then 10 more from the saved adapter and optimizer state: the same adapters as 20
    steps in one go (the same batches, dropout masks and AdamW moments), and one loss curve, not two."""
    from peft import load_peft_weights

    from workbench.experiments.comparison import continue_run

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora,qlora", steps=20, warmup_steps=3)
    stop = threading.Event()
    stopped = run_compare(cfg, tmp_path / "a", Hooks(stop=stop, sinks=(lambda e: e.step == 10 and stop.set(),)))
    assert stopped.stopped and [v.steps_done for v in stopped.variants] == [10]  # qlora never started
    assert runs.Run(tmp_path / "a").training_state("lora").step == 10
    resumed = continue_run(tmp_path / "a")
    assert not resumed.stopped and [(v.name, v.steps_done) for v in resumed.variants] == [("lora", 20), ("qlora", 20)]
    whole = run_compare(cfg, tmp_path / "b")
    for name in ("lora", "qlora"):
        a = load_peft_weights(str(tmp_path / "a" / "adapters" / name))
        b = load_peft_weights(str(tmp_path / "b" / "adapters" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [(r["variant"], int(r["step"])) for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv"))]
    assert steps == [("lora", i) for i in range(1, 21)] + [("qlora", i) for i in range(1, 21)]
    losses = {v.name: v.final_train_loss for v in whole.variants}
    assert {v.name: v.final_train_loss for v in resumed.variants} == pytest.approx(losses, rel=1e-5)
    # nothing left to do at 20 steps: asked for fewer than done, it says so
    with pytest.raises(ValueError, match="done 20 steps already"):
        continue_run(tmp_path / "a", steps=5)


def test_a_run_says_which_dtype_each_variant_got(bf16_native, tiny_model_dir, tiny_jsonl, tmp_path):
    """The bfloat16 path end to end on the tiny model: LoRA trains and scores on a bfloat16 base, QLoRA
    computes in float32, and the results name each base's dtype."""
    result = run_compare(tiny_config(tiny_model_dir, tiny_jsonl, steps=2), tmp_path / "run")
    dtypes = {v.name: v.base_dtype for v in result.variants}
    assert dtypes == {"base": "bfloat16", "lora": "bfloat16", "qlora": "nf4"}
    for v in result.variants:
        assert v.eval_loss is not None and v.eval_loss == v.eval_loss  # scored, not NaN


MiB = 1024**2


def test_a_tight_variant_is_warned_about_and_runs(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=1)
    s = run_setup.setup(cfg)
    need = s.estimate("lora")
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: int(need / 0.9))
    said = []
    result = comparison.run_compare(cfg, tmp_path / "run", Hooks(on_status=said.append))
    assert result.variants[0].status == "done"
    assert any("tight" in n for n in result.notes) and any("tight" in s for s in said)
    assert any("tight" in n for n in runs.Run(tmp_path / "run").read()["notes"])  # kept with the run


def test_skip_fit_check_runs_all_the_same(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1 * MiB)
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=1)
    with pytest.raises(ValueError, match="will not fit"):
        comparison.run_compare(cfg, tmp_path / "refused")
    assert comparison.run_compare(cfg, tmp_path / "run", fit_check=False).variants[0].status == "done"
