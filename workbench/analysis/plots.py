"""Every picture is matplotlib; the CLI saves these figures and the panels show the same ones.

Long because: every chart the workbench draws is here, so each is drawn one way wherever it is shown (the CLI's
files, the panels, the notebooks); the score-against-cost chart alone has two forms, a few runs' and a class's.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from workbench.core.events import MetricEvent
from workbench.core.files import save_figure
from workbench.records.results import (
    MEMORY_FIELDS,
    CompareResult,
    VariantResult,
    as_written,
    default_score,
    pareto_front,
    shorten,
)

MiB = 1024**2
COLORS = {"base": "#7f7f7f", "lora": "#1f77b4", "lora8": "#2ca02c", "qlora": "#d62728"}


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (5, 0.02), not 5×10⁰: matplotlib picks which ticks get a label."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def plain_log_axis(axis) -> None:
    """A log-scaled axis labelled in plain numbers, on the major ticks and, over a short range, the minor."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))


# up to this many steps a line puts a dot on each: a run's first step is one point, which a line alone never draws
FEW_POINTS = 40
# a loss axis turns log once its largest loss is this many times its smallest: a narrower log axis has no tick in it
LOG_SPAN = 3.0


def dots(n: int, size: float = 4.0) -> dict:
    """A line's keyword arguments for its markers: a dot on each of its `n` points while there are few."""
    return {"marker": "o", "markersize": size} if n <= FEW_POINTS else {}


def loss_scale(ax, losses: list[float]) -> None:
    """The y axis of a loss chart: linear until the losses span LOG_SPAN, then log, in plain numbers either way;
    its limits are matplotlib's own, which hold every point drawn."""
    seen = [v for v in losses if v > 0 and math.isfinite(v)]
    if seen and max(seen) >= LOG_SPAN * min(seen):
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
    else:  # no offset: a flat start (2.3012, 2.3015) reads as itself, not as +2.301 and thousandths
        ax.ticklabel_format(axis="y", useOffset=False)


def step_axis(ax, steps: list[int]) -> None:
    """The x axis of a chart over training steps: whole steps only, and at least one step wide (a single step's
    own range, 0.95 to 1.05, has no whole number in it to label)."""
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if steps and max(steps) - min(steps) < 1:
        ax.set_xlim(min(steps) - 0.5, max(steps) + 0.5)


def memory_axis_label(device_type: str) -> str:
    """What a measured memory figure is on this kind of device."""
    return "CUDA allocated" if device_type == "cuda" else "process RSS above start"


