"""`make gpu-check`: on a machine with an NVIDIA GPU, the CUDA tests, then CUDA peaks and speeds of real
architectures, in under 5 minutes and with no downloads.

    .venv/bin/python bench/gpu_check.py                       # the CUDA tests + the three models below
    .venv/bin/python bench/gpu_check.py --device cpu --models tests-tiny-folder --skip-tests   # the CPU path

Models: random-initialised from the configs shipped in data/model_configs (real shapes, no weights to
fetch), saved once to a scratch folder in memory (/dev/shm when there is one) and loaded by the workbench's
own models.load_model: SmolLM2-1.7B and Qwen2.5-1.5B at 16, 8 and 4 bits, Llama-3.1-8B at 4 bits. Each
row: LoRA r=16 on every linear layer, a few steps of batch 4 x 256 random tokens, then
- the peak memory (CUDA: max_memory_allocated from before the load; CPU: RSS above the start) against the
  estimator's prediction for that row (estimator.estimate, made from the config before the load);
- training tokens/s over the steps after the first;
- side-by-side generation: three prompts answered with the adapter off and on (generate.generate), tok/s.
Then a sweep's study on the GPU: the embedded model's 4-point grid with 1 and with 2 workers sharing the one
GPU, the wall time of each (--skip-sweep leaves it out).
Writes bench/out/gpu_check.json and .md (or --out DIR). `make test` runs the CPU path on the tiny test model,
so the script cannot rot while no GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, ROOT, machine, markdown_table  # noqa: E402

PLAN = [("smollm2-1.7b", (16, 8, 4)), ("qwen2.5-1.5b", (16, 8, 4)), ("llama-3.1-8b", (4,))]


def scratch() -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="workbench-gpu-check-", dir=shm if shm.is_dir() else None))


def random_model_folder(name: str, where: Path, device: str) -> Path:
    """A folder holding a random-initialised model of `name`'s config (and the embedded tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.core.config import DEFAULT_MODEL
    from workbench.engine.models import load_tokenizer
    from workbench.engine.resolve import model_config_for, resolve_model

    out = where / Path(name).name.replace("/", "__")
    if (out / "config.json").is_file():
        return out
    cfg = model_config_for(name)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it will run: seconds on a GPU for billions of weights
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    load_tokenizer(resolve_model(DEFAULT_MODEL)).save_pretrained(out)  # prompts for the generation check
    del model
    return out


def one_row(folder: Path, name: str, bits: int, device: str, steps: int, batch: int, seq: int) -> dict:
    import torch

    from workbench.core.config import LoraSettings, QuantSettings, TrainSettings
    from workbench.data import Encoded
    from workbench.engine import models
    from workbench.engine.estimator import estimate
    from workbench.engine.generate import DecodeSettings, generate
    from workbench.engine.layout import ModelLayout
    from workbench.engine.resolve import model_config_for
    from workbench.engine.train import seed_everything, train
    from workbench.machine import memory

    choice = models.pick_device(device)
    lora = LoraSettings(rank=16, target_modules="all-linear")
    layout = ModelLayout(model_config_for(str(folder)))
    predicted = estimate(
        layout,
        bits=bits,
        rank=lora.rank,
        targets=lora.target_modules,
        batch_size=batch,
        seq_len=seq,
        device_type=choice.type,
        dtype=choice.dtype_name,
        scored_tokens=batch * (seq - 1),
    )
    memory.release()
    monitor = memory.MemoryMonitor(choice.device).start()
    t0 = time.perf_counter()
    model, _ = models.load_model(folder, bits=bits, quant=QuantSettings(bits=bits), device=device)
    load_s = time.perf_counter() - t0
    seed_everything(0)
    model = models.attach_lora(model, lora, bits)
    g = torch.Generator().manual_seed(0)
    vocab = min(layout.config.vocab_size, 49152)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, vocab, (64, seq), generator=g).tolist()]
    stamps = [time.perf_counter()]
    settings = TrainSettings(steps=steps, batch_size=batch, seq_len=seq, warmup_steps=0, lr=1e-4)
    result = train(
        model,
        models.load_tokenizer(folder),
        Encoded(rows, seq),
        settings,
        monitor=monitor,
        sinks=[lambda e: stamps.append(time.perf_counter())],
    )
    peak = monitor.stop()
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])] or [stamps[-1] - stamps[0]]
    tok = models.load_tokenizer(folder)
    prompts = ["Write a line about the sea.", "Name three colours.", "What is two and two?"]
    decode = DecodeSettings(max_new_tokens=32)
    gen_tokens, gen_s = 0, 0.0
    for off in (True, False):
        for p in prompts:
            out = generate(model, tok, [p], decode, base=off)[0]
            gen_tokens, gen_s = gen_tokens + out.new_tokens, gen_s + out.seconds
    del model
    memory.release()
    return {
        "model": name,
        "bits": bits,
        "device": choice.describe(),
        "peak_bytes": peak,
        "estimated_bytes": predicted.total,
        "error": (predicted.total - peak) / peak if peak else None,
        "train_tok_s": batch * seq / (sum(gaps) / len(gaps)),
        "generate_tok_s": gen_tokens / gen_s if gen_s else None,
        "load_s": load_s,
        "final_loss": result.losses[-1],
    }


