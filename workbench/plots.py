"""Every picture is matplotlib; the CLI saves these figures and the panels show the same ones."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MiB = 1024**2
COLORS = {"base": "#7f7f7f", "lora": "#1f77b4", "lora8": "#2ca02c", "qlora": "#d62728"}


def _label(row: dict) -> str:
    if row["name"] == "base":
        return "base"
    targets = row.get("target_modules")
    targets = ",".join(targets) if isinstance(targets, (list, tuple)) else targets
    return f"{row['name']} ({row['bits']}-bit, r={row['rank']}, {targets})"


def loss_figure(metrics: list[dict]) -> Figure:
    """Training loss per step, one line per variant."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for name in dict.fromkeys(m["variant"] for m in metrics):
        pts = [m for m in metrics if m["variant"] == name]
        ax.plot([m["step"] for m in pts], [m["loss"] for m in pts], label=name, color=COLORS.get(name))
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if metrics:
        ax.legend()
    ax.set_title("Training loss")
    return fig


def memory_figure(rows: list[dict], device: str = "") -> Figure:
    """Per variant: weight memory, measured peak and estimated peak."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    names = [r["name"] for r in rows]
    x = range(len(rows))
    width = 0.27
    series = [("weights", "weight_bytes", "#9ecae1"), ("peak measured", "peak_memory_bytes", "#3182bd"),
              ("peak estimated", "estimated_peak_bytes", "#fdae6b")]
    for i, (label, key, color) in enumerate(series):
        vals = [(r.get(key) or 0) / MiB for r in rows]
        ax.bar([xi + (i - 1) * width for xi in x], vals, width, label=label, color=color)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MiB")
    where = "process RSS above start" if device.startswith("cpu") else "CUDA allocated"
    ax.set_title(f"Memory per variant ({where})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_memory_figure(rows: list[dict], memory_key: str = "peak_memory_bytes") -> Figure:
    """Accuracy against memory, each point labelled with its settings: up and to the left is better.
    Tasks scored by perplexity plot that instead (down and to the left is better)."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    metric = "accuracy" if any(r.get("accuracy") is not None for r in rows) else "perplexity"
    points = [r for r in rows if r.get(metric) is not None and r.get(memory_key) is not None]
    value = (lambda r: r["accuracy"] * 100) if metric == "accuracy" else (lambda r: r["perplexity"])
    # labels of points at similar heights would overprint: stack them, one line apart
    points.sort(key=lambda r: (value(r), r[memory_key]))
    span = max((value(r) for r in points), default=1) - min((value(r) for r in points), default=0) or 1
    for i, r in enumerate(points):
        x, y = r[memory_key] / MiB, value(r)
        same = sum(1 for q in points[:i] if abs(value(q) - y) < 0.05 * span)
        ax.scatter([x], [y], s=60, color=COLORS.get(r["name"], "#333333"), zorder=3)
        ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(6, 6 - 13 * same), fontsize=8,
                    ha="right" if same % 2 else "left")
    ax.set_xlabel("peak memory (MiB)" if memory_key == "peak_memory_bytes" else "weight memory (MiB)")
    if metric == "accuracy":
        ax.set_ylabel("accuracy on held-out examples (%)")
        ax.set_ylim(-5, 105)
        ax.set_title("Accuracy vs memory (up and left is better)")
    else:
        ax.set_ylabel("held-out perplexity")
        ax.set_yscale("log")
        ax.set_title("Perplexity vs memory (down and left is better)")
    ax.grid(alpha=0.3)
    return fig


COMPONENT_COLORS = {
    "weights": "#6baed6", "weights (quantized layers)": "#6baed6", "weights (kept in full precision)": "#c6dbef",
    "adapter": "#fd8d3c", "gradients": "#fdae6b", "optimizer state": "#fdd0a2", "activations": "#74c476",
}


def estimate_figure(estimates: dict, title: str = "Estimated peak memory per variant") -> Figure:
    """One stacked horizontal bar per variant: the estimator's components (a MemoryEstimate each)."""
    names = list(estimates)
    fig = Figure(figsize=(6.4, 0.9 + 0.55 * max(1, len(names))))
    ax = fig.subplots()
    components = list(dict.fromkeys(k for e in estimates.values() for k in e.components))
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
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.grid(axis="x", alpha=0.3)
    return fig


def live_memory_figure(metrics: list[dict], estimates: dict[str, int], device: str = "") -> Figure:
    """Measured memory per training step, one line per variant, each variant's estimate dashed beside it."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    for name in dict.fromkeys([*(m["variant"] for m in metrics), *estimates]):
        pts = [m for m in metrics if m["variant"] == name]
        color = COLORS.get(name)
        if pts:
            ax.plot([m["step"] for m in pts], [m["memory_bytes"] / MiB for m in pts], color=color,
                    label=f"{name} measured")
        if name in estimates and name != "base":
            ax.axhline(estimates[name] / MiB, color=color, linestyle="--", linewidth=1, label=f"{name} estimate")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    where = "process RSS above start" if device.startswith("cpu") or not device else "CUDA allocated"
    ax.set_ylabel(f"MiB ({where})")
    ax.set_title("Memory during training")
    ax.grid(alpha=0.3)
    if metrics or estimates:
        ax.legend(fontsize=7)
    return fig
