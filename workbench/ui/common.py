"""Small helpers every panel uses: figures as PNG images, messages, help text as tooltips."""

from __future__ import annotations

import contextlib
import html
import io

import ipywidgets as widgets
from matplotlib.figure import Figure

from workbench.core.config import QuantSettings, help_for
from workbench.records.results import first_line

STYLE = {"description_width": "150px"}
WIDE = widgets.Layout(width="420px")


def png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes for a widgets.Image (Agg, no pyplot: safe off the main thread)."""
    buf = io.BytesIO()
    # a class's chart is laid out to its fixed size: cropping it tight would draw it twice (a third of a second)
    fig.savefig(buf, format="png", dpi=90, bbox_inches=None if getattr(fig, "fixed_size", False) else "tight")
    return buf.getvalue()


def image(fig: Figure | None = None, max_width: str = "640px") -> widgets.Image:
    """A figure as an image widget, shown no wider than max_width (figures are drawn to fit it)."""
    return widgets.Image(
        value=png(fig) if fig is not None else b"", format="png", layout=widgets.Layout(max_width=max_width)
    )


def helped(widget: widgets.Widget, cls: type, name: str) -> widgets.Widget:
    """Give a control the help text of the config field it sets, as its tooltip."""
    widget.tooltip = help_for(cls, name)
    if isinstance(widget, widgets.Checkbox):  # description on the right: let it take the room it needs
        widget.layout.width = "auto"
    elif hasattr(widget, "style") and hasattr(widget.style, "description_width"):
        widget.style.description_width = STYLE["description_width"]
    return widget


def message(kind: str, text: str) -> str:
    colour = {"error": "#b00020", "ok": "#1b5e20", "info": "#555555", "warn": "#8a6d00"}[kind]
    return f'<div class="wb-msg wb-{kind}" style="color:{colour}">{html.escape(text)}</div>'


def error_html(exc: BaseException, details: str = "") -> str:
    """One readable line for the user, the traceback folded away beneath it."""
    line = first_line(exc)
    if not isinstance(exc, ValueError):
        line = f"{type(exc).__name__}: {line}"
    out = message("error", line)
    if details:
        out += f"<details><summary>details</summary><pre>{html.escape(details)}</pre></details>"
    return out


class Quiet:
    """A panel's "do not react now" flag, for changes the panel makes to its own controls:

        with self._quiet():
            self.rank.value = cfg.lora.rank   # observers see `if self._quiet: return`

    The flag is cleared however the block ends, so one exception cannot leave a panel muted."""

    def __init__(self):
        self._depth = 0

    def __bool__(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def __call__(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


def quant_controls(quant: QuantSettings) -> tuple[widgets.ToggleButtons, widgets.Checkbox]:
    """The 4-bit type toggle and the double-quantization box, set from the settings in force."""
    quant_type = widgets.ToggleButtons(
        options=[("NF4", "nf4"), ("FP4", "fp4")], value=quant.quant_type, description="4-bit type"
    )
    double_quant = widgets.Checkbox(value=quant.double_quant, description="Double quantization")
    return helped(quant_type, QuantSettings, "quant_type"), helped(double_quant, QuantSettings, "double_quant")


def layer_dropdown(tooltip: str) -> widgets.Dropdown:
    """A dropdown of the model's linear layers (filled later with explain.layer_options)."""
    layer = widgets.Dropdown(description="Layer", layout=WIDE, tooltip=tooltip)
    layer.style.description_width = STYLE["description_width"]
    return layer


def verdicts_html(sentences: list[str], what: str = "paired on the same eval examples") -> str:
    """The paired comparisons' sentences under one heading, each escaped (a run's names reach the page in them)."""
    if not sentences:
        return ""
    items = "".join(f"<li class='wb-verdict'>{html.escape(s)}</li>" for s in sentences)
    return (
        f"<div class='wb-verdicts'><b>Is the difference real?</b> ({html.escape(what)})"
        f"<ul style='margin:2px 0'>{items}</ul></div>"
    )


# the Seeds controls' tooltip (the Train and Sweep tabs): what repeats buy, and what they cost
SEEDS_HELP = (
    "How many times to train each setting, seed after seed (the Seed setting and the ones after it), on the same "
    "eval examples: the results give each score's mean, its spread across seeds and its 95% interval, and the "
    "verdicts pool every seed's examples. N seeds take N times as long."
)


def plan_html(line: str) -> str:
    """An eval plan (analysis.eval_plan) as a panel shows it: naming the box that sets the size, not the option."""
    if not line:
        return ""
    line = line.replace("--eval-examples sets how many", "the Train tab's Eval examples sets how many")
    return f"<div class='wb-eval-plan'>{message('info', line)}</div>"
