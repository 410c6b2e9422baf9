"""Every picture is matplotlib; the CLI saves these figures and the panels show the same ones."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from .events import MetricEvent
from .results import MEMORY_FIELDS, VariantResult, default_score, pareto_front, shorten

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


def memory_axis_label(device_type: str) -> str:
    """What a measured memory figure is on this kind of device."""
    return "CUDA allocated" if device_type == "cuda" else "process RSS above start"


def loss_figure(metrics: list[MetricEvent]) -> Figure:
    """Training loss per step, one line per variant."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for name in dict.fromkeys(m.variant for m in metrics):
        pts = [m for m in metrics if m.variant == name]
        ax.plot([m.step for m in pts], [m.loss for m in pts], label=name, color=COLORS.get(name))
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
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
) -> Figure:
    """A score against a cost, each point numbered and its settings listed beside the chart under the same
    number (labels written next to crowded points would overprint), with the Pareto frontier drawn: the
    points no other beats on both. Score (`metric`): accuracy (the default where the task has one; else
    perplexity), eval loss, perplexity or forgetting; cost (`memory_key`): peak, weight or estimated memory,
    or training time. `runs` names the run of each result; with more than one run each entry says which."""
    runs = runs or [None] * len(results)
    metric = metric or default_score(results)
    if metric not in Y_AXES or memory_key not in X_AXES:
        raise ValueError(f"chart: score one of {', '.join(Y_AXES)} against one of {', '.join(X_AXES)}")
    y_label, y_scale, higher = Y_AXES[metric]
    x_label, x_scale = X_AXES[memory_key]
    points = [
        (r, run)
        for r, run in zip(results, runs)
        if getattr(r, metric) is not None and getattr(r, memory_key) is not None
    ]
    points.sort(key=lambda p: getattr(p[0], memory_key))
    fig = Figure(figsize=(9.6, max(4.0, 1.2 + 0.22 * len(points))))
    ax = fig.add_axes((0.08, 0.12, 0.52, 0.78))
    several_runs = len({run for _, run in points}) > 1  # then each entry names its run too
    xy = [(getattr(r, memory_key) / x_scale, getattr(r, metric) * y_scale) for r, _ in points]
    for i, ((r, run), (x, y)) in enumerate(zip(points, xy), 1):
        where = f"{shorten(run, 30)}: " if several_runs and run else ""
        ax.scatter([x], [y], s=60, color=COLORS.get(r.name, "#333333"), zorder=3, label=f"{i}  {where}{r.label()}")
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = pareto_front(xy, higher_is_better=higher)
    if len(points) > 1 and front:  # the settings no other one beats on both: the trade-off to choose along
        ax.step(
            [xy[i][0] for i in front],
            [xy[i][1] for i in front],
            where="post",
            color="#444444",
            linewidth=1,
            linestyle="--",
            zorder=2,
            label="frontier: " + ", ".join(str(i + 1) for i in front),
        )
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, handletextpad=0.3)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if metric == "accuracy":
        ax.set_ylim(-5, 105)
    if metric == "perplexity":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
    what, cost = y_label.split(":")[0].split(" on ")[0], x_label.split(" (")[0]
    ax.set_title(f"{what[0].upper() + what[1:]} vs {cost} ({'up' if higher else 'down'} and left is better)")
    ax.grid(alpha=0.3)
    return fig


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
    variant, each variant's estimated peak dashed beside it."""
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
            )
            ax.plot(
                [m.step for m in pts],
                [m.memory_bytes / MiB for m in pts],
                color=color,
                linewidth=0.8,
                linestyle=":",
                label=f"{name} after the step",
            )
        if name in estimates and name != "base":
            ax.axhline(estimates[name] / MiB, color=color, linestyle="--", linewidth=1, label=f"{name} estimate")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"MiB ({memory_axis_label(device_type)})")
    ax.set_title("Memory during training")
    ax.grid(alpha=0.3)
    if metrics or estimates:
        ax.legend(fontsize=7)
    return fig


def overlay_figure(curves: dict[str, list[MetricEvent]], what: str = "loss") -> Figure:
    """Several runs' training curves on one plot, one line per run and variant: the loss (log scale) or the
    peak memory so far (MiB). `curves` maps a run's name to its metrics.csv rows."""
    if what not in ("loss", "memory"):
        raise ValueError(f"what must be loss or memory; got {what!r}")
    fig = Figure(figsize=(7.2, 3.8))
    ax = fig.subplots()
    for run, metrics in curves.items():
        for name in dict.fromkeys(m.variant for m in metrics):
            pts = [m for m in metrics if m.variant == name]
            ys = [m.loss for m in pts] if what == "loss" else [m.peak_memory_bytes / MiB for m in pts]
            ax.plot([m.step for m in pts], ys, label=f"{shorten(run, 30)}: {name}", linewidth=1.2)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if what == "loss":
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.set_ylabel("training loss")
        ax.set_title("Training loss, runs side by side")
    else:
        ax.set_ylabel("peak memory so far (MiB)")
        ax.set_title("Memory, runs side by side")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig
