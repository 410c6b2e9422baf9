"""The notebook panels, driven without a browser: set widget values, click buttons, and check the
config they build, the events they get, and the plots and tables they redraw (tiny model, CPU)."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from workbench.core.config import VARIANTS, LoraSettings, QuantSettings, TrainSettings, help_for, preset_config
from workbench.core.stats import accuracy_interval
from workbench.engine.estimator import estimate
from workbench.records import runs
from workbench.ui import AdapterPanel, AppState, ComparePanel, ResultsPanel, SetupPanel, TrainPanel, Workbench
from workbench.ui import compare as compare_ui
from workbench.ui import train as train_ui
from workbench.ui.state import model_layout


def tiny_config(model_dir: Path, data: Path, **train):
    return preset_config(
        None,
        {
            "model": {"name": str(model_dir), "device": "cpu"},
            "task": None,
            "data": str(data),
            "lora": {"rank": 4, "alpha": 8.0, "target_modules": "all-linear"},
            "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "lr": 5e-3, **train},
            "variants": ["base", "lora", "qlora"],
        },
    )


@pytest.fixture
def app(tiny_model_dir, tiny_jsonl, tmp_path) -> Workbench:
    return Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path / "runs")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_jsonl, tmp_path_factory) -> Workbench:
    """One app that has finished a base/lora/qlora run (shared by the Compare and Results tests)."""
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl, steps=16, lr=1e-2), runs_dir=tmp_path_factory.mktemp("runs"))
    assert wb.train.start() is None
    assert wb.wait(120)
    assert wb.train.error.value == "", wb.train.error.value
    return wb


def wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- adapter & quantization


def test_target_checkboxes_are_the_models_own_linear_layers(app, load_tiny):
    from workbench.engine.layout import ModelLayout

    model = load_tiny(16)
    assert sorted(app.adapter.targets) == ModelLayout(model.config, model).target_names
    assert app.adapter.all_linear.value and all(b.disabled for b in app.adapter.targets.values())


def test_trainable_count_matches_peft_before_any_weight_loads(app, load_tiny):
    from workbench.engine.models import attach_lora

    app.adapter.rank.value = 8
    app.adapter.all_linear.value = False
    for name, box in app.adapter.targets.items():
        box.value = name in ("q_proj", "v_proj")
    assert app.config.lora.target_modules == ["q_proj", "v_proj"] and app.config.lora.rank == 8
    peft_model = attach_lora(load_tiny(16), app.config.lora, 16)
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert f"Trainable parameters: {trainable:,}</b>" in app.adapter.params_info.value
    assert f"of {total - trainable:,})" in app.adapter.params_info.value  # peft's total includes the adapter


def test_controls_set_the_run_config(app):
    a = app.adapter
    a.rank.value = 16
    a.alpha.value = 32.0
    a.dropout.value = 0.1
    a.rslora.value = True
    a.quant_type.value = "fp4"
    a.double_quant.value = False
    a.variants["lora8"].value = True
    a.variants["base"].value = False
    app.train.controls["steps"].value = 12
    app.train.controls["gradient_checkpointing"].value = True
    cfg = app.config
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.use_rslora) == (16, 32.0, 0.1, True)
    assert (cfg.quant.quant_type, cfg.quant.double_quant) == ("fp4", False)
    assert cfg.variants == ["lora", "lora8", "qlora"]
    assert cfg.train.steps == 12 and cfg.train.gradient_checkpointing
    assert "alpha/√r = 8</div>" in a.params_info.value  # rsLoRA scales by 32/sqrt(16)
    a.rslora.value = False
    assert "alpha/r = 2</div>" in a.params_info.value


def test_invalid_settings_are_refused_with_the_reason_and_the_controls_put_back(app):
    a = app.adapter
    a.all_linear.value = False
    for name, box in a.targets.items():
        box.value = name == "v_proj"
    a.targets["v_proj"].value = False  # nothing left to adapt
    assert "targets must name at least one module" in a.error.value
    assert app.config.lora.target_modules == ["v_proj"] and a.targets["v_proj"].value
    for box in a.variants.values():
        box.value = False
    assert "variants must name at least one" in a.error.value
    assert app.config.variants == ["qlora"] and a.variants["qlora"].value  # the last one stays ticked
    app.train.controls["lr"].value = 0.0
    assert "lr must be above 0" in app.train.error.value
    assert app.config.train.lr == 5e-3 and app.train.controls["lr"].value == 5e-3
    app.train.controls["lr"].value = 1e-3  # a valid change clears the message
    assert app.train.error.value == "" and app.config.train.lr == 1e-3


def test_estimate_bars_follow_the_controls(app):
    a = app.adapter
    before = a.chart.value
    est = a.estimates()
    assert list(est) == ["base", "lora", "qlora"]
    assert est["qlora"].components["weights (quantized layers)"] < est["lora"].components["weights"]
    assert "adapter" not in est["base"].components
    # the base variant is only evaluated, in evaluate()'s batches, whatever the training batch
    from workbench.engine.generate import EVAL_BATCH_SIZE

    cfg = app.config
    assert (
        est["base"].total
        == estimate(
            model_layout(cfg.model.name),
            bits=16,
            rank=None,
            batch_size=EVAL_BATCH_SIZE,
            seq_len=cfg.train.seq_len,
            train=False,
            dtype=app.state.base_dtype(),  # what the base is held in on this machine
        ).total
    )
    a.rank.value = 64
    assert a.chart.value != before and bytes(a.chart.value).startswith(b"\x89PNG")
    assert a.estimates()["lora"].components["adapter"] == 16 * est["lora"].components["adapter"]
    app.train.controls["batch_size"].value = 8  # the Train tab's shape feeds the same estimate
    assert a.estimates()["lora"].components["activations"] > est["lora"].components["activations"]
    a.variants["qlora"].value = False
    assert list(a.estimates()) == ["base", "lora"]


def test_every_control_carries_its_config_help():
    panel = AdapterPanel(AppState())
    assert panel.rank.tooltip == help_for(LoraSettings, "rank")
    assert panel.double_quant.tooltip == help_for(QuantSettings, "double_quant")
    train = TrainPanel(AppState())
    for name, widget in train.controls.items():
        assert widget.tooltip == help_for(TrainSettings, name), name


# ---------------------------------------------------------------------------- setup


def upload(panel: SetupPanel, name: str, content: bytes) -> None:
    panel.upload.value = (
        {
            "name": name,
            "type": "",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.now(timezone.utc),
        },
    )


def test_uploaded_file_becomes_the_data_and_a_bad_one_is_refused(app, tiny_jsonl):
    setup = app.setup
    upload(setup, "mine.jsonl", tiny_jsonl.read_bytes())
    saved = app.state.runs_dir / "uploads" / "mine.jsonl"
    assert app.config.data == str(saved) and app.config.task is None
    assert saved.read_bytes() == tiny_jsonl.read_bytes()
    assert "training and 3 held-out examples" in setup.data_info.value
    upload(setup, "bad.jsonl", b'{"prompt": "hello"}\n')
    assert "bad.jsonl" in setup.data_info.value and "wb-error" in setup.data_info.value
    assert app.config.data == str(saved)  # the good file stays in use
    setup.task.value = "sentiment"
    assert app.config.task == "sentiment" and app.config.data is None


def test_column_map_applies_to_an_uploaded_csv(app):
    setup = app.setup
    rows = "question,label\n" + "".join(f"Review: word{i},{'yes' if i % 2 else 'no'}\n" for i in range(20))
    upload(setup, "own.csv", rows.encode())
    assert "wb-error" in setup.data_info.value and "columns" in setup.data_info.value.lower()
    setup.columns.value = "prompt=question,answer=label"
    assert app.config.data.endswith("own.csv") and app.config.columns == "prompt=question,answer=label"


def test_unknown_model_is_explained_and_nothing_changes(app, tmp_path):
    before = app.config.model.name
    app.setup.model.value = str(tmp_path / "no-such-model")
    assert "wb-error" in app.setup.model_info.value and "no-such-model" in app.setup.model_info.value
    assert app.config.model.name == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_refused(app):
    app.setup.device.value = "cuda"
    assert "no CUDA GPU is visible" in app.setup.device_info.value
    assert app.setup.device.value == app.config.model.device == "cpu"


def test_setup_counts_and_previews_the_eval_split_the_run_uses(tiny_model_dir, tiny_jsonl, tmp_path):
    """With a separate eval file, the Setup tab shows that file's examples (as the run scores them), not a
    held-out share of the training data."""
    eval_file = tmp_path / "held_out.jsonl"
    eval_file.write_text("".join(tiny_jsonl.read_text().splitlines(keepends=True)[:5]))
    cfg = tiny_config(tiny_model_dir, tiny_jsonl)
    cfg.eval_data = str(eval_file)
    wb = Workbench(cfg, runs_dir=tmp_path / "runs")
    assert "20 training and 5 held-out examples" in wb.setup.data_info.value, wb.setup.data_info.value
    wb.setup.preview()
    assert wb.wait(30)
    assert "train 20 examples, eval 5 examples" in wb.setup.preview_out.value, wb.setup.preview_out.value


def test_preview_shows_templated_examples(app):
    app.setup.preview()
    assert app.wait(30)
    assert "<pre" in app.setup.preview_out.value and "tokens" in app.setup.preview_out.value


# ---------------------------------------------------------------------------- train


def test_training_updates_progress_and_plots_while_it_runs(app, monkeypatch):
    monkeypatch.setattr(train_ui, "REDRAW_SECONDS", 0.0)
    monkeypatch.setattr(train_ui, "REDRAW_SHARE", float("inf"))  # redraw after every step
    seen, lines = [], []
    app.train.loss_image.observe(lambda ch: seen.append(app.state.jobs.busy), "value")
    app.train.progress_text.observe(lambda ch: lines.append(ch["new"]), "value")
    app.train.start_button.click()
    assert app.train.start_button.disabled and not app.train.stop_button.disabled
    assert app.wait(120)
    t = app.train
    assert t.error.value == "", t.error.value
    assert [e.variant for e in t.events] == ["lora"] * 6 + ["qlora"] * 6
    # every phase moved the bar, with its count, in the run's order: 2 loads, base 2 phases, 3 per adapter
    phases = [re.match(r"\[(\d+)/(\d+)\] (\w+) ([^:]+):", line) for line in lines]
    order = list(dict.fromkeys((m.group(1), m.group(3)) for m in phases if m))
    assert order == [
        ("1", "loading"),
        ("2", "evaluating"),
        ("3", "answering"),
        ("4", "training"),
        ("5", "evaluating"),
        ("6", "answering"),
        ("7", "loading"),
        ("8", "training"),
        ("9", "evaluating"),
        ("10", "answering"),
    ]
    assert all(m.group(2) == "10" for m in phases if m)
    # the base's evaluation counts its examples from 0 (tiny.jsonl holds 3 out: one batch, so no ETA to give)
    assert any("evaluating base: 0 of 3 examples" in line for line in lines)
    assert any("evaluating base: 3 of 3 examples" in line for line in lines)
    assert any(re.search(r"training lora: 3 of 6 steps .*ETA .*loss", line) for line in lines)
    assert any("answering qlora: 3 of 3 prompts" in line for line in lines)
    assert any("evaluating lora: 3 of 3 examples" in line for line in lines)  # tiny.jsonl holds 3 out
    # the end: done, with the whole run's time (not the last step's), and no ETA left over
    assert t.progress.bar_style == "success" and t.progress.value == t.progress.max
    end = re.fullmatch(r"done · (\d+):(\d\d) elapsed", t.progress_text.value)
    assert end, t.progress_text.value
    assert int(end.group(1)) * 60 + int(end.group(2)) >= round(t.events[-1].elapsed_s)
    assert sum(seen) >= 12  # redrawn during training, once per step here, not only at the end
    # the run folder in one form, the absolute path the header shows for the runs folder
    assert t.run_dir.is_absolute() and str(t.run_dir) in t.status.value and "../" not in t.status.value
    assert set(t.estimates) == {"base", "lora", "qlora"} and all(v > 0 for v in t.estimates.values())
    run = t.run_dir
    res = runs.Run(run).read()
    assert [v["name"] for v in res["variants"]] == ["base", "lora", "qlora"]
    assert "<table" in t.results.value and "qlora" in t.results.value
    assert app.state.last_run == run and not t.start_button.disabled and t.stop_button.disabled


def test_live_memory_plot_names_what_the_device_measures_on_auto(app, monkeypatch):
    """On device "auto" with a GPU the live plot is CUDA memory, not "process RSS": the label follows the
    device the run picked, not the setting. A GPU is faked by a device choice that says cuda."""
    from workbench.analysis import plots
    from workbench.engine import models

    class FakeCuda(models.DeviceChoice):
        @property
        def type(self) -> str:
            return "cuda"

        def describe(self) -> str:
            return "cuda (a fake GPU)"

    real_pick = models.pick_device

    def pick(requested: str = "auto", dtype: str = "auto", bits: int = 16):
        cpu = real_pick("cpu", dtype, bits)
        return FakeCuda(cpu.device, cpu.dtype) if requested == "auto" else real_pick(requested, dtype, bits)

    monkeypatch.setattr(models, "pick_device", pick)
    assert app.train  # built (with its empty axes) before the plots are watched: only the run's count
    labels = []
    real_figure = plots.live_memory_figure

    def watched(*args, **kw):
        fig = real_figure(*args, **kw)
        labels.append(fig.axes[0].get_ylabel())
        return fig

    monkeypatch.setattr(plots, "live_memory_figure", watched)
    monkeypatch.setattr(train_ui, "REDRAW_SECONDS", 0.0)
    monkeypatch.setattr(train_ui, "REDRAW_SHARE", float("inf"))  # redraw after every step
    app.state.update("model", device="auto")
    app.state.update("train", steps=2)
    app.state.update(variants=["lora"])
    assert app.train.start() is None
    assert app.wait(60)
    assert app.train.error.value == "", app.train.error.value
    assert len(labels) >= 2 and all("CUDA allocated" in label for label in labels), labels


def _live_charts(losses: list[float]):
    """The Train tab's two live charts, drawn, after one lora step per loss (memory 300 + step MiB, peak 400 +)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from workbench.analysis import plots
    from workbench.core.events import MetricEvent

    mib = 1024**2
    events = [
        MetricEvent("lora", i, 30, loss, 1e-3, 1.0, (300 + i) * mib, (400 + i) * mib, float(i))
        for i, loss in enumerate(losses, 1)
    ]
    figures = plots.loss_figure(events), plots.live_memory_figure(events, {"lora": 500 * mib})
    for fig in figures:
        FigureCanvasAgg(fig).draw()
    return [fig.axes[0] for fig in figures]


