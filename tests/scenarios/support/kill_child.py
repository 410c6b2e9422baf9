"""The writer that tests/scenarios/test_kill_writes.py kills: run folders written as the workbench writes them, in
a loop.

Started once as `python tests/scenarios/support/kill_child.py ROOT`, it imports torch, peft and matplotlib and builds
tiny LoRA models once (a few seconds), then serves the test over stdin/stdout: for each `go SEED` it forks a worker that
writes run folders under ROOT until it is killed, printing `pid N` for it and `dead N SIGNAL` once it is reaped.
Forking keeps each of the many kills cheap; the models are built on one torch thread, as forking a process whose
OpenMP pool has started can hang the child.

A worker prints `B <what> <folder>` before each write and `E <what> <folder>` after it (one os.write each: whole
lines, even when killed), so the test knows which write each kill cut short.
"""

from __future__ import annotations

import os
import random
import sys
import traceback
from pathlib import Path

FOLDERS = [f"run-{i}" for i in range(6)] + [f"sweep/p{i}" for i in range(4)]  # reused: most writes replace
ADAPTER_SHAPES = [(2, ["q_proj", "v_proj"]), (16, ["q_proj", "v_proj"]), (64, "all-linear"), (128, "all-linear")]
VARIANTS = ["lora", "lora8", "qlora"]


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # unbuffered: a forked worker must not inherit or lose a buffer


def build_adapters():
    """(model, rank, optimizer state dict) per shape: adapters of 8 KB to 2.1 MB, training states of 31 KB to 4.2 MB."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    out = []
    for rank, targets in ADAPTER_SHAPES:
        torch.manual_seed(rank)
        model = get_peft_model(
            LlamaForCausalLM(config), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
        )
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        model(input_ids=torch.randint(0, 128, (1, 8))).logits.float().pow(2).mean().backward()
        opt.step()  # so the state holds AdamW's moments, as a real one does
        out.append((model, rank, opt.state_dict()))
    return out


def worker(root: Path, seed: int, adapters) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch
    from matplotlib.figure import Figure

    from workbench.core.config import RunConfig
    from workbench.core.events import MetricEvent
    from workbench.core.files import save_figure, write_json
    from workbench.engine.train import TrainState
    from workbench.records import runs
    from workbench.records.results import VariantResult

    rng = random.Random(seed)
    for i in range(10**9):
        folder = root / rng.choice(FOLDERS)
        run = runs.Run(folder)
        write_id = f"{seed}-{i}"
        model, rank, opt_state = rng.choice(adapters)
        steps = rng.choice([3, 40, 400])
        names = rng.sample(VARIANTS, rng.randint(1, 3))

        say(f"B metrics {folder}")
        sink = runs.MetricsCSV(folder / "metrics.csv")
        for name in names:
            for step in range(1, steps + 1):
                sink(MetricEvent(name, step, steps, 2.0 / step, 1e-3, 123.4 + i, 10**6 * step, 10**7, step * 0.0123))
        sink.close()
        say(f"E metrics {folder}")

        for name in names:
            state = TrainState(steps, opt_state, torch.get_rng_state(), random.getstate())
            say(f"B adapter {run.adapter_dir(name)}")
            runs.save_adapter(model, run.adapter_dir(name), state)
            say(f"E adapter {run.adapter_dir(name)}")

        cfg = RunConfig.from_dict({"variants": names, "train": {"steps": steps}, "lora": {"rank": rank}})
        doc = {"config": cfg.to_dict(), "write_id": write_id, "task": "kill", "device": "cpu", "stopped": False}
        results = [
            VariantResult(n, {"lora": 16, "lora8": 8, "qlora": 4}[n], rank, "all-linear", rank * 1000, 10**6,
                          final_train_loss=rng.random(), steps_done=steps, accuracy=rng.random())
            for n in names
        ]  # fmt: skip
        say(f"B results {folder}")
        runs.write_results(run, doc, results)
        say(f"E results {folder}")

        say(f"B predictions {folder}")
        rows = [{"prompt": f"q{k} " * rng.randint(1, 40), "answer": "a", "ok": k % 2 == 0} for k in range(steps * 20)]
        write_json(folder / "predictions.json", {"write_id": write_id, "rows": rows})
        say(f"E predictions {folder}")

        say(f"B figure {folder}")
        fig = Figure(figsize=(rng.uniform(2, 6), rng.uniform(2, 4)))
        fig.subplots().plot([rng.random() for _ in range(steps * 2)])
        save_figure(fig, folder / "loss.png")
        say(f"E figure {folder}")


def main() -> None:
    root = Path(sys.argv[1])
    adapters = build_adapters()
    say("ready")
    for line in sys.stdin:
        seed = int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            try:
                worker(root, seed, adapters)
            except BaseException:
                say("ERR " + traceback.format_exc().replace("\n", " | "))
            os._exit(1)
        say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"dead {pid} {os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)}")


if __name__ == "__main__":
    main()
