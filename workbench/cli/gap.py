"""`workbench gap`: what 8-bit and 4-bit storage cost the model before any training (engine/explain/gap.py):
each format's weight error, eval loss and KL from the 16-bit model, with intervals, and with --init the
adapter's start at step 0."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from workbench.cli.options import add_init, add_model, field_option, overrides

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def add_parser(sub) -> None:
    g = sub.add_parser(
        "gap", help="measure what 8-bit and 4-bit storage cost the model before training (weight error, loss, KL)"
    )
    add_model(g)
    src = g.add_mutually_exclusive_group()
    field_option(src, "--task", "task", "Built-in task whose eval prompts are scored (default sentiment).")
    field_option(src, "--data", "data", "Your own data file (same formats as compare); its held-out part is scored.")
    field_option(g, "--eval-fraction", "eval_fraction", "Share of --data held out (default 0.15).", type=float)
    g.add_argument(
        "--examples",
        type=int,
        help="Eval examples to score (default: up to 32; more narrows the intervals and costs time).",
    )
    g.add_argument(
        "--formats",
        default="all",
        help="Comma list of int8, nf4-dq, nf4, fp4-dq, fp4 (-dq: double quantization on); default all five.",
    )
    field_option(g, "--rank", "lora.rank", type=int)
    field_option(g, "--targets", "lora.target_modules")
    field_option(g, "--alpha", "lora.alpha", type=float)
    add_init(g)
    field_option(g, "--seq-len", "train.seq_len", type=int)
    field_option(g, "--device", "model.device", "auto (default), cpu or cuda.", choices=["auto", "cpu", "cuda"])
    g.add_argument("--preset", help="Start from a preset (cpu-demo, quickstart); explicit options override its values.")
    g.add_argument("--json", action="store_true", help="Print the report as JSON on stdout (and nothing else there).")
    g.add_argument("--figure", metavar="PATH", help="Save the per-layer figure (.png, .svg or .pdf).")


def run(a: argparse.Namespace) -> int:
    from workbench.cli.stopping import terminal
    from workbench.core.config import preset_config
    from workbench.engine.explain import gap

    formats = gap.parse_formats(a.formats)
    figure = _figure_path(a.figure)
    # the gap trains nothing: base alone, so an init that fits only some variants is not refused for the others
    cfg = preset_config(a.preset, {**overrides(a), "variants": ["base"]})
    with terminal(threading.Event(), bars=not a.json) as hooks:
        report = gap.gap_for_config(cfg, a.examples, formats, hooks=hooks)
    if figure is not None:
        gap.gap_figure(report).savefig(figure, bbox_inches="tight", dpi=120)
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(text(report))
    if figure is not None:
        print(f"figure: {figure}")
    return 0


def _figure_path(value: str | None) -> Path | None:
    """Checked before anything loads, so a bad path costs no measuring and writes nothing."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"figure: {value!r} must end in .png, .svg or .pdf; give a file name such as gap.png")
    if not path.parent.is_dir():
        raise ValueError(f"figure: the folder {str(path.parent)!r} does not exist; create it or give another path")
    return path


def _ci(ci, digits: int = 3) -> str:
    return f"[{ci.low:.{digits}f}, {ci.high:.{digits}f}]" if ci is not None else "[n/a]"


def text(report) -> str:
    """The report as the terminal shows it: one line per format, the intervals beside each figure, the notes."""
    head = (
        f"{report.model}: the gap before training on {report.examples} eval examples "
        f"(teacher-forced; 95% intervals over the examples; {report.seconds:.1f} s)"
    )
    cols = ["format", "weight error", "eval loss [95%]", "vs 16-bit, paired [95%]", "KL from 16-bit [95%]"]
    rows = []
    for r in report.rows:
        ref = r.fmt == "16-bit"
        rows.append(
            [
                r.label,
                "-" if ref else f"{r.total_rel_error:.2%}",
                f"{r.loss:.3f} {_ci(r.loss_ci)}",
                "-" if ref else f"{r.loss_diff:+.3f} {_ci(r.loss_diff_ci)}",
                "-" if ref else f"{r.kl:.4f} {_ci(r.kl_ci, 4)}",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in rows]
    lines.append(
        "weight error: ||W - dequant(Q(W))|| / ||W|| over every quantized layer; eval loss: nats per answer token; "
        "KL: of the next-token distribution at the answer tokens, nats"
    )
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"note ({r.key}): {n}" for r in report.rows for n in r.notes]
    return "\n".join(lines)