def _labelled(axis, lo: float, hi: float) -> list[float]:
    """Where the ticks that carry a label lie inside lo..hi (major and minor)."""
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    return [t.get_loc() for t in ticks if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


@pytest.mark.parametrize("losses", [[0.957], [1.35, 0.957], [3.1, 1.3, 0.957]])
def test_the_live_charts_show_every_point_from_the_first_step(losses):
    """At step 1, 2 and 3 each point is drawn (a dot: one point drawn as a line alone is nothing), inside y
    limits with labelled ticks between them, and on an x axis labelled in whole steps."""
    loss_ax, memory_ax = _live_charts(losses)
    (line,) = loss_ax.lines
    assert line.get_marker() == "o" and list(line.get_ydata()) == losses
    lo, hi = loss_ax.get_ylim()
    assert all(lo < v < hi for v in losses), (lo, hi)
    assert len(_labelled(loss_ax.yaxis, lo, hi)) >= 2  # an axis that can be read, not one with no tick in it
    steps = range(1, len(losses) + 1)
    for ax in (loss_ax, memory_ax):
        xlo, xhi = ax.get_xlim()
        assert all(xlo < step < xhi for step in steps)
        assert set(_labelled(ax.xaxis, xlo, xhi)) >= set(steps)  # every step's tick labelled, whole numbers only
        assert all(float(t).is_integer() for t in _labelled(ax.xaxis, xlo, xhi))
    peak, after, estimate = memory_ax.lines
    assert peak.get_marker() == "o" and after.get_marker() == "o"
    lo, hi = memory_ax.get_ylim()
    assert all(lo < v < hi for v in [*peak.get_ydata(), *after.get_ydata()]) and lo < 500 <= hi, (lo, hi)


def test_the_loss_axis_turns_log_once_the_losses_span_enough_and_dots_stop_when_they_crowd():
    from workbench.analysis import plots

    losses = [3.0 * 0.9**i for i in range(plots.FEW_POINTS + 1)]
    (loss_ax, _) = _live_charts(losses)
    lo, hi = loss_ax.get_ylim()
    assert loss_ax.get_yscale() == "log" and all(lo < v < hi for v in losses)
    assert loss_ax.lines[0].get_marker() in ("None", "", None)  # 41 steps: a line, not a row of dots
    (loss_ax, _) = _live_charts(losses[:3])
    assert loss_ax.get_yscale() == "linear"  # 3.0 to 2.43: a log axis would have no tick inside it


def test_the_train_tabs_preset_eval_size_takes_what_a_small_split_has_and_says_so(tiny_model_dir, tiny_jsonl, tmp_path):
    cfg = preset_config(
        "cpu-demo", {"model": {"name": str(tiny_model_dir)}, "task": None, "data": str(tiny_jsonl)}
    )  # the preset's 60 eval examples over tiny.jsonl's 3
    t = Workbench(cfg, runs_dir=tmp_path / "runs").train
    said = "eval: the preset&#x27;s 60 examples, but tiny has 3 held-out examples: scoring all 3"
    assert said in t.plan.value and "wb-error" not in t.plan.value
    assert "eval: 3 of the task&#x27;s 3 held-out examples" in t.plan.value
    t.controls["eval_examples"].value = 5  # a number the user chose: too large is refused
    assert "has 3 held-out examples; ask for at most that many" in t.plan.value
    t.controls["eval_examples"].value = 60  # the preset's number again, but chosen now
    assert "ask for at most that many" in t.plan.value


def test_second_start_is_refused_while_one_runs(app):
    app.state.update("train", steps=400)
    assert app.train.start() is None
    try:
        refused = app.train.start()
        assert refused and "still running" in refused and "Stop" in refused
        assert "still running" in app.train.status.value
        assert "training is still running" in (app.compare.generate() or "")
    finally:
        app.train.stop()
        assert app.wait(60)


def test_stop_ends_within_a_step_and_keeps_what_was_trained(app):
    app.state.update("train", steps=400)
    app.train.start()
    wait_for(lambda: len(app.train.events) >= 2)
    app.train.stop_button.click()
    at_stop = len(app.train.events)
    assert app.wait(60)
    t = app.train
    assert len(t.events) <= at_stop + 1  # the step running at the click finishes, no more
    assert t.progress.bar_style == "warning" and "stopped" in t.status.value
    line = t.progress_text.value  # the state, not a stale ETA: what was done of what was asked
    assert line.startswith("stopped · ") and "ETA" not in line, line
    assert f"lora {len(t.events)} of 400 steps" in line and "qlora not run" in line
    run = t.run_dir
    assert (run / "adapters" / "lora" / "adapter_config.json").is_file()
    with open(run / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(t.events)
    rows = {v["name"]: v for v in runs.Run(run).read()["variants"]}
    assert rows["lora"]["status"] == "stopped" and rows["lora"]["steps_done"] == len(t.events)
    assert "qlora" not in rows  # never started
    assert app.state.last_run == run  # the stopped run is what Compare now answers with
    shown = app.results.frame()
    lora = shown[shown["variant"] == "lora"].iloc[0]
    assert lora["steps"] == f"{len(t.events)} of 400" and lora["status"] == "stopped (qlora not run)"


def test_an_error_in_training_is_shown_not_lost(app, tmp_path):
    data = tmp_path / "vanishing.jsonl"
    data.write_text(Path(app.config.data).read_text())
    app.setup.use_data(data)
    data.unlink()  # gone by the time the worker reads it
    app.train.start()
    assert app.wait(30)
    assert "wb-error" in app.train.error.value and "vanishing.jsonl" in app.train.error.value
    assert "<details>" in app.train.error.value  # the traceback, folded
    assert not app.train.start_button.disabled and app.train.progress.bar_style == "danger"
    assert not app.train.run_dir.exists()  # a data error creates no run folder


def test_the_eval_plan_shows_before_start_and_a_too_large_eval_size_is_refused(app):
    from workbench.data import task_for

    t = app.train
    assert len(task_for(app.config).eval) == 3  # the tiny task's 15% of 20 rows
    assert "wb-eval-plan" in t.plan.value and "Eval examples sets how many" in t.plan.value
    assert "eval: 3 of the task&#x27;s 3 held-out examples" in t.plan.value
    t.controls["eval_examples"].value = 2  # the plan follows the Eval examples box
    assert "eval: 2 of the task&#x27;s 3 held-out examples" in t.plan.value
    t.seeds.value = 3
    assert "× 3 seeds" in t.plan.value
    t.controls["eval_examples"].value = 5
    assert "has 3 held-out examples; ask for at most that many" in t.plan.value
    root = app.state.runs_dir
    before = sorted(root.glob("*")) if root.exists() else []
    reason = t.start()
    assert reason and "ask for at most that many" in reason and "ask for at most" in t.error.value
    assert t.error.value.count("wb-msg") == 1 and "<details>" not in t.error.value  # one line, no traceback
    assert not app.state.jobs.busy and not t.start_button.disabled
    assert (sorted(root.glob("*")) if root.exists() else []) == before  # no folder claimed


def test_seeds_train_each_setting_again_and_pool_their_verdicts(app):
    from workbench.experiments.seeds import MAX_SEEDS

    app.state.update("train", steps=2)
    app.state.update(variants=["base", "lora"])
    t = app.train
    assert (t.seeds.min, t.seeds.max, t.seeds.value) == (1, MAX_SEEDS, 1) and "seed" in t.seeds.tooltip
    t.seeds.value = 2
    assert t.start() is None and app.wait(120)
    assert t.error.value == "", t.error.value
    assert [f.name for f in t.folders] == ["seed-0", "seed-1"]
    assert sorted(p.name for p in t.run_dir.iterdir()) == ["seed-0", "seed-1"]
    assert all(runs.Run(f).finished for f in t.folders)
    assert [runs.Run(f).config().train.seed for f in t.folders] == [0, 1]
    assert app.state.last_run == t.folders[-1]  # the last seed's adapters answer in Compare
    # the pooled table: one row per variant, 2 seeds each, a mean and its interval
    assert "over 2 seeds" in t.results.value and "wb-seeds-table" in t.results.value
    pooled = t.results.value.split("<details>")[0]
    assert pooled.count("<td>2</td>") == 2 and "accuracy % 95% CI" in pooled
    assert t.results.value.count("<p>seed ") == 2  # each seed's own table, folded
    # over both seeds, base against LoRA on accuracy and on eval loss: verdicts on the settings, the seeds'
    # spread counted beside the 3 held-out examples (not 3 × 2 answers)
    sentences = t.verdict_sentences()
    assert len(sentences) == 2 and "over 2 seeds, each a verdict on the settings" in t.verdicts.value
    assert all("over 2 seeds each on the same 3 examples" in s for s in sentences), sentences
    assert "base and LoRA have the same" in sentences[0] or "t-test over runs and examples" in sentences[0]
    assert "done" in t.progress_text.value


def test_a_run_waiting_for_its_turn_says_where_it_stands_and_stop_leaves_nothing(app, monkeypatch, tmp_path):
    from workbench.machine import admission
    from workbench.machine.admission import Ledger

    monkeypatch.setenv("WORKBENCH_RUNS_AT_ONCE", "1")
    # a ledger of this test's own: a turn another test's job still holds in this process is not in its way
    monkeypatch.setattr(admission, "workbench_home", lambda: tmp_path / "home")
    held = Ledger().reserve(2**20, "cpu", "another kernel's run")  # the machine's one turn, taken
    try:
        assert app.train.start() is None
        # "about N min" comes between them once this machine has finished a run (the start estimated from those)
        wait_for(lambda: "waiting for its turn: 1st in line" in app.train.status.value)
        assert "(1 run going, 0.0 GiB reserved)" in app.train.status.value
        app.train.stop_button.click()
        assert app.wait(60)
        assert "stopped while it waited for its turn" in app.train.status.value
        assert not app.train.run_dir.exists()  # no empty folder for the Results tab to list
    finally:
        app.train.stop()
        app.wait(60)
        held.release()


def test_stop_ends_a_seeded_run_and_starts_no_more_seeds(app):
    app.state.update("train", steps=400)
    app.state.update(variants=["lora"])
    t = app.train
    t.seeds.value = 3
    assert t.start() is None
    wait_for(lambda: len(t.events) >= 2, 120)
    t.stop()
    assert app.wait(60)
    assert len(t.seed_results) == 1 and t.seed_results[0].stopped
    assert [p.name for p in t.run_dir.iterdir()] == ["seed-0"]  # seeds 1 and 2 never started
    assert t.progress_text.value.startswith("stopped")


# ---------------------------------------------------------------------------- compare


def test_generate_before_any_run_answers_with_base_and_says_what_to_do(app, monkeypatch):
    app.compare.prompt.value = "Review: superb"
    app.compare.max_new_tokens.value = 4
    assert app.compare.generate() is None
    assert app.wait(60)
    cols = app.compare.columns
    assert cols["base"].answer != "" and re.search(r"\d+ tokens? in", cols["base"].stats.value)
    assert "tok/s" not in cols["base"].stats.value  # 4 tokens: too short an answer to quote a speed
    assert cols["lora"].answer == "" and "train one first" in cols["lora"].stats.value
    # before any run the picker shows its one choice selected, and says what answers
    assert app.compare.run.value == compare_ui.BASE_ONLY and app.compare.run.label == compare_ui.NO_RUN


def test_the_run_picker_shows_what_answers_after_a_restart(trained):
    """A new kernel (a new Workbench on the same runs folder) answers with the newest run, and shows it."""
    again = Workbench(trained.state.config, runs_dir=trained.state.runs_dir)
    c = again.compare
    assert c.run.value is not None and c.run.value == again.state.last_run
    assert again.state.last_run.resolve() == trained.state.last_run.resolve()
    assert c.run.label and c.run.label != compare_ui.NO_RUN
    c.run.value = compare_ui.BASE_ONLY  # chosen on purpose: shown as chosen, and base alone answers
    assert again.state.last_run is None and c.run.label == compare_ui.NO_RUN_CHOSEN
    assert c.run.value == compare_ui.BASE_ONLY


def test_the_prompt_template_is_shown_and_wraps_a_free_form_prompt(app):
    c = app.compare
    assert "Review: {text}" in c.template.value and not c.wrap_button.disabled
    c.prompt.value = "superb"
    c.wrap_button.click()
    assert c.prompt.value == "Review: superb"
    c.wrap_button.click()  # already in the template: left alone
    assert c.prompt.value == "Review: superb"


def test_the_train_tab_shows_empty_axes_before_the_first_run(app):
    for img in (app.train.loss_image, app.train.memory_image):
        assert bytes(img.value).startswith(b"\x89PNG")


def test_the_model_box_fits_the_default_name(app):
    from workbench.core.config import DEFAULT_MODEL
    from workbench.ui.common import STYLE

    label = int(STYLE["description_width"].removesuffix("px"))
    # 8 px a character is the upper end of JupyterLab's 13 px UI font; 24 px for the box's padding
    assert int(app.setup.model.layout.width.removesuffix("px")) >= label + 8 * len(DEFAULT_MODEL) + 24


def test_generate_streams_three_answers_side_by_side(trained, monkeypatch):
    c = trained.compare
    assert c.run.value == trained.state.last_run
    updates: dict[str, int] = {}
    for v, col in c.columns.items():
        col.text.observe(lambda ch, v=v: updates.__setitem__(v, updates.get(v, 0) + 1), "value")
    c.prompt.value = "Review: superb"
    c.max_new_tokens.value = 6
    c.generate_button.click()
    assert trained.wait(60)
    assert "wb-error" not in c.status.value, c.status.value
    for v in ("base", "lora", "qlora"):
        col = c.columns[v]
        assert col.answer.strip(), v
        assert re.search(r"\d+ tokens? in", col.stats.value)
    # streamed: each column's text was redrawn once per new token, not only once at the end
    for v in ("base", "lora", "qlora"):
        tokens = int(re.search(r"(\d+) tokens? in", c.columns[v].stats.value).group(1))
        assert updates.get(v, 0) >= tokens >= 1, (v, updates, tokens)
    assert updates["base"] >= 3
    assert [type(ch).__name__ for ch in c.answers_box.children] == ["AnswerColumn"] * 3
    # QLoRA's slower answers on a CPU say why, beside them; the other columns carry no such note
    assert "dequantizes" in c.columns["qlora"].stats.value and "dequantizes" not in c.columns["lora"].stats.value


def test_generate_is_repeatable_with_a_seed(trained):
    c = trained.compare
    c.prompt.value = "Review: awful"
    c.max_new_tokens.value = 5
    c.temperature.value = 1.0
    c.seed.value = 3
    texts = []
    for _ in range(2):
        c.generate()
        assert trained.wait(60)
        texts.append([c.columns[v].answer for v in ("base", "lora", "qlora")])
    assert texts[0] == texts[1]


def test_evaluate_ticks_each_example_and_scores_each_variant(trained):
    c = trained.compare
    c.evaluate_button.click()
    assert trained.wait(120)
    assert "wb-error" not in c.status.value, c.status.value
    assert set(c.evaluation) == {"base", "lora", "qlora"}
    res = {v["name"]: v for v in runs.Run(trained.state.last_run).read()["variants"]}
    dtype = trained.state.session().base_dtype
    for v, e in c.evaluation.items():
        assert 0.0 <= e["accuracy"] <= 1.0
        assert e["accuracy"] == pytest.approx(res[v]["accuracy"])  # the same adapter, reloaded from disk
        # each accuracy with its Wilson interval over the examples scored, as the run on disk has it
        right, n_scored = sum(e["scores"]["correct"]), len(e["scores"]["correct"])
        ci = accuracy_interval(right, n_scored)
        assert (ci.low, ci.high) == pytest.approx((res[v]["accuracy_low"], res[v]["accuracy_high"]))
        assert f"{e['accuracy']:.1%}</b> ({100 * ci.low:.1f}–{100 * ci.high:.1f})" in c.eval_summary.value
        # the summary titles each variant as its answer column does (a float32 base is no 16-bit one)
        title = VARIANTS[v].title_for(dtype)
        assert f"<b>{title}</b>" in c.columns[v].title.value and f"<b>{title}</b>" in c.eval_summary.value
    if dtype == "float32":
        assert "LoRA (32-bit base)" in c.eval_summary.value and "16-bit" not in c.eval_summary.value
    # under it, the paired verdicts: base against each adapter, LoRA against QLoRA, on accuracy and eval loss
    sentences = c.verdict_sentences(dtype)
    assert len(sentences) == 6 and "Is the difference real?" in c.verdicts.value
    assert c.verdicts.value.count("class='wb-verdict'") == 6
    assert sentences[0].startswith("Base model") and VARIANTS["lora"].title_for(dtype) in sentences[0]
    assert all(html.escape(s) in c.verdicts.value for s in sentences)
    assert any("chance" in s or "exactly the same" in s for s in sentences)
    n = len(c.evaluation["base"]["predictions"])
    assert c.eval_table.value.count("<tr>") == n + 1
    assert c.eval_table.value.count(">✓") + c.eval_table.value.count(">✗") == 3 * n  # a mark per cell
    assert "overflow:auto" in c.eval_table.value and "white-space:nowrap" in c.eval_table.value
    # the table and the best/worst wrap under one another rather than overlap: each claims a width and scrolls
    assert c.eval_area.layout.flex_flow == "row wrap" and c.eval_area.children == (c.eval_table, c.extremes)
    for box in c.eval_area.children:
        assert box.layout.overflow == "auto" and box.layout.flex.endswith("px")
    # beside the table, each variant's worst and best held-out examples by answer loss
    for v in ("base", "lora", "qlora"):
        assert f"<b>{v}</b>" in c.extremes.value
    assert c.extremes.value.count(">worst<") == c.extremes.value.count(">best<") == 3 * min(n, 3)
    assert c.progress_text.value.startswith("[3/3] evaluating qlora: ")  # progress, variant by variant
    assert f"{n} of {n} examples" in c.progress_text.value


# ---------------------------------------------------------------------------- results


def test_results_show_every_run_on_disk_with_chart_and_export(trained, tiny_model_dir, tiny_jsonl):
    from workbench.experiments.comparison import run_compare

    root = trained.state.runs_dir
    earlier = tiny_config(tiny_model_dir, tiny_jsonl, steps=2)
    earlier.variants = ["lora"]
    run_compare(earlier, root / "sweep" / "earlier")  # a run from before this session, one level deeper
    panel = ResultsPanel(trained.state)
    runs_seen = {r.run for r in panel.rows}
    assert str(Path("sweep") / "earlier") in runs_seen and trained.state.last_run.name in runs_seen
    df = panel.frame()
    assert len(df) == len(panel.rows) >= 4
    assert {"accuracy % (95% CI)", "peak MiB", "rank", "targets"} <= set(df.columns)
    # each score with its interval: "80.0 (69.1–88.0)", as the run's result gives it
    first = panel.shown[0].result
    assert df["accuracy % (95% CI)"].iloc[0] == first.with_text("accuracy", 100, 1)
    assert re.fullmatch(r"\d+\.\d \(\d+\.\d–\d+\.\d\)", df["accuracy % (95% CI)"].iloc[0])
    assert "<table" in panel.table.value and "earlier" in panel.table.value
    # long run names shortened to one line, the whole name on hover
    long_name = trained.state.last_run.name
    assert len(long_name) > 28 and f"title='{long_name}'" in panel.table.value
    assert f">{long_name}<" not in panel.table.value and "white-space:nowrap" in panel.table.value
    assert panel.chart.layout.max_width == "100%"
    assert bytes(panel.chart.value).startswith(b"\x89PNG")
    chart = panel.chart.value
    panel.memory_kind.value = "weight_bytes"
    assert panel.chart.value != chart
    # any score against any cost
    for score in ("eval_loss", "forgetting"):
        panel.score_kind.value = score
        assert bytes(panel.chart.value).startswith(b"\x89PNG")
    # runs side by side: their curves on one plot, and the settings that differ
    this = trained.state.last_run.name
    assert set(panel.pick_runs.options) >= {this, str(Path("sweep") / "earlier")}
    panel.pick_runs.value = (this, str(Path("sweep") / "earlier"))
    assert bytes(panel.overlay_loss.value).startswith(b"\x89PNG") and panel.overlay_memory.layout.display is None
    assert "train.steps" in panel.settings.value and "variants" in panel.settings.value
    assert "lora.rank" not in panel.settings.value  # the same in both: left out
    panel.only_differences.value = False
    assert "lora.rank" in panel.settings.value
    path = panel.export()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(panel.rows) and rows[0]["run"] and "accuracy" in rows[0]
    # the CSV keeps the numbers, the interval's ends in columns of their own
    assert float(rows[0]["accuracy_low"]) <= float(rows[0]["accuracy"]) <= float(rows[0]["accuracy_high"])
    assert "download" in panel.export_info.value and "base64," in panel.export_info.value


def test_results_pool_seeds_and_a_class_and_pair_runs_only_on_the_same_examples(tiny_model_dir, tiny_jsonl, tmp_path):
    from workbench.experiments.comparison import run_compare
    from workbench.experiments.seeds import run_seeds

    root = tmp_path / "runs"
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=2)
    cfg.variants = ["lora"]
    run_seeds(cfg, root / "rep", 2, user="ana")  # rep/seed-0 and rep/seed-1
    run_compare(cfg, root / "ben-run", user="ben")  # a classmate's run of the same setting
    fewer = tiny_config(tiny_model_dir, tiny_jsonl, steps=2, eval_examples=2)
    fewer.variants = ["lora"]
    run_compare(fewer, root / "fewer", user="ana")  # scored on 2 examples, not 3
    panel = ResultsPanel(AppState(runs_dir=root))
    assert len(panel.rows) == 4
    # one point a run: every one has its bars, and the caption says so
    assert "error bars: 95% intervals (4 of 4 points have one)" in panel.caption.value
    assert panel.pooled_table.value == ""
    before = panel.chart.value
    panel.pool.value = True
    # the two seeds and Ben's run are one setting (3 runs), the 2-example run another
    groups = panel.settings_groups()
    assert sorted(g.n for g in groups) == [1, 3] and panel.chart.value != before
    assert "each point is the mean of a setting&#x27;s runs (1 of 2 settings repeated" in panel.caption.value
    assert "(2 of 2 points have one)" in panel.caption.value
    assert panel.pooled_table.value.count("</tr>") == 3 and "<td>3</td>" in panel.pooled_table.value
    three = next(g for g in groups if g.n == 3)
    ci = three.interval("accuracy")
    assert f"{100 * ci.low:.1f}–{100 * ci.high:.1f}" in panel.pooled_table.value
    assert sorted(three.people) == ["ana", "ana", "ben"]
    panel.person.value = "ben"  # one person's runs pool alone
    assert "(0 of 1 settings repeated" in panel.caption.value
    panel.person.value = ""
    # runs side by side: two runs scored on the same examples pair example by example
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), "ben-run")
    sentences = panel.pair_sentences([runs.Run(root / n) for n in panel.pick_runs.value])
    assert len(sentences) == 3 and all("3 examples" in s for s in sentences[:2]), sentences
    assert "forgetting (general-text loss)" in sentences[2]  # paired on the general text's blocks
    assert sentences[0].startswith("LoRA of rep/seed-0 ") and "LoRA of ben-run" in sentences[0]
    assert (
        "Is the difference real?" in panel.pair_verdicts.value and "cannot be paired" not in panel.pair_verdicts.value
    )
    # the seeds of a data file keep the first seed's held-out split, so they pair too
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), str(Path("rep") / "seed-1"))
    assert (
        "Is the difference real?" in panel.pair_verdicts.value and "cannot be paired" not in panel.pair_verdicts.value
    )
    # runs scored on different examples are never paired: the statement, then each one's interval alone
    panel.pick_runs.value = (str(Path("rep") / "seed-0"), "fewer")
    text = panel.pair_verdicts.value
    assert "were not scored on the same examples, so they cannot be paired" in text
    assert "(3 eval examples)" in text and "(2)" in text and "chance" not in text
    fewer_result = runs.Run(root / "fewer").results()[0]
    assert html.escape(f"LoRA of fewer: accuracy {fewer_result.with_text('accuracy', 100, 1)} %") in text
    panel.pick_runs.value = tuple(panel.pick_runs.options[:3])
    assert "Pick one run" in panel.pair_verdicts.value
    # a run removed between the scan and pooling (a shared folder tidied): a setting of its own, no error
    later = ResultsPanel(AppState(runs_dir=root))
    shutil.rmtree(root / "fewer")
    later.pool.value = True
    assert sorted(g.n for g in later.settings_groups()) == [1, 3] and "(2 of 2 points have one)" in later.caption.value


