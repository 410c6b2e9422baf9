"""Where a workbench training step's time goes: torch.profiler over 4 steps of the embedded model, LoRA r=8 on
q,v, 4 x 128-token blocks (bench_train's settings), the ops by their share of CPU time.

    LD_PRELOAD=$(.venv/bin/python -m workbench.cli.allocator) \
        .venv/bin/python bench/profile_step.py [float32|bfloat16]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from workbench import models  # noqa: E402
from workbench.core.config import DEFAULT_MODEL, LoraSettings, TrainSettings  # noqa: E402
from workbench.core.paths import data_dir  # noqa: E402
from workbench.data import Encoded  # noqa: E402
from workbench.engine.resolve import resolve_model  # noqa: E402
from workbench.engine.train import seed_everything, train  # noqa: E402

KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")  # the matmuls
ATTENTION = "aten::_scaled_dot_product_flash_attention_for_cpu"  # and its _backward


def main(dtype: str = "float32") -> None:
    path = resolve_model(DEFAULT_MODEL)
    tok = models.load_tokenizer(path)
    ids = tok((data_dir() / "shakespeare" / "train.txt").read_text(encoding="utf-8"))["input_ids"]
    rows = [{"input_ids": ids[i : i + 128], "labels": ids[i : i + 128]} for i in range(0, 128 * 64, 128)]
    model, _ = models.load_model(path, bits=16, device="cpu", dtype=dtype)
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=8, target_modules="q_proj,v_proj"), 16)
    train(model, tok, Encoded(rows, 128), TrainSettings(steps=2, batch_size=4, seq_len=128, warmup_steps=0))  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        train(model, tok, Encoded(rows, 128), TrainSettings(steps=4, batch_size=4, seq_len=128, warmup_steps=0))
        wall = time.perf_counter() - t0
    ops = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ops)
    mm = sum(e.self_cpu_time_total for e in ops if e.key in KERNELS)
    attention = sum(e.self_cpu_time_total for e in ops if e.key.startswith(ATTENTION))
    print(
        f"{dtype}: {wall:.2f} s wall for 4 steps; matmuls {mm / total:.1%} of CPU time, attention "
        f"{attention / total:.1%}, everything else {1 - (mm + attention) / total:.1%}"
    )
    print(ops.table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main(*sys.argv[1:])