def loss_figure(metrics: list[MetricEvent]) -> Figure:
    """Training loss per step, one line per variant with a dot on each step while there are few, on loss_scale's
    axis."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for name in dict.fromkeys(m.variant for m in metrics):
        pts = [m for m in metrics if m.variant == name]
        ax.plot([m.step for m in pts], [m.loss for m in pts], label=name, color=COLORS.get(name), **dots(len(pts)))
    step_axis(ax, [m.step for m in metrics])
    ax.set_ylabel("training loss (answer tokens)")
    loss_scale(ax, [m.loss for m in metrics])
    ax.grid(alpha=0.3)
    if metrics:
        ax.legend()
    ax.set_title("Training loss")
    return fig


def memory_figure(results: list[VariantResult], device_type: str = "cpu") -> Figure:
    """Per variant: weight memory, measured peak and estimated peak."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    names = [r.name for r in results]
    x = range(len(results))
    width = 0.27
    series = [
        ("weights", "weight_bytes", "#9ecae1"),
        ("peak measured", "peak_memory_bytes", "#3182bd"),
        ("peak estimated", "estimated_peak_bytes", "#fdae6b"),
    ]
    for i, (label, key, color) in enumerate(series):
        vals = [(r.memory(key) or 0) / MiB for r in results]
        ax.bar([xi + (i - 1) * width for xi in x], vals, width, label=label, color=color)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MiB")
    ax.set_title(f"Memory per variant ({memory_axis_label(device_type)})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# the chart's axes: field -> (label, scale); for y also whether higher is better
X_AXES = {**{k: (f"{v} (MiB)", MiB) for k, v in MEMORY_FIELDS.items()}, "train_seconds": ("training time (s)", 1)}
Y_AXES = {
    "accuracy": ("accuracy on held-out examples (%)", 100, True),
    "eval_loss": ("held-out eval loss", 1, False),
    "perplexity": ("held-out perplexity", 1, False),
    "forgetting": ("forgetting: general-text loss change", 1, False),
}


def accuracy_memory_figure(
    results: list[VariantResult],
    memory_key: str = "peak_memory_bytes",
    runs: list[str | None] | None = None,
    metric: str | None = None,
    people: list[str] | None = None,
    numbers: list[int | None] | None = None,
) -> Figure:
    """A score against a cost, each point numbered and its settings listed beside the chart under the same
    number (labels written next to crowded points would overprint), each score with its 95% interval as an
    error bar, with the Pareto frontier drawn: the points no other beats on both, and the points whose interval
    reaches the frontier drawn hollow (the frontier does not beat them on the evidence). Score (`metric`):
    accuracy (the default where the task has one; else perplexity), eval loss, perplexity or forgetting; cost
    (`memory_key`): peak, weight or estimated memory, or training time. `runs` names the run of each result;
    with more than one run each entry says which. `people`: who made each result; with more than one person
    the points are coloured by person, not variant (a class's runs on one chart).

    More than CLASS_POINTS points (a class's folder) make a chart of a fixed size whose legend names the groups
    (people, or variants) instead of every point; `numbers` then gives the points to mark with their number (the
    rows of the table page beside the chart, None for the others)."""
    runs = runs or [None] * len(results)
    people = people or [""] * len(results)
    several_runs = len({run for run in runs}) > 1  # then each entry names its run too
    names = sorted({p for p in people if p})
    by_person = len(names) > 1
    entries = []
    for r, run, who in zip(results, runs, people):
        where = f"{shorten(run, 30)}: " if several_runs and run and not by_person else ""
        where = f"{who}: " if by_person else where
        entries.append(_Point(r, [], f"{where}{r.label()}", who if by_person else None))
    for e, number in zip(entries, numbers or []):
        e.number = number
    return _score_cost_figure(entries, memory_key, metric, names if by_person else [])


def settings_figure(groups, memory_key: str = "peak_memory_bytes", metric: str | None = None, label=None) -> Figure:
    """Settings repeated over seeds (settings.Setting): each drawn at the mean of its seeds with the interval of
    that mean, every seed a faint dot beside it; the frontier is drawn through the means, and a setting whose
    interval reaches it is drawn hollow."""
    label = label or (lambda g: g.first.label())
    entries = [
        _Point(g.mean_result(), g.results if g.n > 1 else [], f"{label(g)}" + (f" ({g.n} seeds)" if g.n > 1 else ""))
        for g in groups
    ]
    return _score_cost_figure(entries, memory_key, metric, [])


class _Point:
    """One point of a score-against-cost chart: the result it stands at, the repeats behind it, its legend text."""

    def __init__(self, result: VariantResult, repeats: list[VariantResult], text: str, person: str | None = None):
        self.result, self.repeats, self.text, self.person = result, repeats, text, person
        self.number: int | None = None  # on a class's chart: its row in the table beside it, when marked

    @property
    def group(self) -> str:
        """What a class's chart colours it by: its person, else its variant."""
        return self.person or self.result.name


# above this many points a chart is a class's: a fixed size, a legend of groups, only the marked points numbered
CLASS_POINTS = 30
LEGEND_TEXT = 60  # characters of a point's settings its legend line shows (a planted name can be thousands)
GROUPS_NAMED = 12  # groups a class's legend names; the rest share one line


def _score_cost_figure(entries: list[_Point], memory_key: str, metric: str | None, people: list[str]) -> Figure:
    from workbench.core.stats import frontier_ties

    palette = {name: PEOPLE_COLORS[i % len(PEOPLE_COLORS)] for i, name in enumerate(people)}
    metric = metric or default_score([e.result for e in entries])
    if metric not in Y_AXES or memory_key not in X_AXES:
        raise ValueError(f"chart: score one of {', '.join(Y_AXES)} against one of {', '.join(X_AXES)}")
    y_label, y_scale, higher = Y_AXES[metric]
    x_label, x_scale = X_AXES[memory_key]
    points = [e for e in entries if getattr(e.result, metric) is not None and getattr(e.result, memory_key) is not None]
    points.sort(key=lambda e: getattr(e.result, memory_key))
    crowded = len(points) > CLASS_POINTS
    # a legend line a point: the figure grows with them, up to a screen's height; a class's is a fixed size
    fig = Figure(figsize=(9.6, 5.4 if crowded else min(9.0, max(4.0, 1.2 + 0.22 * len(points)))))
    ax = fig.add_axes((0.08, 0.12, 0.62 if crowded else 0.52, 0.78))  # a class's legend is groups: narrower
    xy = [(getattr(e.result, memory_key) / x_scale, getattr(e.result, metric) * y_scale) for e in points]
    cis = [e.result.interval(metric) for e in points]
    front = pareto_front(xy, higher_is_better=higher)
    scaled = [None if ci is None else ci.map(lambda v: v * y_scale) for ci in cis]
    ties = (
        set(frontier_ties([x for x, _ in xy], [y for _, y in xy], scaled, front, higher)) if len(points) > 1 else set()
    )
    fig.fixed_size = crowded  # laid out whole: the legend fits beside the axes (ui.common.png need not crop)
    if crowded:
        _class_points(ax, points, xy, scaled, ties, memory_key, metric, x_scale, y_scale)
    for i, (e, (x, y), ci) in enumerate([] if crowded else zip(points, xy, scaled), 1):
        colour = palette.get(e.person, "#333333") if e.person else COLORS.get(e.result.name, "#333333")
        hollow = i - 1 in ties
        if ci is not None:  # the 95% interval of the score: where the truth may lie
            # clipped at the point: a hand-edited row whose interval misses its score still draws
            bars = [[max(0, y - ci.low)], [max(0, ci.high - y)]]
            ax.errorbar([x], [y], yerr=bars, fmt="none", ecolor=colour, alpha=0.6, capsize=3)
        for rep in e.repeats:  # each seed, faint, at its own cost
            rx, ry = getattr(rep, memory_key), getattr(rep, metric)
            if rx is not None and ry is not None:
                ax.scatter([rx / x_scale], [ry * y_scale], s=14, color=colour, alpha=0.25, zorder=2, linewidths=0)
        tie = " (not told apart from the frontier)" if hollow else ""
        ax.scatter(
            [x],
            [y],
            s=60,
            facecolors="white" if hollow else colour,
            edgecolors=colour,
            zorder=3,
            label=f"{i}  {shorten(as_written(e.text), LEGEND_TEXT)}{tie}",
        )
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if len(points) > 1 and front:  # the settings no other one beats on both: the trade-off to choose along
        ax.step(
            [xy[i][0] for i in front],
            [xy[i][1] for i in front],
            where="post",
            color="#444444",
            linewidth=1,
            linestyle="--",
            zorder=2,
            label="frontier" if crowded else "frontier: " + ", ".join(str(i + 1) for i in front),
        )
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, handletextpad=0.3)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label + (" with 95% intervals" if any(ci is not None for ci in cis) else ""))
    if metric == "accuracy":
        ax.set_ylim(-5, 105)
    if metric == "perplexity":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
    what, cost = y_label.split(":")[0].split(" on ")[0], x_label.split(" (")[0]
    ax.set_title(f"{what[0].upper() + what[1:]} vs {cost} ({'up' if higher else 'down'} and left is better)")
    ax.grid(alpha=0.3)
    return fig


