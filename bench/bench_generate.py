"""Generation and evaluation: the Compare tab's side-by-side answers against three plain `generate` calls.

    .venv/bin/python bench/bench_generate.py             # 3 trials a side

The workbench's side answers each of three prompts with base, LoRA and QLoRA as the Compare tab does
(session.Session: the run's adapters on the base at 16 and 4 bits, streamed token by token into a
callback). The plain side is what a user writes: the model from `from_pretrained` (library defaults),
the adapters with `PeftModel.from_pretrained`, base as the LoRA model with `disable_adapter()`, and one
`model.generate` per answer. Same prompts, greedy, 48 new tokens at most. The adapters come from a one-step
run (made once into bench/out/gen-run), so every column answers at length as the base does: a speed
measure wants long answers, not the one-word labels a trained adapter gives. Model loading is not timed.

Evaluation: examples scored per second by `generate.evaluate` (loss, then greedy answers, in batches of
16) on the task's 60 held-out examples, per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, Side, alternate, child_env, machine, markdown_table, save  # noqa: E402

RUN = OUT / "gen-run"
VARIANTS = ("base", "lora", "qlora")
MAX_NEW = 48


def make_run() -> Path:
    """A run with LoRA and QLoRA adapters after one step, made once."""
    from workbench.core.config import preset_config
    from workbench.core.events import Hooks
    from workbench.experiments.comparison import run_compare
    from workbench.records.runs import Run

    if not Run(RUN).finished:
        cfg = preset_config(
            "cpu-demo", {"variants": ["lora", "qlora"], "train": {"steps": 1}, "model": {"device": "cpu"}}
        )
        cfg.train.eval_examples = 4
        run_compare(cfg, RUN, Hooks(on_status=lambda msg: None))
    return RUN


def child_workbench() -> dict:
    from workbench.core.config import preset_config
    from workbench.data import task_for
    from workbench.engine.generate import DecodeSettings
    from workbench.engine.session import Session

    session = Session.from_run(RUN)
    task = task_for(preset_config("cpu-demo"))
    decode = DecodeSettings(max_new_tokens=MAX_NEW)
    out = {}
    for v in VARIANTS:
        session.model_for(v)
        session.answer(v, task.sample_prompts[0], DecodeSettings(max_new_tokens=2))  # warm the kernels
        tokens, seconds = 0, 0.0
        for prompt in task.sample_prompts[:3]:
            seen = []
            t0 = time.perf_counter()
            g = session.answer(v, prompt, decode, on_text=seen.append)
            seconds += time.perf_counter() - t0
            tokens += g.new_tokens
        t0 = time.perf_counter()
        ev = session.evaluate(v, task.eval, seq_len=64, scoring=task.scoring)
        out[v] = {
            "tok_s": tokens / seconds,
            "tokens": tokens,
            "eval_examples_s": len(task.eval) / (time.perf_counter() - t0),
            "accuracy": ev.accuracy,
        }
    out["tok_s"] = sum(out[v]["tokens"] for v in VARIANTS) / sum(out[v]["tokens"] / out[v]["tok_s"] for v in VARIANTS)
    return out


def child_plain() -> dict:
    import contextlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from workbench.core.config import preset_config
    from workbench.data import task_for
    from workbench.records.runs import Run

    run = Run(RUN)
    path = run.model_path
    tok = AutoTokenizer.from_pretrained(path)
    task = task_for(preset_config("cpu-demo"))
    lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), str(run.adapter_dir("lora")))
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    qlora = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb), str(run.adapter_dir("qlora"))
    )
    models = {"base": (lora, True), "lora": (lora, False), "qlora": (qlora, False)}
    out = {}
    for v, (model, off) in models.items():
        model.eval()
        tokens, seconds = 0, 0.0
        for i, prompt in enumerate([task.sample_prompts[0], *task.sample_prompts[:3]]):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            t0 = time.perf_counter()
            with torch.no_grad(), model.disable_adapter() if off else contextlib.nullcontext():
                ids = model.generate(
                    **enc, max_new_tokens=2 if i == 0 else MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id
                )
            if i:  # the first call warms the kernels, as on the other side
                seconds += time.perf_counter() - t0
                tokens += ids.shape[1] - enc["input_ids"].shape[1]
        out[v] = {"tok_s": tokens / seconds, "tokens": tokens}
    out["tok_s"] = sum(out[v]["tokens"] for v in VARIANTS) / sum(out[v]["tokens"] / out[v]["tok_s"] for v in VARIANTS)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=("workbench", "plain"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child_workbench() if a.child == "workbench" else child_plain()), flush=True)
        return 0
    make_run()
    me = str(Path(__file__).resolve())
    sides = [
        Side("side-by-side (workbench)", [me, "--child", "workbench"], child_env(True), "tok_s"),
        Side("three plain generate calls", [me, "--child", "plain"], child_env(False), "tok_s"),
    ]
    print("generation: three prompts x base, LoRA, QLoRA")
    alternate(sides, a.repeats)
    wb, plain = sides

    def med(side, v, key="tok_s"):
        return statistics.median(t[v][key] for t in side.trials)

    rows = [
        [
            v,
            f"{med(wb, v):.1f}",
            f"{med(plain, v):.1f}",
            f"{med(wb, v) / med(plain, v):.2f}x",
            f"{med(wb, v, 'eval_examples_s'):.1f}",
        ]
        for v in VARIANTS
    ]
    rows.append(["all three", f"{wb.median:.1f}", f"{plain.median:.1f}", f"{wb.median / plain.median:.2f}x", ""])
    md = markdown_table(["variant", "workbench tok/s", "plain generate tok/s", "ratio", "evaluation examples/s"], rows)
    print("\n" + md)
    save("generate", {"machine": machine(), "workbench": wb.trials, "plain": plain.trials}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
