"""The Adapter & quantization tab (ui.adapter): target boxes from the model's own layers, the trainable count
before any weight loads, controls that set the config (and are put back when refused), the estimate bars, a fit
badge per variant, the experts of a mixture, and the QLoRA saving by model size."""

from __future__ import annotations

from pathlib import Path

from helpers import family_folder, tiny_config

from workbench.core.config import DEFAULT_MODEL, LoraSettings, QuantSettings, TrainSettings, help_for, preset_config
from workbench.engine.estimator import estimate
from workbench.engine.layout import ModelLayout
from workbench.engine.models import attach_lora
from workbench.machine import memory
from workbench.records import runs
from workbench.records.results import VariantResult
from workbench.ui import AdapterPanel, AppState, TrainPanel, Workbench
from workbench.ui.adapter import SavingBySize
from workbench.ui.state import model_layout


def test_the_adapter_tab_offers_the_experts_as_a_choice_with_its_cost(family_dirs, tiny_jsonl, tmp_path):
    from workbench.ui import AdapterPanel, AppState

    def panel(family):
        cfg = tiny_config(family_folder(family_dirs, family), tiny_jsonl)
        return AdapterPanel(AppState(cfg, runs_dir=tmp_path))

    assert panel("llama").experts.layout.display == "none"  # no experts: no checkbox
    tab = panel("mixtral")
    layout = ModelLayout.for_model(str(family_dirs["mixtral"]))
    assert tab.experts.layout.display is None and tab.experts.value  # shown, on by default
    with_experts = layout.adapter_params(4, "all-linear")
    assert f"Trainable parameters: {with_experts:,}</b>" in tab.params_info.value
    assert "and 4 expert weights" in tab.params_info.value
    assert "Dropout 0.05 becomes 0 for this adapter" in tab.params_info.value
    assert "expert updates" in tab.estimates()["lora"].components
    tab.experts.value = False
    assert tab.state.config.lora.adapt_experts is False
    without = layout.adapter_params(4, "all-linear", adapt_experts=False)
    assert without < with_experts and f"Trainable parameters: {without:,}</b>" in tab.params_info.value
    assert "becomes 0" not in tab.params_info.value and "expert updates" not in tab.estimates()["lora"].components


def fake_run(root: Path, name: str, model: str, peaks: dict[str, int], rank: int = 8) -> None:
    cfg = preset_config(None, {"model": {"name": model}, "variants": list(peaks), "lora": {"rank": rank}})
    results = [
        VariantResult(v, 16 if v == "lora" else 4, rank=rank, target_modules="all-linear", peak_memory_bytes=p)
        for v, p in peaks.items()
    ]
    doc = {"config": cfg.to_dict(), "device": "cpu (float32)", "device_type": "cpu"}
    runs.write_results(runs.Run(root / name), doc, results)


def test_the_section_draws_when_opened_and_redraws_on_each_control(tmp_path):
    state = AppState(runs_dir=tmp_path)
    panel = SavingBySize(state)
    assert panel.chart.value == b"" and panel.table is None  # closed: nothing computed yet
    panel.selected_index = 0
    first = panel.chart.value
    assert bytes(first).startswith(b"\x89PNG") and "103% at smollm2-135m" in panel.summary.value
    assert "LoRA from llama-2-7b up" in panel.summary.value and "No LoRA+QLoRA run" in panel.summary.value
    seen = {bytes(first)}
    for widget, value in (
        (panel.rank, 64),
        (panel.batch, 1),
        (panel.seq_len, 2048),
        (panel.checkpointing, False),
        (panel.device, "cpu"),
    ):
        widget.value = value
        assert bytes(panel.chart.value) not in seen, widget.description
        seen.add(bytes(panel.chart.value))
    assert "CPU, float32 base, batch 1×2048, r=64" in panel.summary.value
    assert (panel.table.runtime > 0).all()  # the CPU's runtime constant is in
    # a run lands on disk: the next "runs" notice puts it on the chart
    fake_run(tmp_path, "demo", DEFAULT_MODEL, {"lora": 1760 * 2**20, "qlora": 1405 * 2**20})
    state.notify("runs")
    assert (
        "Measured here (cpu (float32), batch 8×" in panel.summary.value and "QLoRA 80% of LoRA" in panel.summary.value
    )
    assert [m["run"] for m in panel.measured] == ["demo", "demo"]