def _class_points(ax, points, xy, scaled, ties, memory_key, metric, x_scale, y_scale) -> None:
    """A class's points: one colour a group (person or variant), drawn a group at a time (a thousand points
    drawn one by one take seconds), the legend naming the largest groups, and only the marked points numbered."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(points):
        groups.setdefault(e.group, []).append(i)
    order = sorted(groups, key=lambda g: (-len(groups[g]), g))
    named = order[:GROUPS_NAMED] if len(order) <= GROUPS_NAMED else order[: GROUPS_NAMED - 1]
    for g_i, g in enumerate(order):
        idx = groups[g]
        colour = CLASS_COLORS[g_i % len(CLASS_COLORS)] if g in named else "#b0b0b0"
        bars = [i for i in idx if scaled[i] is not None]
        if bars:
            ax.errorbar(
                [xy[i][0] for i in bars],
                [xy[i][1] for i in bars],
                yerr=[
                    [max(0, xy[i][1] - scaled[i].low) for i in bars],
                    [max(0, scaled[i].high - xy[i][1]) for i in bars],
                ],
                fmt="none",
                ecolor=colour,
                alpha=0.25,
                linewidth=0.8,
            )
        reps = [(r, getattr(r, memory_key), getattr(r, metric)) for i in idx for r in points[i].repeats]
        reps = [(x / x_scale, y * y_scale) for _, x, y in reps if x is not None and y is not None]
        if reps:
            ax.scatter(*zip(*reps), s=8, color=colour, alpha=0.2, zorder=2, linewidths=0)
        label = f"{shorten(as_written(g), LEGEND_TEXT)} ({len(idx)})" if g in named else None
        if g not in named and g == order[len(named)]:  # the first of the rest speaks for them all
            rest = sum(len(groups[o]) for o in order[len(named) :])
            label = f"{len(order) - len(named)} more, in grey ({rest})"
        ax.scatter(
            [xy[i][0] for i in idx],
            [xy[i][1] for i in idx],
            s=22,
            facecolors=["white" if i in ties else colour for i in idx],
            edgecolors=colour,
            alpha=0.8,
            zorder=3,
            label=label,
        )
    marked = [i for i, e in enumerate(points) if e.number is not None]
    if marked:  # the rows of the table page beside the chart: which point is which
        ax.scatter(
            [xy[i][0] for i in marked],
            [xy[i][1] for i in marked],
            s=60,
            facecolors="none",
            edgecolors="black",
            linewidths=1,
            zorder=4,
        )
    for i in marked:
        ax.annotate(str(points[i].number), xy[i], textcoords="offset points", xytext=(5, 5), fontsize=7, zorder=5)


# a class's chart: matplotlib's tab20 less its greys (grey is for the groups the legend does not name)
CLASS_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
]  # fmt: skip

# one colour a person on a class's chart (matplotlib's tab10, which stays distinct on a projector)
PEOPLE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

COMPONENT_COLORS = {
    "weights": "#6baed6",
    "weights (quantized layers)": "#6baed6",
    "weights (kept in full precision)": "#c6dbef",
    "adapter": "#fd8d3c",
    "gradients": "#fdae6b",
    "optimizer state": "#fdd0a2",
    "activations": "#74c476",
    "logits and loss": "#a1d99b",
    "runtime (CPU)": "#bdbdbd",
    "kept by glibc (freed activations)": "#d9d9d9",
    "loading (checkpoint read while quantizing)": "#9e9ac8",
}


def estimate_figure(estimates: dict, title: str = "Estimated peak memory per variant") -> Figure:
    """One stacked horizontal bar per variant: the estimator's components (a MemoryEstimate each)."""
    names = list(estimates)
    fig = Figure(figsize=(6.4, 1.6 + 0.55 * max(1, len(names))))
    ax = fig.subplots()
    seen = dict.fromkeys(k for e in estimates.values() for k in e.components)
    order = list(COMPONENT_COLORS)  # weights first, activations last, whatever order each estimate used
    components = sorted(seen, key=lambda k: order.index(k) if k in order else len(order))
    left = [0.0] * len(names)
    for comp in components:
        vals = [estimates[n].components.get(comp, 0) / MiB for n in names]
        ax.barh(names, vals, left=left, label=comp, color=COMPONENT_COLORS.get(comp))
        left = [a + b for a, b in zip(left, vals)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:,.0f} MiB", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MiB")
    ax.set_xlim(0, max(left, default=1) * 1.25 or 1)
    ax.set_title(title)
    ax.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.25 / max(1, len(names))), ncol=3, frameon=False
    )
    ax.grid(axis="x", alpha=0.3)
    return fig


