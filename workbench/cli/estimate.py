"""`workbench estimate`: the memory breakdown of a variant from the model's config alone, no weights loaded."""

from __future__ import annotations

import argparse
import dataclasses
import json

from workbench.cli.options import add_experts, help_for
from workbench.core.config import DEFAULT_MODEL, INITS, LoraSettings, QuantSettings, TrainSettings


def add_parser(sub) -> None:
    e = sub.add_parser("estimate", help="print the memory breakdown of a variant without loading weights")
    e.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Local folder, Hugging Face name, a config shipped in "
        "data/model_configs/ or its short name (llama-2-7b, llama-65b, llama-3.1-8b, mistral-7b, "
        f"qwen2.5-7b, smollm2-1.7b, ...; offline, no weights). Default {DEFAULT_MODEL}.",
    )
    e.add_argument("--bits", type=int, default=4, help=help_for(QuantSettings, "bits"))
    e.add_argument("--rank", type=int, default=8, help=help_for(LoraSettings, "rank"))
    e.add_argument("--targets", default="all-linear", help=help_for(LoraSettings, "target_modules"))
    add_experts(e)
    e.add_argument("--batch-size", type=int, default=8, help=help_for(TrainSettings, "batch_size"))
    e.add_argument("--seq-len", type=int, default=128, help=help_for(TrainSettings, "seq_len"))
    e.add_argument(
        "--gradient-checkpointing", action="store_true", help=help_for(TrainSettings, "gradient_checkpointing")
    )
    e.add_argument(
        "--no-double-quant",
        action="store_true",
        help="Turn double quantization off. " + help_for(QuantSettings, "double_quant"),
    )
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Device type to estimate for.")
    e.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype of the unquantized base and its activations (default: on cpu what this CPU's runs get, "
        "bfloat16 at 16 bits where it multiplies bfloat16 natively, else float32; bfloat16 on cuda).",
    )
    e.add_argument("--init", choices=list(INITS), default="gaussian", help=help_for(LoraSettings, "init"))
    e.add_argument("--loftq-iter", type=int, default=1, help=help_for(LoraSettings, "loftq_iter"))
    e.add_argument("--pissa-niter", type=int, default=4, help=help_for(LoraSettings, "pissa_niter"))
    e.add_argument("--json", action="store_true", help="Print bytes per component and the total as JSON.")


def run(a: argparse.Namespace) -> int:
    from workbench.engine.estimator import estimate, init_cost
    from workbench.engine.layout import ModelLayout
    from workbench.machine import allocator

    if a.bits not in (16, 8, 4):
        raise ValueError(f"bits must be 16, 8 or 4; got {a.bits}")
    adapt_experts = getattr(a, "lora.adapt_experts") is not False  # --no-experts (shared with compare) sets False
    lora = LoraSettings(
        rank=a.rank,
        target_modules=a.targets,
        adapt_experts=adapt_experts,
        init=a.init,
        loftq_iter=a.loftq_iter,
        pissa_niter=a.pissa_niter,
    )
    if a.bits not in INITS[a.init].bits:
        raise ValueError(
            f"init: {a.init} works on {'/'.join(map(str, INITS[a.init].bits))}-bit bases; give those --bits"
        )
    TrainSettings(batch_size=a.batch_size, seq_len=a.seq_len)  # validates both
    layout = ModelLayout.for_model(a.model)
    layout.check_targets(lora.target_modules)  # an estimate for layers the model lacks would be a wrong one
    layout.check_rank(lora.rank)
    if a.dtype is None:  # what a run here would get (models.cpu_dtype), or a GPU's bfloat16
        from workbench.engine.models import cpu_dtype

        a.dtype = str(cpu_dtype(a.bits)).replace("torch.", "") if a.device == "cpu" else "bfloat16"
    cost = init_cost(
        layout,
        init=lora.init,
        rank=lora.rank,
        targets=lora.target_modules,
        bits=a.bits,
        loftq_iter=lora.loftq_iter,
        pissa_niter=lora.pissa_niter,
        device_type=a.device,
        batch_size=a.batch_size,
        seq_len=a.seq_len,
    )
    est = estimate(
        layout,
        init=cost,
        bits=a.bits,
        rank=lora.rank,
        targets=lora.target_modules,
        batch_size=a.batch_size,
        seq_len=a.seq_len,
        gradient_checkpointing=a.gradient_checkpointing,
        device_type=a.device,
        double_quant=not a.no_double_quant,
        dtype=a.dtype,
        adapt_experts=lora.adapt_experts,
        allocator=allocator.current(),  # what `workbench compare` here would run on (main() preloaded the same)
    )
    if not a.json:
        print(
            f"{a.model}: {a.bits}-bit base, LoRA r={a.rank} on {a.targets}, batch {a.batch_size} x "
            f"{a.seq_len} tokens, {a.device}"
        )
        print(est.table())
        for note in est.notes:
            print(f"note: {note}")
        if cost is not None:
            print(cost.line())
        return 0
    shown = {
        "model": a.model,
        "bits": a.bits,
        "rank": a.rank,
        "targets": lora.target_modules,
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "device": a.device,
        "dtype": a.dtype,
        "gradient_checkpointing": a.gradient_checkpointing,
        "double_quant": not a.no_double_quant,
        "adapt_experts": lora.adapt_experts,
        "adapter_params": layout.adapter_params(lora.rank, lora.target_modules, lora.adapt_experts),
        "init": lora.init,
        "init_cost": None if cost is None else dataclasses.asdict(cost),
    }
    print(json.dumps({**shown, **est.to_dict()}, indent=2))
    return 0