def test_results_panel_with_no_runs_says_so(tmp_path):
    panel = ResultsPanel(AppState(runs_dir=tmp_path / "none"))
    assert panel.rows == [] and "No runs yet" in panel.info.value
    assert panel.export() is None and "Nothing to export" in panel.export_info.value


def test_a_finished_training_refreshes_results_and_compare(trained):
    assert trained.state.last_run.name in {r.run for r in trained.results.rows}
    assert trained.compare.run.value == trained.state.last_run


def test_panels_can_be_shown_alone_and_the_app_has_its_tabs(app):
    for cls in (SetupPanel, AdapterPanel, TrainPanel, ComparePanel, ResultsPanel):
        panel = cls()
        assert panel.children and isinstance(panel.state, AppState)
    assert list(app.tabs.titles) == [
        "Setup",
        "Adapter & quantization",
        "Train",
        "Sweep",
        "Compare",
        "Results",
        "LoRA explained",
        "Quantization explained",
    ]
    assert json.dumps(app.config.to_dict())  # the settings stay plain data


# ---------------------------------------------------------------------------- sweep


def test_the_sweep_tab_plans_runs_and_charts_a_grid(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {2, 4}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16, 4})):
        for value, box in boxes.items():
            box.value = value in keep
    assert "4 points: 0 already on disk, 4 to train" in s.plan_info.value
    assert s.plan_table.value.count("<tr>") == 5 and "4bit-nf4-r4-q_proj+v_proj" in s.plan_table.value
    assert "wb-eval-plan" in s.plan_info.value and "eval: 3 of the task&#x27;s 3 held-out examples" in s.plan_info.value
    s.bits[16].value = s.bits[4].value = s.bits[8].value = False  # nothing to sweep: said, and Start is off
    assert "bits" in s.plan_info.value and s.start_button.disabled
    s.bits[16].value = s.bits[4].value = True
    app.state.update("train", steps=2)
    assert s.start() is None
    assert s.wait(180)
    assert [p.status for p in s.points] == ["trained"] * 4, s.status.value
    assert s.table.value.count("</tr>") == 5 and bytes(s.chart.value).startswith(b"\x89PNG")
    assert s.progress_text.value.startswith("done · ") and "4 trained" in s.progress_text.value
    assert "frontier" in s.status.value and s.frontier()
    assert "accuracy 95% CI" in s.table.value and s.pooled.value == ""  # one seed: no pooled table
    assert {r.run.split("/")[-1] for r in app.results.rows} >= {p.label for p in s.points}  # Results has them
    assert "4 already on disk, 0 to train" in s.plan_info.value  # the same grid again: nothing to train
    s.start()
    assert s.wait(60) and [p.status for p in s.points] == ["loaded"] * 4


