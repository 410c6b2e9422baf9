"""Each init on the embedded model: LoRA and QLoRA started from it and trained a few steps, what the start took
(seconds, the 4-bit weight error as loaded and at step 0, peak memory), and its export loaded by plain
transformers + peft on the ORIGINAL base, scoring the run's eval examples as the run scored them.

    .venv/bin/python bench/bench_inits.py              # about 10 minutes on 2 cores
    .venv/bin/python bench/bench_inits.py --steps 3 --eval-examples 16

An adapter whose init left the loaded base (gaussian, EVA, one-iteration LoftQ) goes on that base at the run's
bits; one whose init moved part of each weight into the adapter's start (PiSSA, OLoRA, LoftQ past one
iteration) is exported as a plain adapter for the original 16-bit base: at 16 bits that is the run's model
again, at 4 bits it differs from the run by the rounding of the residual the run's base held.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, markdown_table, save  # noqa: E402

CASES = [  # (name, lora overrides, variants)
    ("gaussian", {"init": "gaussian"}, "lora,qlora"),
    ("pissa", {"init": "pissa"}, "lora,qlora"),
    ("olora", {"init": "olora"}, "lora,qlora"),
    ("loftq, 1 iteration", {"init": "loftq", "loftq_iter": 1}, "qlora"),
    ("loftq, 2 iterations", {"init": "loftq", "loftq_iter": 2}, "qlora"),
    ("eva", {"init": "eva"}, "lora,qlora"),
]


def plain_losses(folder: Path, exported: Path, cfg, bits: int) -> list[float]:
    """The export on the original base, both loaded by plain transformers + peft, scored as the run scored."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workbench.data import task_for
    from workbench.engine import models
    from workbench.engine.generate import evaluate

    kwargs: dict = {"dtype": models.pick_device(cfg.model.device, cfg.model.dtype, bits).dtype}
    if bits == 4:
        kwargs["quantization_config"] = cfg.quant.to_bnb_config(default_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    models.disable_cpu_repack(base)  # the run's 4-bit layers compute in float32 (see models.disable_cpu_repack)
    model = PeftModel.from_pretrained(base, str(exported)).eval()
    examples = task_for(cfg).eval_split(cfg.train.eval_examples)
    return evaluate(model, models.load_tokenizer(folder), examples, seq_len=cfg.train.seq_len).scores()["losses"]


def case(name: str, lora: dict, variants: str, steps: int, eval_examples: int, out: Path) -> list[dict]:
    from workbench.core.config import preset_config
    from workbench.core.events import Hooks
    from workbench.engine import export
    from workbench.engine.generate import DecodeSettings
    from workbench.engine.moved_base import changed_base
    from workbench.experiments.comparison import run_compare
    from workbench.machine import memory
    from workbench.records.runs import Run

    cfg = preset_config(
        "quickstart",
        {"lora": lora, "variants": variants.split(","), "train": {"steps": steps, "eval_examples": eval_examples}},
    )
    run_dir = out / name.replace(" ", "-").replace(",", "")
    t0 = time.perf_counter()
    result = run_compare(cfg, run_dir, Hooks(), decode=DecodeSettings(max_new_tokens=8))
    took = time.perf_counter() - t0
    run = Run(run_dir)
    rows = []
    for row in result.variants:
        memory.release()
        moved = changed_base(cfg.lora, run.adapter_dir(row.name))
        done = export.export(run_dir, row.name, out / f"{run_dir.name}-{row.name}-export")
        got = plain_losses(Path(run.model_path), done.out, cfg, 16 if moved else row.bits)
        ran = run.scores()[row.name]["eval"]["losses"]
        rows.append(
            {
                "init": name,
                "variant": row.name,
                "status": row.status,
                "init_seconds": row.init_seconds,
                "error_before": row.init_error_before,
                "error_after": row.init_error_after,
                "peak_mib": row.peak_memory_bytes / 2**20,
                "estimated_mib": row.estimated_peak_bytes / 2**20,
                "first_loss": next(m.loss for m in result.metrics if m.variant == row.name),
                "eval_loss": row.eval_loss,
                "exported_as": f"plain rank {done.rank} for the 16-bit base"
                if moved
                else f"as saved, {row.bits}-bit base",
                "max_loss_gap": max(abs(a - b) for a, b in zip(got, ran)),
                "run_seconds": took,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--eval-examples", type=int, default=16)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, lora, variants in CASES:
            print(f"-- {name}: {variants}", flush=True)
            rows += case(name, lora, variants, a.steps, a.eval_examples, Path(tmp))
            print(rows[-1], flush=True)

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    table = markdown_table(
        [
            "init",
            "variant",
            "init s",
            "4-bit error as loaded",
            "at step 0",
            "peak MiB (est.)",
            "first loss",
            "exported",
            "largest eval-loss gap, plain peft vs the run",
        ],
        [
            [
                r["init"],
                r["variant"],
                "-" if r["init_seconds"] is None else f"{r['init_seconds']:.1f}",
                pct(r["error_before"]),
                pct(r["error_after"]),
                f"{r['peak_mib']:,.0f} ({r['estimated_mib']:,.0f})",
                f"{r['first_loss']:.3f}",
                r["exported_as"],
                f"{r['max_loss_gap']:.2e} nats",
            ]
            for r in rows
        ],
    )
    print(table)
    save("inits", {"machine": machine(), "steps": a.steps, "eval_examples": a.eval_examples, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
