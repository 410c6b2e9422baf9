"""Where QLoRA's saving comes from, across model sizes (analysis.by_size): the estimator's peak by component for
LoRA and QLoRA on every shipped config, the crossover where the weights take over, this machine's measured runs
at 135M, and the chart (the Adapter tab's section is tests/unit/ui/test_adapter.py's)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import CONFIGS, REPO

from workbench.analysis import by_size, plots
from workbench.core.config import DEFAULT_MODEL, preset_config
from workbench.engine.estimator import estimate
from workbench.engine.layout import ModelLayout
from workbench.engine.resolve import MODEL_ALIASES, config_file
from workbench.records import runs
from workbench.records.results import VariantResult
from workbench.ui.common import png

GiB = 1024**3
TEACHING = dict(rank=16, batch_size=8, seq_len=512, gradient_checkpointing=True)  # the panel's defaults


@pytest.fixture(scope="module")
def table():
    return by_size.by_model(**TEACHING)


def test_the_table_has_every_shipped_config_smallest_first(table):
    shipped = {p.name for p in CONFIGS.glob("*.json")}
    assert {config_file(m).name for m in table.model} == shipped and len(shipped) == 13
    assert set(table.model) == set(MODEL_ALIASES)
    assert all(sorted(g.variant) == ["lora", "qlora"] for _, g in table.groupby("model"))
    assert list(table.params) == sorted(table.params)
    assert table.model.iloc[0] == "smollm2-135m" and table.model.iloc[-1] == "llama-3.1-70b"


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_components_add_up_to_the_estimate(device_type):
    t = by_size.by_model(rank=8, batch_size=2, seq_len=128, device_type=device_type)
    assert (t[list(by_size.GROUPS)].sum(axis=1) == t.total).all()
    for _, row in t.iterrows():
        est = estimate(
            ModelLayout.for_model(row.model), bits=row.bits, rank=8, batch_size=2, seq_len=128, device_type=device_type
        )
        assert row.total == est.total
        assert row.weights == sum(v for k, v in est.components.items() if k.startswith("weights"))
    if device_type == "cpu":  # the runtime constant, and for the big 4-bit loads the checkpoint read while quantizing
        assert (t.runtime > 0).all()
        big = t[(t.model == "llama-2-70b") & (t.variant == "qlora")].iloc[0]
        assert big.runtime > 100 * GiB
    else:
        assert (t.runtime == 0).all()


def test_65b_qlora_fits_48_gb_and_lora_is_far_over():
    # the README's figures: QLoRA r=64 on every linear layer, batch 1x512, checkpointing, on a GPU
    t = by_size.by_model(["llama-65b"], rank=64, batch_size=1, seq_len=512, gradient_checkpointing=True)
    got = t.set_index("variant").total / GiB
    assert got["qlora"] == pytest.approx(46.81, rel=0.01) and got["qlora"] < 48
    assert got["lora"] == pytest.approx(134.6, rel=0.01)
    assert t.set_index("variant").vs_lora["qlora"] == pytest.approx(46.81 / 134.6, rel=0.02)


def test_weights_do_not_dominate_at_135m(table):
    q = table[table.variant == "qlora"].set_index("model")
    lora = table[table.variant == "lora"].set_index("model")
    # 4-bit weights alone would make it ~1/3 (less: embeddings stay wide); here the tokens' cost dominates
    assert q.vs_lora["smollm2-135m"] > 0.9 and lora.weights_share["smollm2-135m"] < 0.15
    assert q.vs_lora["llama-65b"] < 0.4 and lora.weights_share["llama-65b"] > 0.85
    # without checkpointing QLoRA's float32 activations make it cost more than LoRA at 135M (torchtune#2255)
    plain = by_size.by_model(["smollm2-135m"], rank=16, batch_size=8, seq_len=512)
    assert plain.set_index("variant").vs_lora["qlora"] > 1.1


def test_the_crossover_is_where_the_weights_start_to_outweigh_the_tokens(table):
    assert by_size.crossover(table, "lora") == "llama-2-7b"
    assert by_size.crossover(table, "qlora") == "llama-2-13b"  # 4-bit weights need a bigger model to dominate
    lora = table[table.variant == "lora"].reset_index(drop=True)
    at = lora.index[lora.model == "llama-2-7b"][0]
    tokens = lora.activations + lora["logits and loss"]
    assert (lora.weights[at:] > tokens[at:]).all() and lora.weights[at - 1] <= tokens[at - 1]


def test_crossover_rule_on_made_up_rows():
    def rows(weights_over_tokens):
        return pd.DataFrame(
            [
                {"model": f"m{i}", "params": i, "variant": "lora", "weights": w, "activations": 1, "logits and loss": 0}
                for i, w in enumerate(weights_over_tokens)
            ]
        )

    assert by_size.crossover(rows([0.5, 2, 0.9, 2, 3])) == "m3"  # a dip: from the last one up, not the first
    assert by_size.crossover(rows([2, 2])) == "m0"
    assert by_size.crossover(rows([0.5, 2, 0.5])) is None
    assert by_size.crossover(rows([2]), "qlora") is None


def fake_run(root: Path, name: str, model: str, peaks: dict[str, int], rank: int = 8) -> None:
    cfg = preset_config(None, {"model": {"name": model}, "variants": list(peaks), "lora": {"rank": rank}})
    results = [
        VariantResult(v, 16 if v == "lora" else 4, rank=rank, target_modules="all-linear", peak_memory_bytes=p)
        for v, p in peaks.items()
    ]
    doc = {"config": cfg.to_dict(), "device": "cpu (float32)", "device_type": "cpu"}
    runs.write_results(runs.Run(root / name), doc, results)


def test_measured_runs_of_the_embedded_model_are_paired_like_for_like(tmp_path):
    assert by_size.measured(tmp_path / "none") == []
    fake_run(tmp_path, "a", DEFAULT_MODEL, {"lora": 2000 * 2**20, "qlora": 1500 * 2**20})
    fake_run(tmp_path, "other-model", "Qwen/Qwen2.5-0.5B-Instruct", {"lora": 9, "qlora": 8})  # not 135M
    # a sweep writes one variant per run: paired by settings across runs; rank 4 has no LoRA to pair with
    fake_run(tmp_path / "sweep", "lora-r16", DEFAULT_MODEL, {"lora": 1000 * 2**20}, rank=16)
    fake_run(tmp_path / "sweep", "qlora-r16", DEFAULT_MODEL, {"qlora": 900 * 2**20}, rank=16)
    fake_run(tmp_path / "sweep", "qlora-r4", DEFAULT_MODEL, {"qlora": 800 * 2**20}, rank=4)
    found = {(m["run"], m["variant"]): m for m in by_size.measured(tmp_path)}
    assert set(found) == {
        ("a", "lora"),
        ("a", "qlora"),
        ("sweep/lora-r16", "lora"),
        ("sweep/qlora-r16", "qlora"),
        ("sweep/qlora-r4", "qlora"),
    }
    assert found[("a", "qlora")]["vs_lora"] == pytest.approx(0.75)
    assert found[("sweep/qlora-r16", "qlora")]["vs_lora"] == pytest.approx(0.9)
    assert found[("sweep/qlora-r4", "qlora")]["vs_lora"] is None
    # the embedded model also runs from its converted folder, whose name says it is the 135M model
    converted = "/home/x/.workbench/engine/models/SmolLM2-135M-Instruct-Q4_1-dequantized"
    fake_run(tmp_path / "converted", "c", converted, {"lora": 1000 * 2**20})
    assert [m["run"] for m in by_size.measured(tmp_path / "converted")] == ["c"]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_the_figure_marks_the_crossovers_and_the_measured_point(table):
    crossovers = {v: by_size.crossover(table, v) for v in by_size.VARIANT_NAMES}
    m = {"variant": "qlora", "peak_memory_bytes": 1500 * 2**20, "lora_peak": 2000 * 2**20, "vs_lora": 0.75}
    m |= {"device": "cpu (float32)", "batch_size": 8, "seq_len": 64, "rank": 8, "key": ()}
    fig = plots.qlora_saving_figure(table, crossovers, [m], "test")
    ax = fig.axes[0]
    assert len(ax.patches) == 13 * 2 * len(by_size.GROUPS)  # every model, both variants, every component
    dashed = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
    order = list(dict.fromkeys(table.model))
    assert dashed == [order.index("llama-2-7b") - 0.5, order.index("llama-2-13b") - 0.5]
    texts = legend_texts(fig)
    assert "measured here, qlora: 1,500 MiB = 75% (cpu (float32), batch 8×64, r=8)" in texts
    assert any(t.startswith("measured here, lora: 2,000 MiB = 100%") for t in texts)
    bare = plots.qlora_saving_figure(table)
    assert not any("measured" in t for t in legend_texts(bare))
    assert png(fig).startswith(b"\x89PNG")


def test_the_memory_page_quotes_the_table(table):
    readme = " ".join((REPO / "docs/memory.md").read_text(encoding="utf-8").split())
    q = table[table.variant == "qlora"].set_index("model").vs_lora
    said = f"QLoRA's peak is {q['smollm2-135m']:.0%} of LoRA's at 135M"
    assert said in readme and f"{q['smollm2-1.7b']:.0%} at 1.7B, {q['llama-2-7b']:.0%} at Llama-2-7B" in readme
    big = [q[m] for m in ("llama-65b", "llama-2-70b", "llama-3.1-70b")]
    assert f"{q['llama-2-13b']:.0%} at 13B and {min(big) * 100:.0f}–{max(big):.0%} at 65–70B" in readme
    plain = by_size.by_model(["smollm2-135m", "smollm2-1.7b", "llama-2-13b"], rank=16, batch_size=8, seq_len=512)
    p = plain[plain.variant == "qlora"].set_index("model").vs_lora
    assert f"({p['smollm2-135m']:.0%} at 135M and 1.7B, {p['llama-2-13b']:.0%} at 13B" in readme
    assert f"{p['smollm2-1.7b']:.0%}" == f"{p['smollm2-135m']:.0%}"
    assert (REPO / "docs/img/qlora-saving-by-model-size.png").is_file()