def test_sweep_seeds_repeat_each_point_and_pool_them(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {2}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16, 4})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    s.seeds.value = 2
    assert "4 points (2 settings × 2 seeds): 0 already on disk" in s.plan_info.value
    labels = [p.label for p in s.plan.points]
    assert labels == [
        "16bit-r2-q_proj+v_proj",
        "16bit-r2-q_proj+v_proj-seed1",
        "4bit-nf4-r2-q_proj+v_proj",
        "4bit-nf4-r2-q_proj+v_proj-seed1",
    ]
    assert all(f">{html.escape(label)}<" in s.plan_table.value for label in labels)
    assert s.start() is None and s.wait(240)
    assert [p.status for p in s.points] == ["trained"] * 4, s.status.value
    assert s.table.value.count("</tr>") == 5 and "accuracy 95% CI" in s.table.value
    # one row a setting: 2 seeds each, the mean and its interval
    assert s.pooled.value.count("</tr>") == 3 and s.pooled.value.count("<td>2</td>") == 2
    assert "16bit-r2-q_proj+v_proj</td>" in s.pooled.value
    # the frontier through the means: every name it gives is a setting (no -seed folder)
    front = s.frontier()
    assert front and all(not name.endswith("-seed1") for name in front)
    assert "frontier (each setting&#x27;s mean over its seeds)" in s.status.value
    assert bytes(s.chart.value).startswith(b"\x89PNG")


