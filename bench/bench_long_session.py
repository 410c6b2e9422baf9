"""A long session: twenty short runs in one process, switching between 16, 8 and 4 bits, and its RSS after each.

    .venv/bin/python bench/bench_long_session.py        # 20 runs on the embedded model (~10 min on 2 cores)
    .venv/bin/python bench/bench_long_session.py --runs 6 --model PATH --data FILE --figure ''

A notebook trains one run after another in the same kernel: whatever a run leaves alive (a model, its optimizer
state, a cache) piles up run after run. The runs happen in one child process, started as the workbench starts its
own (tcmalloc preloaded when installed, `--allocator system` for glibc as it is), so nothing of this parent counts.
After each run_compare the child drops its result, collects garbage and calls workbench.machine.memory.release() (what a
run does between variants), then prints one JSON line: VmRSS, the torch modules and tensors still alive, and the
run's own peak. The parent writes bench/out/long_session.json and the chart docs/img/long-session-rss.png.
tests/scenarios/test_long_session.py runs the child (`--child`) on a tiny model and bounds the growth.
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

from bench.common import OUT, ROOT, child_env  # noqa: E402

MiB = 1024**2
BITS = {"lora": 16, "lora8": 8, "qlora": 4}


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def live_torch() -> dict:
    """The torch modules and tensors this process still holds (gc tracks both). A model layout kept on the meta
    device holds no memory, so modules and tensors with real storage are counted apart."""
    import gc

    import torch

    modules = real_modules = tensors = 0
    storages: dict[int, int] = {}
    module, tensor = torch.nn.Module, torch._C.TensorBase
    objects = gc.get_objects()
    for obj in objects:
        mro = type(obj).__mro__  # not isinstance: some objects' __class__ warns (torch.distributed's old aliases)
        if module in mro:
            modules += 1
            real_modules += any(not p.is_meta for p in obj.parameters(recurse=False))
        elif tensor in mro and not obj.is_meta:
            tensors += 1
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return {
        "modules": modules,
        "modules_with_weights": real_modules,
        "tensors": tensors,
        "tensor_bytes": sum(storages.values()),
        "python_objects": len(objects),  # those gc tracks: a run's leftovers would add thousands
    }


def session(args) -> None:
    """The child: args.runs run_compare calls in this process, one JSON line after each."""
    import torch

    from workbench.core.config import RunConfig
    from workbench.engine.generate import DecodeSettings
    from workbench.experiments.comparison import run_compare
    from workbench.machine import allocator, memory

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    out = Path(args.out)
    print(json.dumps({"run": 0, "allocator": allocator.in_use(), "rss_bytes": rss_bytes(), **live_torch()}), flush=True)
    for i in range(args.runs):
        name = variants[i % len(variants)]
        cfg = RunConfig.from_dict(
            {
                "model": {"name": args.model, "device": "cpu"},
                "lora": {"rank": 8, "alpha": 16.0, "target_modules": "all-linear"},
                "quant": {"bits": 4},
                "train": {
                    "steps": args.steps,
                    "batch_size": args.batch,
                    "seq_len": args.seq_len,
                    "warmup_steps": 0,
                    "eval_examples": args.eval_examples,
                },
                "task": None if args.data else args.task,
                "data": args.data,
                "variants": [name],
            }
        )
        t0 = time.perf_counter()
        result = run_compare(cfg, out / f"run-{i + 1:02d}", decode=DecodeSettings(max_new_tokens=args.max_new_tokens))
        seconds = time.perf_counter() - t0
        peak = result.variants[0].peak_memory_bytes
        del result
        memory.release()  # gc.collect(), then the allocator's free pages back to the OS
        row = {"run": i + 1, "variant": name, "bits": BITS.get(name), "rss_bytes": rss_bytes(), "peak_bytes": peak}
        print(json.dumps({**row, "seconds": round(seconds, 2), **live_torch()}), flush=True)


def summary(rows: list[dict], steady_from: int = 5) -> dict:
    """First, last and largest RSS after a run, and the growth from run `steady_from` on (the first runs fill
    the caches a session keeps by design: imported code, the tokenizer's, the allocator's)."""
    runs = [r for r in rows if r["run"] > 0]
    rss = [r["rss_bytes"] for r in runs]
    steady = [r for r in runs if r["run"] >= steady_from]
    growth = steady[-1]["rss_bytes"] - steady[0]["rss_bytes"] if len(steady) > 1 else 0
    return {
        "before_first_run_mib": round(rows[0]["rss_bytes"] / MiB, 1),
        "first_mib": round(rss[0] / MiB, 1),
        "last_mib": round(rss[-1] / MiB, 1),
        "max_mib": round(max(rss) / MiB, 1),
        "max_at_run": runs[rss.index(max(rss))]["run"],
        f"growth_run{steady_from}_to_last_mib": round(growth / MiB, 1),
        "growth_per_run_mib": round(growth / MiB / max(len(steady) - 1, 1), 2),
        "max_modules_with_weights_after_a_run": max(r["modules_with_weights"] for r in runs),
        "max_tensor_mib_after_a_run": round(max(r["tensor_bytes"] for r in runs) / MiB, 2),
    }


def figure(result: dict):
    from matplotlib.figure import Figure

    runs = [r for r in result["rows"] if r["run"] > 0]
    fig = Figure(figsize=(7.5, 4))
    ax = fig.subplots()
    ax.plot([r["run"] for r in runs], [r["rss_bytes"] / MiB for r in runs], color="0.6", lw=1, zorder=1)
    for bits, marker, color in ((16, "o", "tab:blue"), (8, "s", "tab:orange"), (4, "^", "tab:green")):
        mine = [r for r in runs if r["bits"] == bits]
        ax.scatter([r["run"] for r in mine], [r["rss_bytes"] / MiB for r in mine], marker=marker, color=color,
                   label=f"{bits}-bit base ({mine[0]['variant']})" if mine else None, zorder=2)  # fmt: skip
    ax.axhline(result["rows"][0]["rss_bytes"] / MiB, ls="--", color="0.4", lw=1, label="before the first run")
    s = result["summary"]
    ax.set_xlabel("run (one process, one after another)")
    ax.set_ylabel("RSS after the run (MiB)")
    ax.set_xticks([r["run"] for r in runs])
    ax.set_ylim(0, s["max_mib"] * 1.15)
    ax.set_title(
        f"{len(runs)} runs in one process: {s['first_mib']:.0f} MiB after the first, "
        f"{s['last_mib']:.0f} after the last ({result['allocator']})",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def main(argv: list[str] | None = None) -> None:
    from workbench.core.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--variants", default="lora,lora8,qlora", help="cycled through, one per run")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--task", default="sentiment")
    p.add_argument("--data", default=None, help="a data file instead of the task")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch's default)")
    p.add_argument("--allocator", choices=("workbench", "system"), default="workbench")
    p.add_argument("--json", default=str(OUT / "long_session.json"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "img" / "long-session-rss.png"), help="'' for none")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        session(args)
        return

    from workbench.core.files import save_figure, write_json

    passed = ["--runs", args.runs, "--variants", args.variants, "--model", args.model, "--task", args.task]
    passed += ["--steps", args.steps, "--batch", args.batch, "--seq-len", args.seq_len, "--threads", args.threads]
    passed += ["--eval-examples", args.eval_examples, "--max-new-tokens", args.max_new_tokens]
    passed += ["--data", args.data] if args.data else []
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="long-session-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--out", tmp, *map(str, passed)]
        env = child_env(args.allocator == "workbench")
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
            for line in proc.stdout:
                if line.startswith("{"):
                    rows.append(json.loads(line))
                    r = rows[-1]
                    print(
                        f"run {r['run']:2d} {r.get('variant', '(start)'):6s} rss {r['rss_bytes'] / MiB:7.1f} MiB "
                        f"modules {r['modules_with_weights']} tensors {r['tensor_bytes'] / MiB:.2f} MiB "
                        f"({r.get('seconds', 0):.0f} s)",
                        flush=True,
                    )
        if proc.returncode != 0:
            raise SystemExit(f"the session's process failed (rc={proc.returncode})")
    from bench.common import machine

    result = {
        "what": "RSS after each of a series of run_compare calls in one process (after gc and memory.release())",
        "model": args.model,
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out", "json", "figure")},
        "allocator": rows[0]["allocator"],
        "machine": machine(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "summary": summary(rows),
        "rows": rows,
    }
    write_json(Path(args.json), result)
    print(json.dumps(result["summary"], indent=2))
    if args.figure:
        save_figure(figure(result), Path(args.figure))
        print(f"wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