def cuda_tests() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return {"returncode": proc.returncode, "summary": tail, "seconds": time.perf_counter() - t0}


def sweep_workers(where: Path) -> dict:
    """The embedded model's 4-point grid (ranks 2 and 16, q,v and all-linear, 16 bits) as a study, with 1 and
    then 2 workers on the one GPU: the wall time of each, in a fresh folder each."""
    from workbench.machine import allocator

    grid = ["--preset", "cpu-demo", "--ranks", "2,16", "--target-sets", "q_proj,v_proj;all-linear", "--bits", "16"]
    out = {}
    for n in (1, 2):
        cmd = [
            sys.executable,
            "-m",
            "workbench.cli",
            "sweep",
            *grid,
            "--workers",
            str(n),
            "--out",
            str(where / f"w{n}"),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=allocator.preload_env())
        out[f"{n} worker{'s' if n > 1 else ''}"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "returncode": proc.returncode,
            "last line": (proc.stdout.strip().splitlines() or [proc.stderr[-300:]])[-1],
        }
        print(f"sweep, {n} worker(s):", json.dumps(out[f"{n} worker{'s' if n > 1 else ''}"]), flush=True)
    return out


def table(rows: list[dict]) -> str:
    return markdown_table(
        ["model (random weights)", "bits", "peak MiB", "estimated MiB", "error", "train tok/s", "generate tok/s"],
        [
            [
                r["model"],
                r["bits"],
                f"{r['peak_bytes'] / 2**20:,.0f}",
                f"{r['estimated_bytes'] / 2**20:,.0f}",
                f"{r['error']:+.1%}" if r["error"] is not None else "-",
                f"{r['train_tok_s']:,.0f}",
                f"{r['generate_tok_s']:.1f}" if r["generate_tok_s"] else "-",
            ]
            for r in rows
        ],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--models", help="comma list of shipped names or model folders, each at --bits (default: the plan)")
    ap.add_argument("--bits", default="16,8,4", help="with --models")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests first")
    ap.add_argument("--skip-sweep", action="store_true", help="do not time the 1- and 2-worker sweep on the GPU")
    ap.add_argument("--out", default=str(OUT), help="folder for gpu_check.json and gpu_check.md")
    a = ap.parse_args(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible here; run it on a machine with one (or --device cpu)", file=sys.stderr)
        return 2
    plan = PLAN if not a.models else [(m, tuple(int(b) for b in a.bits.split(","))) for m in a.models.split(",")]
    started = time.perf_counter()
    report = {"machine": machine(), "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None, "rows": []}
    if not a.skip_tests and a.device == "cuda":
        report["cuda_tests"] = cuda_tests()
        print("CUDA tests:", report["cuda_tests"]["summary"], flush=True)
    where = scratch()
    try:
        for name, bit_list in plan:
            folder = (
                Path(name) if (Path(name) / "config.json").is_file() else random_model_folder(name, where, a.device)
            )
            for bits in bit_list:
                row = one_row(folder, Path(name).name, bits, a.device, a.steps, a.batch_size, a.seq_len)
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
        if a.device == "cuda" and not a.skip_sweep:
            report["sweep_workers"] = sweep_workers(where)
    finally:
        import shutil

        shutil.rmtree(where, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    md = table(report["rows"])
    from workbench.core.files import write_json, write_text

    out = Path(a.out)
    write_json(out / "gpu_check.json", report)
    head = f"{report['gpu'] or a.device}, {report['machine']['date']}, {report['seconds']:.0f} s"
    if "sweep_workers" in report:
        md += "\n\nA 4-point sweep on one GPU: " + ", ".join(
            f"{k} {v['seconds']:.0f} s" for k, v in report["sweep_workers"].items()
        )
    write_text(out / "gpu_check.md", f"{head}\n\n{md}\n")
    print("\n" + head + "\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
