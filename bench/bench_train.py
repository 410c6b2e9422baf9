"""Training throughput: the workbench against the plain recipe, and how much of the hardware it uses.

    .venv/bin/python bench/bench_train.py                 # LoRA at 16 bits, QLoRA at 4, LoRA at 8; 3 trials a side
                                                          # in float32, then the default dtype where it differs
    .venv/bin/python bench/bench_train.py --bits 16 --repeats 5

The plain recipe is what a user writes from PEFT's documentation: transformers' Trainer over
`get_peft_model` (with `prepare_model_for_kbit_training` at 4 and 8 bits, gradient checkpointing off as on
the workbench's side), the model loaded with `from_pretrained` and the library defaults (float32 on the
CPU, float32 4-bit compute), run as a plain Python process. The workbench's side is
`models.load_model` + `models.attach_lora` + `train.train` with the workbench's defaults, started as
the workbench starts its processes. Same model, data (the shakespeare text in 128-token blocks), rank,
targets, bits, batch and sequence length. Tokens per second over the steps after the first (the first
pays for one-time work: kernel selection, page faults, AdamW's state).

Hardware use: model FLOPs per second in training over the matmul peak measured in the same process for
the dtype in use (torch.mm, 2048 x 2048 x 2048). FLOPs per token of LoRA training on a frozen base:
4 x N (forward, and the backward's input gradients, through every matmul weight including the output
head) + 6 x A (the adapter: forward, input and weight gradients) + 12 x L x T x h (attention scores and
their weighting, forward and backward, causal mask not discounted), N = matmul parameters, A = adapter
parameters, L layers, T tokens per sequence, h hidden size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Side, alternate, child_env, machine, markdown_table, save  # noqa: E402

TARGETS = "q_proj,v_proj"


def _blocks(tokenizer, seq_len: int) -> list[list[int]]:
    from workbench.core.paths import data_dir

    ids = tokenizer((data_dir() / "shakespeare" / "train.txt").read_text(encoding="utf-8"))["input_ids"]
    return [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len, seq_len)]


def _rates(stamps: list[float], tokens_per_step: int) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:])]  # step 2 onwards
    return {"tok_s": tokens_per_step * len(steps) / sum(steps), "step_s": statistics.median(steps)}


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of torch.mm in this process, best of `reps`."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_token(layout, rank: int, targets, seq_len: int) -> float:
    cfg = layout.config
    matmul = sum(lin.in_features * lin.out_features for lin in layout.linears) + cfg.vocab_size * cfg.hidden_size
    adapter = layout.adapter_params(rank, targets)
    return 4 * matmul + 6 * adapter + 12 * cfg.num_hidden_layers * seq_len * cfg.hidden_size


def child_workbench(a) -> dict:
    from workbench.core.config import DEFAULT_MODEL, LoraSettings, TrainSettings
    from workbench.data import Encoded
    from workbench.engine import models
    from workbench.engine.layout import ModelLayout
    from workbench.engine.resolve import resolve_model
    from workbench.engine.train import seed_everything, train
    from workbench.machine import allocator

    path = resolve_model(DEFAULT_MODEL)
    tok = models.load_tokenizer(path)
    rows = [{"input_ids": b, "labels": list(b)} for b in _blocks(tok, a.seq_len)]
    model, choice = models.load_model(path, bits=a.bits, device="cpu", dtype=a.dtype)
    seed_everything(0)
    lora = LoraSettings(rank=a.rank, alpha=16.0, dropout=0.05, target_modules=a.targets)
    model = models.attach_lora(model, lora, a.bits)
    stamps: list[float] = []
    settings = TrainSettings(steps=a.steps, lr=2e-3, batch_size=a.batch_size, seq_len=a.seq_len, warmup_steps=0)
    stamps.append(time.perf_counter())
    train(model, tok, Encoded(rows, a.seq_len), settings, sinks=[lambda e: stamps.append(time.perf_counter())])
    out = _rates(stamps, a.batch_size * a.seq_len)
    # the dtype the base's matmuls run in: the model's, or what the 4-bit layers compute in
    compute = next(
        (m.compute_dtype for m in model.modules() if getattr(m, "compute_dtype", None) is not None), choice.dtype
    )
    peak = matmul_peak(compute)
    flops = flops_per_token(ModelLayout(model.config, model), a.rank, lora.target_modules, a.seq_len)
    return {
        **out,
        "dtype": str(compute).replace("torch.", ""),
        "allocator": allocator.in_use(),
        "matmul_peak_gflops": peak,
        "model_gflops": out["tok_s"] * flops / 1e9,
        "flops_per_token": flops,
        "hardware_use": out["tok_s"] * flops / 1e9 / peak,
    }


def child_plain(a) -> dict:
    """The plain recipe, as PEFT's documentation has it."""
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from workbench.core.config import DEFAULT_MODEL
    from workbench.engine.resolve import resolve_model

    path = str(resolve_model(DEFAULT_MODEL))
    tok = AutoTokenizer.from_pretrained(path)
    data = [{"input_ids": b, "labels": b, "attention_mask": [1] * len(b)} for b in _blocks(tok, a.seq_len)]
    quant = {
        16: None,
        8: BitsAndBytesConfig(load_in_8bit=True),
        4: BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    }
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant[a.bits])
    if a.bits < 16:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(0)
    config = LoraConfig(
        r=a.rank, lora_alpha=16, lora_dropout=0.05, target_modules=a.targets.split(","), task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            stamps.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=a.batch_size,
            max_steps=a.steps,
            learning_rate=2e-3,
            logging_steps=a.steps,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        Trainer(
            model=model, args=args, train_dataset=data, data_collator=default_data_collator, callbacks=[Stamp()]
        ).train()
    return {**_rates(stamps, a.batch_size * a.seq_len), "dtype": str(model.dtype).replace("torch.", "")}


def compare(bits: int, a, dtype: str = "auto") -> dict:
    common = [
        "--dtype",
        dtype,
        "--bits",
        str(bits),
        "--rank",
        str(a.rank),
        "--targets",
        a.targets,
        "--batch-size",
        str(a.batch_size),
        "--seq-len",
        str(a.seq_len),
        "--steps",
        str(a.steps),
    ]
    me = Path(__file__).resolve()
    sides = [
        Side("workbench", [str(me), "--child", "workbench", *common], child_env(True), "tok_s"),
        Side("plain recipe", [str(me), "--child", "plain", *common], child_env(False), "tok_s"),
    ]
    print(
        f"LoRA at {bits} bits ({dtype}), r={a.rank} on {a.targets}, {a.batch_size} x {a.seq_len} tokens, "
        f"{a.steps} steps"
    )
    alternate(sides, a.repeats)
    wb, plain = sides
    last = wb.trials[-1]
    return {
        "bits": bits,
        "workbench_tok_s": wb.median,
        "plain_tok_s": plain.median,
        "ratio": wb.median / plain.median,
        "workbench_trials": wb.values,
        "plain_trials": plain.values,
        "workbench_dtype": last["dtype"],
        "plain_dtype": plain.trials[-1]["dtype"],
        "allocator": last["allocator"],
        "matmul_peak_gflops": statistics.median(t["matmul_peak_gflops"] for t in wb.trials),
        "model_gflops": statistics.median(t["model_gflops"] for t in wb.trials),
        "hardware_use": statistics.median(t["hardware_use"] for t in wb.trials),
        "flops_per_token": last["flops_per_token"],
    }


def table(rows: list[dict]) -> str:
    head = [
        "base",
        "workbench tok/s",
        "plain recipe tok/s",
        "ratio",
        "workbench dtype / plain dtype",
        "model GFLOP/s",
        "matmul peak GFLOP/s",
        "of peak",
    ]
    return markdown_table(
        head,
        [
            [
                f"{r['bits']}-bit",
                f"{r['workbench_tok_s']:.0f}",
                f"{r['plain_tok_s']:.0f}",
                f"{r['ratio']:.2f}x",
                f"{r['workbench_dtype']} / {r['plain_dtype']}",
                f"{r['model_gflops']:.0f}",
                f"{r['matmul_peak_gflops']:.0f}",
                f"{r['hardware_use']:.0%}",
            ]
            for r in rows
        ],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", default="16,4,8", help="comma list")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)  # a trial's dtype (the child's)
    ap.add_argument(
        "--no-bf16-row",
        action="store_true",
        help="leave out the row of the workbench's default dtype (bfloat16 where the CPU has it natively)",
    )
    ap.add_argument("--child", choices=("workbench", "plain"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        a.bits = int(a.bits)
        print(json.dumps(child_workbench(a) if a.child == "workbench" else child_plain(a)), flush=True)
        return 0
    # float32 on both sides first: the same arithmetic, so the ratio is the workbench's own overhead or gain
    rows = [compare(int(b), a, "float32") for b in a.bits.split(",")]
    from workbench.engine.models import cpu_dtype

    if not a.no_bf16_row and cpu_dtype(16) != cpu_dtype(4):  # the default here differs: against the same recipe
        rows.append(compare(16, a, "auto"))
    md = table(rows)
    print("\n" + md)
    save("train", {"machine": machine(), "settings": vars(a), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