def test_the_adapter_tab_holds_the_section_closed(tmp_path):
    panel = AdapterPanel(AppState(runs_dir=tmp_path))
    assert panel.by_size in panel.children and panel.by_size.selected_index is None
    assert panel.by_size.chart.value == b""


def test_the_adapter_tab_shows_a_fit_badge_per_variant(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=tmp_path / "runs")
    panel = wb.adapter
    assert panel.params_info.value.count("wb-fit wb-fit-fits") == 3  # base, lora, qlora: a tiny model fits
    est = {v: e.total for v, e in panel.estimates().items()}
    # free memory between qlora's and lora's estimate, just above qlora's: lora will not fit, qlora is tight
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: int(est["qlora"] / 0.9))
    panel.refresh()
    info = panel.params_info.value
    assert "lora " in info and "will not fit" in info and "wb-fit-tight" in info
    assert "MiB free now" in info


def test_target_checkboxes_are_the_models_own_linear_layers(app, load_tiny):
    from workbench.engine.layout import ModelLayout

    model = load_tiny(16)
    assert sorted(app.adapter.targets) == ModelLayout(model.config, model).target_names
    assert app.adapter.all_linear.value and all(b.disabled for b in app.adapter.targets.values())


def test_trainable_count_matches_peft_before_any_weight_loads(app, load_tiny):

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


def test_the_init_controls_set_the_config_and_show_only_their_own_counts(app):
    import html

    from workbench.core.config import INITS

    a = app.adapter
    assert "wb-init" in a.init._dom_classes and list(a.init.options) == list(INITS)
    assert a.init.tooltip == help_for(LoraSettings, "init")
    assert html.escape(INITS["gaussian"].help) in a.init_help.value
    assert a.loftq_iter.layout.display == "none" and a.pissa_niter.layout.display == "none"
    a.init.value = "pissa"
    assert app.config.lora.init == "pissa" and a.error.value == ""
    assert html.escape(INITS["pissa"].help) in a.init_help.value
    assert a.pissa_niter.layout.display is None and a.loftq_iter.layout.display == "none"
    a.pissa_niter.value = 0
    a.loraplus.value = 16.0
    assert (app.config.lora.pissa_niter, app.config.lora.loraplus_ratio) == (0, 16.0)
    # the init's start cost is said with the estimate, and the lora bar covers it
    assert "init pissa: one exact SVD per layer" in a.params_info.value
    a.init.value = "gaussian"
    assert "init pissa" not in a.params_info.value and a.pissa_niter.layout.display == "none"


def test_an_init_the_checked_variants_cannot_use_is_refused_and_nothing_else_is_lost(app):
    a = app.adapter
    a.rank.value = 16
    a.init.value = "loftq"  # lora (a 16-bit base) is ticked: loftq works at 4 bits only
    assert "init: loftq works on qlora only, not on lora" in a.error.value
    assert app.config.lora.init == "gaussian" and a.init.value == "gaussian"  # put back
    assert app.config.lora.rank == 16 and a.rank.value == 16 and app.config.variants == ["base", "lora", "qlora"]
    a.variants["lora"].value = False
    a.init.value = "loftq"
    assert a.error.value == "" and app.config.lora.init == "loftq" and app.config.variants == ["base", "qlora"]
    assert a.loftq_iter.layout.display is None
    a.loftq_iter.value = 3
    assert app.config.lora.loftq_iter == 3
    a.variants["lora"].value = True  # now the variant is the refused change, and it is put back
    assert "init: loftq works on qlora only, not on lora" in a.error.value and not a.variants["lora"].value
    a.loraplus.value = 0.0
    assert "loraplus_ratio must be above 0" in a.error.value and a.loraplus.value == 1.0
