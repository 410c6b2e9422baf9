"""The Train tab (ui.train), driven without a browser: progress and live plots while it trains, Stop, errors
shown, the eval plan before Start, seeds, waiting for a turn, continuing a run, and how little time redrawing takes."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest
from helpers import tiny_config, wait_for

from workbench.core.config import preset_config
from workbench.machine import memory
from workbench.records import runs
from workbench.ui import Workbench
from workbench.ui import train as train_ui


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


def test_the_train_tab_shows_empty_axes_before_the_first_run(app):
    for img in (app.train.loss_image, app.train.memory_image):
        assert bytes(img.value).startswith(b"\x89PNG")


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


MiB = 1024**2


def test_the_train_tab_says_why_it_was_refused_and_leaves_no_empty_folder(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1 * MiB)
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path / "runs")
    assert wb.train.start() is None
    assert wb.wait(60)
    assert "will not fit" in wb.train.error.value and "Traceback" not in wb.train.error.value.split("<details>")[0]
    assert "nothing ran" in wb.train.status.value
    assert list((tmp_path / "runs").iterdir()) == []


def test_the_train_tab_claims_a_new_folder_when_the_name_is_taken(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    """Two kernels that start the same settings in the same second: the second gets its own folder."""
    monkeypatch.setattr("workbench.ui.train.run_name", lambda cfg, user=None: "20261201-120000-lora")
    (tmp_path / "runs" / "20261201-120000-lora").mkdir(parents=True)  # the other kernel's run
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1 * MiB)  # refused at once: quick
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path / "runs")
    wb.train.start()
    assert wb.train.run_dir.name == "20261201-120000-lora-2"
    assert wb.wait(60)


def test_the_train_tabs_plan_says_what_the_init_costs_before_start(app):
    from workbench.engine.estimator import init_cost_for
    from workbench.engine.layout import ModelLayout

    assert "wb-init-plan" not in app.train.plan.value  # gaussian costs nothing: no line
    app.adapter.init.value = "olora"
    cost = init_cost_for(ModelLayout.for_model(app.config.model.name), app.config, 4, "cpu")
    assert cost.layers == len(ModelLayout.for_model(app.config.model.name).selected("all-linear"))
    assert "wb-init-plan" in app.train.plan.value and "init olora: one QR per layer" in app.train.plan.value
    assert f"{cost.layers} layers" in app.train.plan.value
    app.adapter.init.value = "gaussian"
    assert "wb-init-plan" not in app.train.plan.value