def test_the_sweep_tab_searches_as_a_study_and_lists_its_trials(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {1, 8}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    s.search.value = 3
    assert "search: 3 settings" in s.plan_info.value and "rank 1–8" in s.plan_info.value and s.plan_table.value == ""
    assert "optuna-dashboard" in s.study_info.value and s.out_dir.name == "search"
    assert s.start() is None and s.wait(240)
    assert len(s.points) == 3 and {p.status for p in s.points} == {"trained"}, s.status.value
    assert all(1 <= p.point.rank <= 8 and p.point.lr is not None for p in s.points)
    assert "3 finished" in s.study_info.value and s.trials.value.count("</tr>") == 4
    assert "complete" in s.trials.value and "worker" in s.trials.value and "person" in s.trials.value
    assert (s.out_dir / "trials.csv").is_file() and (s.out_dir / "sweep.png").is_file()
    assert bytes(s.chart.value).startswith(b"\x89PNG")
    # Results reads the study too: its folder, its trials by state and the dashboard command
    app.results.refresh()
    assert "search · study" in app.results.studies.value and "3 finished" in app.results.studies.value
    assert "optuna-dashboard" in app.results.studies.value
    (s.out_dir.parent / "broken").mkdir()
    (s.out_dir.parent / "broken" / "study.sqlite3").write_bytes(b"not a database at all" * 100)
    app.results.refresh()  # someone's damaged file is named, and everything else still shows
    assert "broken: not a readable study" in app.results.studies.value and "3 finished" in app.results.studies.value


def test_sweep_stop_starts_no_new_point_then_stops_the_running_one(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {1, 2, 4}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    assert s.start() is None
    s.stop()  # the first press: nothing new starts; the point going (if any) finishes
    assert "no new point will start" in s.status.value and not s.stop_button.disabled
    assert s.wait(120)
    assert len([p for p in s.points if p.status == "trained"]) <= 1 and not app.state.jobs.stop.is_set()
    assert "stopped" in s.progress_text.value


def test_live_plots_take_at_most_a_small_share_of_the_training_time(app):
    """A redraw runs between steps in the training thread: after one that took 1 s the next waits 1 s /
    REDRAW_SHARE, except the last step of a variant, which is always drawn."""
    from workbench.core.events import MetricEvent

    t = app.train
    t.redraw()
    t._draw_cost, t._last_draw = 1.0, time.monotonic()
    before = t.redraws
    for step in range(1, 10):
        t._on_event(MetricEvent("lora", step, 10, 1.0, 1e-3, 1.0, 1, 1, float(step)))
    assert t.redraws == before
    assert 1.0 / train_ui.REDRAW_SHARE >= 30  # so at most ~3% of the time goes to drawing
    t._on_event(MetricEvent("lora", 10, 10, 1.0, 1e-3, 1.0, 1, 1, 10.0))
    assert t.redraws == before + 1


def test_continue_trains_the_last_run_on_and_its_curve_goes_on(app):
    app.state.update("train", steps=3)
    app.state.update(variants=["lora"])
    t = app.train
    assert "No run to continue" in (t.continue_last() or "") + t.status.value
    assert t.start() is None and app.wait(60)
    run = t.run_dir
    assert "raise Steps above 3" in (t.continue_last() or "")  # nothing more to do at the same Steps
    app.state.update("train", steps=5)
    assert t.continue_last() is None and app.wait(60)
    assert t.error.value == "", t.error.value
    assert t.run_dir == run and [e.step for e in t.events] == [1, 2, 3, 4, 5]  # one curve, continued
    assert runs.Run(run).read()["variants"][0]["steps_done"] == 5 and "done" in t.progress_text.value


def test_a_kernel_on_glibc_is_told_its_peaks_will_run_above_the_estimate(monkeypatch):
    from workbench.machine import allocator
    from workbench.ui.setup import allocator_line as setup_allocator_line

    monkeypatch.setattr(allocator, "fast_path", lambda: "/x/cmeel.prefix/lib/libmimalloc.so")
    monkeypatch.setattr(allocator, "in_use", lambda: "glibc")
    assert "make lab" in train_ui.allocator_note()
    assert "Allocator: glibc" in setup_allocator_line() and "make lab" in setup_allocator_line()
    monkeypatch.setattr(allocator, "fast_path", lambda: None)
    assert train_ui.allocator_note() == "" and "make lab" not in setup_allocator_line()
    for name in ("tcmalloc", "mimalloc"):
        monkeypatch.setattr(allocator, "in_use", lambda name=name: name)
        assert train_ui.allocator_note() == ""
        assert f"Allocator: {name}, preloaded" in setup_allocator_line()
