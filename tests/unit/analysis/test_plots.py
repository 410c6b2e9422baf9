"""The pictures (analysis.plots): the loss axis, the estimate's colours, the class chart screen-sized with a
legend of people that a long name does not widen."""

from __future__ import annotations

import re

import pytest
from helpers import good_doc, png_size, write_class_folder, write_doc

from workbench.analysis import plots
from workbench.core.events import MetricEvent
from workbench.engine.estimator import estimate
from workbench.engine.resolve import model_config_for
from workbench.machine.memory import MiB
from workbench.records import scan
from workbench.records.results import VariantResult


def test_a_class_chart_is_a_screen_sized_picture_with_a_legend_of_people(tmp_path):
    rows = scan.all_results(write_class_folder(tmp_path / "runs", 300))
    lora = [r for r in rows if r.result.name == "lora"]
    numbers = [i + 1 if i < 30 else None for i in range(len(lora))]  # the table's first page
    fig = plots.accuracy_memory_figure(
        [r.result for r in lora], people=[r.user for r in lora], runs=[r.run for r in lora], numbers=numbers
    )
    small = plots.accuracy_memory_figure([r.result for r in lora[:5]], people=[r.user for r in lora[:5]])
    assert tuple(fig.get_size_inches()) == (9.6, 5.4)  # 300 points: no taller than a screen
    assert fig.get_size_inches()[1] <= 9.0 and small.get_size_inches()[1] < 9.0
    w, h = png_size(fig)
    assert w < 2000 and h < 1200
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # 30 people: the 11 with the most runs named with their count, the rest in one grey line, and the frontier
    assert len(labels) == plots.GROUPS_NAMED + 1
    assert labels[0].startswith("student-") and labels[0].endswith("(10)")
    assert any(t.startswith("19 more, in grey (190)") for t in labels) and "frontier" in labels
    marked = sorted(int(t.get_text()) for t in ax.texts)
    assert marked == list(range(1, 31))  # the page's rows, numbered as in the table


def test_a_planted_long_name_does_not_widen_the_chart(tmp_path):
    doc = good_doc(user="x" * 5000)
    write_doc(tmp_path / "runs" / ("y" * 200), doc)
    rows = scan.all_results(tmp_path / "runs")
    fig = plots.accuracy_memory_figure([r.result for r in rows], runs=[r.run for r in rows])
    w, _ = png_size(fig)
    assert w < 1400
    crowd = [VariantResult("lora", 16, accuracy=0.8, peak_memory_bytes=(900 + i) * MiB) for i in range(40)]
    fig = plots.accuracy_memory_figure(crowd, people=["z" * 5000 if i % 2 else "w" for i in range(40)])
    assert png_size(fig)[0] < 2000


SMOL = "smollm2-135m"  # the shipped config of the embedded model's architecture


def test_components_have_colours_in_order():
    from workbench.analysis import plots

    keys = set()
    for bits in (16, 8, 4):
        for train in (True, False):
            for alloc in ("tcmalloc", "glibc"):
                cfg = model_config_for(SMOL)
                keys |= set(
                    estimate(cfg, bits=bits, rank=4, batch_size=1, seq_len=8, train=train, allocator=alloc).components
                )
    assert keys <= set(plots.COMPONENT_COLORS)
    order = list(plots.COMPONENT_COLORS)
    assert order[0] == "weights" and order.index("activations") > order.index("optimizer state")


def test_the_loss_axis_reads_plain_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from workbench.analysis import plots

    for start, factor in ((5.0, 0.7), (3.0, 1.02)):  # several decades, and less than one
        events = [MetricEvent("lora", i, 20, start * factor**i, 1e-3, 1.0, 1, 1, 1.0) for i in range(1, 21)]
        fig = plots.loss_figure(events)
        FigureCanvasAgg(fig).draw()
        ax = fig.axes[0]
        labels = [t.get_text() for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)] if t.get_text()]
        assert labels and all(re.fullmatch(r"[0-9.]+", text) for text in labels), labels


def seed_curves(start: float, seeds: int, steps: int = 6) -> list[list[MetricEvent]]:
    """`seeds` runs whose loss falls from about `start`, each seed 0.1 higher than the one before."""
    return [
        [
            MetricEvent("qlora", s, steps, (start + 0.1 * k) / s, 1e-3, 100.0, MiB, MiB, float(s))
            for s in range(1, steps + 1)
        ]
        for k in range(seeds)
    ]


def test_seeds_curve_is_the_mean_with_the_lowest_and_highest_seed_at_each_step():
    steps, mean, low, high = plots.seeds_curve(seed_curves(2.0, 3, steps=2))
    assert steps == [1, 2]
    assert mean == [2.1, 1.05] and low == [2.0, 1.0] and high == [2.2, 1.1]
    short = seed_curves(2.0, 1, steps=1) + seed_curves(4.0, 1, steps=2)  # one seed stopped after step 1
    assert plots.seeds_curve(short) == ([1, 2], [3.0, 2.0], [2.0, 2.0], [4.0, 2.0])


def test_each_init_is_drawn_in_its_own_panel_beside_plain_qloras_curve():
    runs = {"LoRA": seed_curves(1.5, 5), "QLoRA": seed_curves(2.0, 5), "QLoRA + PiSSA": seed_curves(1.8, 4)}
    runs["QLoRA + LoftQ"] = seed_curves(1.9, 5)
    fig = plots.init_curves_figure(runs)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["QLoRA + PiSSA", "QLoRA + LoftQ"]
    for ax, name, seeds in zip(shown, ["QLoRA + PiSSA", "QLoRA + LoftQ"], [4, 5]):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["LoRA (5 seeds)", "QLoRA (5 seeds)", f"{name} ({seeds} seeds)"]
        assert len(ax.collections) == 3  # a band for each: how far the seeds alone move it
        line = ax.get_lines()[-1]
        assert list(line.get_xdata()) == [1, 2, 3, 4, 5, 6]
    # the mean of PiSSA's 4 seeds at step 1: (1.8 + 1.9 + 2.0 + 2.1) / 4
    assert shown[0].get_lines()[-1].get_ydata()[0] == pytest.approx(1.95)
    assert shown[0].get_yscale() == "log"  # from 2.4 down to 0.25: the loss axis turns log
    assert png_size(fig)[0] < 1400
    with pytest.raises(ValueError, match="beside QLoRA's"):
        plots.init_curves_figure({"LoRA": seed_curves(1.5, 2)})