def live_memory_figure(metrics: list[MetricEvent], estimates: dict[str, int], device_type: str = "cpu") -> Figure:
    """Measured memory per training step (peak so far, and what is held after the step), one colour per
    variant, a dot on each step while there are few, each variant's estimated peak dashed beside it."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    for name in dict.fromkeys([*(m.variant for m in metrics), *estimates]):
        pts = [m for m in metrics if m.variant == name]
        color = COLORS.get(name)
        if pts:  # the estimate predicts the peak, so the peak so far is the line to hold against it
            ax.plot(
                [m.step for m in pts],
                [m.peak_memory_bytes / MiB for m in pts],
                color=color,
                label=f"{name} peak so far",
                **dots(len(pts)),
            )
            ax.plot(
                [m.step for m in pts],
                [m.memory_bytes / MiB for m in pts],
                color=color,
                linewidth=0.8,
                linestyle=":",
                label=f"{name} after the step",
                **dots(len(pts), 3),
            )
        if name in estimates and name != "base":
            ax.axhline(estimates[name] / MiB, color=color, linestyle="--", linewidth=1, label=f"{name} estimate")
    step_axis(ax, [m.step for m in metrics])
    ax.set_ylabel(f"MiB ({memory_axis_label(device_type)})")
    ax.set_title("Memory during training")
    ax.grid(alpha=0.3)
    if metrics or estimates:
        ax.legend(fontsize=7)
    return fig


def overlay_figure(curves: dict[str, list[MetricEvent]], what: str = "loss") -> Figure:
    """Several runs' training curves on one plot, one line per run and variant: the loss (loss_scale: log once
    it spans enough) or the peak memory so far (MiB). `curves` maps a run's name to its metrics.csv rows."""
    if what not in ("loss", "memory"):
        raise ValueError(f"what must be loss or memory; got {what!r}")
    fig = Figure(figsize=(7.2, 3.8))
    ax = fig.subplots()
    for run, metrics in curves.items():
        for name in dict.fromkeys(m.variant for m in metrics):
            pts = [m for m in metrics if m.variant == name]
            ys = [m.loss for m in pts] if what == "loss" else [m.peak_memory_bytes / MiB for m in pts]
            label = as_written(f"{shorten(run, 30)}: {name}")
            ax.plot([m.step for m in pts], ys, label=label, linewidth=1.2, **dots(len(pts), 3))
    step_axis(ax, [m.step for metrics in curves.values() for m in metrics])
    if what == "loss":
        loss_scale(ax, [m.loss for metrics in curves.values() for m in metrics])
        ax.set_ylabel("training loss")
        ax.set_title("Training loss, runs side by side")
    else:
        ax.set_ylabel("peak memory so far (MiB)")
        ax.set_title("Memory, runs side by side")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def seeds_curve(runs: list[list[MetricEvent]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean loss, lowest, highest) over several seeds' training curves, step by step; a step only some
    seeds reached (one stopped early) is the mean of those that did."""
    by_step: dict[int, list[float]] = {}
    for metrics in runs:
        for m in metrics:
            by_step.setdefault(m.step, []).append(m.loss)
    steps = sorted(by_step)
    return (
        steps,
        [sum(by_step[s]) / len(by_step[s]) for s in steps],
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
    )


INIT_CURVE_COLORS = ("#9467bd", "#2ca02c", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")


def init_curves_figure(
    runs_by_setting: dict[str, list[list[MetricEvent]]], reference: str = "QLoRA", also: tuple[str, ...] = ("LoRA",)
) -> Figure:
    """Each setting's training loss beside the reference's (plain QLoRA), one small panel per setting so no band
    hides another: the mean over its seeds as a line, the lowest to the highest seed as a band (how far the seed
    alone moves the curve); the `also` settings (LoRA on the 16-bit base) dashed in every panel. `runs_by_setting`:
    a setting's name -> each seed's metrics.csv rows (workbench.records.runs.Run.metrics)."""
    if reference not in runs_by_setting:
        raise ValueError(f"the curves are drawn beside {reference}'s; no runs of it were given")
    shown = [s for s in runs_by_setting if s != reference and s not in also] or [reference]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(3.9 * cols, 2.9 * rows + 0.5))
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    every = [m.loss for runs in runs_by_setting.values() for metrics in runs for m in metrics]

    def draw(ax, name: str, color: str, dashed: bool = False) -> None:
        steps, mean, low, high = seeds_curve(runs_by_setting[name])
        seeds = len(runs_by_setting[name])
        ax.fill_between(steps, low, high, color=color, alpha=0.12 if dashed else 0.22, linewidth=0)
        label = f"{name} ({seeds} seed{'s' if seeds != 1 else ''})"
        ax.plot(steps, mean, color=color, linewidth=1.4, linestyle="--" if dashed else "-", label=label)

    for i, (ax, name) in enumerate(zip(axes, shown)):
        for j, other in enumerate(a for a in also if a in runs_by_setting):
            draw(ax, other, COLORS["lora"] if j == 0 else "#7f7f7f", dashed=True)
        draw(ax, reference, COLORS["qlora"])
        if name != reference:
            draw(ax, name, INIT_CURVE_COLORS[i % len(INIT_CURVE_COLORS)])
        ax.set_title(as_written(shorten(name, 40)), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        loss_scale(ax, every)
        step_axis(ax, [m.step for runs in runs_by_setting.values() for metrics in runs for m in metrics])
        ax.xaxis.set_tick_params(labelbottom=True)  # shared x: a panel above an empty slot keeps its steps
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("training loss")
    fig.suptitle(f"Training loss beside {reference}'s: mean over seeds, band from the lowest seed to the highest")
    fig.tight_layout()
    return fig


SIZE_GROUP_COLORS = {
    "weights": "#6baed6",
    "adapter + grads + optimizer": "#fd8d3c",
    "activations": "#74c476",
    "logits and loss": "#a1d99b",
    "runtime": "#bdbdbd",
}


def qlora_saving_figure(table, crossovers: dict | None = None, measured=(), settings: str = "") -> Figure:
    """LoRA beside QLoRA (hatched) for each model of a sizes.by_model table, stacked by component and drawn as
    a share of that model's LoRA peak: normalised, because 135M and 70B differ 400x and stacks on a log axis
    lie. Each QLoRA bar is labelled with its share of LoRA's, each weights segment with its share of the bar;
    `crossovers` (variant -> model) draws where the weights start to outweigh activations and the loss;
    `measured` (sizes.measured rows) puts this machine's own runs, as QLoRA/LoRA of one run, at 135M."""
    models = list(dict.fromkeys(table["model"]))
    fig = Figure(figsize=(13.5, 6.6))
    ax = fig.add_axes((0.06, 0.24, 0.74, 0.66))
    width = 0.4
    top = 1.0
    for vi, (variant, hatch) in enumerate((("lora", ""), ("qlora", "//"))):
        rows = table[table.variant == variant].set_index("model")
        xs = [i + (vi - 0.5) * width for i, m in enumerate(models) if m in rows.index]
        if not xs:
            continue
        sub = rows.loc[[m for m in models if m in rows.index]]
        bottom = [0.0] * len(sub)
        for group, color in SIZE_GROUP_COLORS.items():
            vals = list(sub[group] / sub["total"] * sub["vs_lora"])
            ax.bar(xs, vals, width * 0.95, bottom=bottom, color=color, hatch=hatch, edgecolor="white", linewidth=0.5)
            if group == "weights":  # the share the chart is about, written where it is tall enough to read
                for x, v, share in zip(xs, vals, sub["weights_share"]):
                    if v > 0.07:
                        ax.text(x, v / 2, f"{share:.0%}", ha="center", va="center", fontsize=7, rotation=90)
            bottom = [b + v for b, v in zip(bottom, vals)]
        if variant == "qlora":
            for x, v in zip(xs, sub["vs_lora"]):
                ax.text(x, v + 0.015, f"{v:.0%}", ha="center", va="bottom", fontsize=8, fontweight="bold")
        top = max(top, *bottom)
    ax.axhline(1.0, color="#444444", linewidth=0.8, linestyle=":")
    totals = table.set_index(["model", "variant"])["total"]
    labels = []
    for m in models:
        params = table.loc[table.model == m, "params"].iloc[0]
        gib = " | ".join(f"{totals[(m, v)] / 1024**3:,.1f}" for v in ("lora", "qlora") if (m, v) in totals.index)
        labels.append(f"{m}\n{params / 1e9:.2g}B params\n{gib} GiB")
    ax.set_xticks(range(len(models)), labels, fontsize=8, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_xlabel("under each model: its parameters, then the estimated peak of LoRA | QLoRA", fontsize=8)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylim(0, top * 1.12)
    ax.yaxis.set_major_formatter(lambda y, _: f"{y:.0%}")
    ax.set_ylabel("peak memory, share of the model's LoRA peak")
    ax.grid(axis="y", alpha=0.3)
    for variant, model in (crossovers or {}).items():
        if model not in models:
            continue
        x = models.index(model) - 0.5
        color = COLORS.get(variant, "#333333")
        ax.axvline(x, color=color, linestyle="--", linewidth=1.5)
        ax.text(
            x + 0.05,
            top * (1.08 if variant == "lora" else 1.01),
            f"{'QLoRA' if variant == 'qlora' else 'LoRA'}: weights > activations + loss from here →",
            color=color,
            fontsize=8,
            va="top",
        )
    handles = [_patch(c, "", g) for g, c in SIZE_GROUP_COLORS.items()]
    handles += [_patch("white", "", "LoRA, 16-bit base (plain)"), _patch("white", "//", "QLoRA, 4-bit base (hatched)")]
    if "smollm2-135m" in models:
        x0 = models.index("smollm2-135m")
        # the newest QLoRA run with a LoRA run at the same settings, as QLoRA/LoRA of that shape (the bars'
        # settings are not the run's)
        m = next((m for m in measured if m["variant"] == "qlora" and m.get("vs_lora") is not None), None)
        where = m and f"{m['device']}, batch {m['batch_size']}×{m['seq_len']}, r={m['rank']}"
        for variant, y, peak, marker, size in (
            (("lora", 1.0, m["lora_peak"], "D", 60), ("qlora", m["vs_lora"], m["peak_memory_bytes"], "*", 160))
            if m
            else ()
        ):
            x = x0 + (0.5 if variant == "qlora" else -0.5) * width
            label = f"measured here, {variant}: {peak / 1024**2:,.0f} MiB = {y:.0%} ({where})"
            handles.append(ax.scatter([x], [y], marker=marker, s=size, color="black", zorder=4, label=label))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title("Where QLoRA's saving comes from: peak memory by component" + (f" ({settings})" if settings else ""))
    return fig


def _patch(color: str, hatch: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, hatch=hatch, edgecolor="#666666", label=label)


def save_run_figures(result: CompareResult, folder: Path) -> None:
    """A run's three figures beside its results: loss.png, memory.png and accuracy_vs_memory.png, each whole."""
    save_figure(loss_figure(result.metrics), folder / "loss.png")
    save_figure(memory_figure(result.variants, result.device_type), folder / "memory.png")
    save_figure(accuracy_memory_figure(result.variants), folder / "accuracy_vs_memory.png")
