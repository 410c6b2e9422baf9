"""Measured peak memory against memory.estimate() on the embedded model, one fresh process per configuration.

    .venv/bin/python bench/bench_memory.py                  # the default table (docs/estimator.md)
    .venv/bin/python bench/bench_memory.py --grid full      # bits x ranks x targets x shapes, training only
    .venv/bin/python bench/bench_memory.py --bits 4 --ranks 16 --shapes 8x64 --phases
    .venv/bin/python bench/bench_memory.py --grid quick --allocator limit   # glibc, fixed mmap threshold
    .venv/bin/python bench/bench_memory.py --families llama,gpt2,phi3,mixtral   # ~100M random models, 16/4 bits

`--families` builds a random model of each family (tests/helpers.py's families, hidden 768, 8 blocks, the embedded
model's tokenizer: about 100M parameters) into a temporary folder and measures it at 16 and 4 bits
(rank 16, all-linear, 8 x 64 tokens), the estimate against the training peak (docs/estimator.md).

Each row runs in its own Python process, so what the C allocator kept from one configuration cannot
inflate the next. The child runs comparison.run_compare's own phases, in its order: run_setup.setup, start a
MemoryMonitor, phases.load_group (load and attach LoRA), phases.train_variant, phases.score_variant.

Which peak: a `train` row reports the TRAINING peak, from before the model loads to the end of the
last optimizer step (load, adapter, forward, backward, optimizer), against estimate(train=True). That
is what a machine must hold to fine-tune, and what the estimate predicts. Three steps are enough: the
peak is reached in the second (the first has no AdamW state yet). run_compare's row goes on to
evaluate (no-grad batches of 16) and generate with the same monitor, so its peak is the larger of the
two; `run` rows do exactly that, against estimator.variant_estimate (which takes the larger estimate),
and `base` rows are run_compare's base variant: load, attach the adapter (switched off), evaluate,
generate, against estimator.variant_estimate (estimate(train=False) with the adapter).

Data: the `shakespeare` task, whose text blocks fill seq_len exactly, so batch x seq_len is the real
shape of every step (the `sentiment` examples are ~50-60 tokens whatever seq_len says; `--task` picks).

`--phases` prints, per row, the process memory at each point of the steps (after load, after attaching
LoRA, after each forward, backward and optimizer step), the peak inside each phase, and glibc's own
count of bytes in use (mallinfo2) beside the RSS, so what the allocator holds that no tensor uses shows.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

MiB = 1024**2
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MODES = ("train", "run", "base")


@dataclass(frozen=True)
class BenchConfig:
    bits: int = 16
    rank: int = 16
    targets: str = "all-linear"  # or a comma list such as q_proj,v_proj
    batch_size: int = 8
    seq_len: int = 64
    steps: int = 3
    threads: int = 1
    dropout: float = 0.05
    gradient_checkpointing: bool = False
    task: str = "shakespeare"
    mode: str = "train"  # train: the training peak; run: + evaluate and generate; base: no adapter, no training
    dtype: str = "auto"  # of the unquantized base and 4-bit compute (auto: what this machine gets)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")

    @property
    def target_modules(self):
        return "all-linear" if self.targets == "all-linear" else [t for t in self.targets.split(",") if t]

    def label(self) -> str:
        tgt = "all" if self.targets == "all-linear" else self.targets.replace("_proj", "")
        extra = "".join(
            [
                " ckpt" if self.gradient_checkpointing else "",
                f" p={self.dropout:g}" if self.dropout != 0.05 else "",
                f" {self.task}" if self.task != "shakespeare" else "",
            ]
        )
        if self.mode == "base":
            return f"{self.bits:>2}-bit base (evaluate + generate), seq {self.seq_len}{extra}"
        return f"{self.mode:<5} {self.bits:>2}-bit r={self.rank:<2} {tgt:<4} {self.batch_size}x{self.seq_len}{extra}"


# --------------------------------------------------------------------------- in the child process


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo():
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def read() -> tuple[int, int]:
        m = fn()
        # (bytes handed out: heap chunks + mmapped chunks, bytes free inside the heap arenas)
        return int(m.uordblks + m.hblkhd), int(m.fordblks)

    return read


def _statm() -> tuple[int, int]:
    """(resident, file-backed resident) bytes of this process, from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as f:
        parts = f.read().split()
    return int(parts[1]) * PAGE, int(parts[2]) * PAGE


class PhaseTracker:
    """RSS (and glibc's bytes in use) at named points, and the peak between consecutive points.

    mallinfo2 walks every free chunk of every arena under its lock, so it is sampled every
    `malloc_every` ticks only; a 5 ms walk of a fragmented heap slows a run several times over."""

    def __init__(self, interval: float = 0.005, malloc_every: int = 10):
        self.interval = interval
        self.malloc_every = malloc_every
        self.mallinfo = _mallinfo()
        self.base_rss, self.base_file = _statm()
        self.base_heap = self._heap()[0]
        self.phase_peak = self.base_rss
        self.phase_heap_peak = self.base_heap
        self.marks: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _heap(self) -> tuple[int, int]:
        return self.mallinfo() if self.mallinfo else (0, 0)

    def _sample(self, heap: bool) -> None:
        rss, _ = _statm()
        used = self._heap()[0] if heap else 0
        with self._lock:
            self.phase_peak = max(self.phase_peak, rss)
            self.phase_heap_peak = max(self.phase_heap_peak, used)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            self._sample(tick % self.malloc_every == 0)

    def mark(self, name: str) -> None:
        self._sample(True)
        rss, file = _statm()
        used, free = self._heap()
        with self._lock:
            self.marks.append(
                {
                    "phase": name,
                    "rss": rss - self.base_rss,
                    "file": file - self.base_file,
                    "peak": self.phase_peak - self.base_rss,
                    "heap": used - self.base_heap,
                    "heap_peak": self.phase_heap_peak - self.base_heap,
                    "heap_free": free,
                }
            )
            self.phase_peak = rss
            self.phase_heap_peak = used

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def estimate_for(cfg: BenchConfig, s) -> dict:
    """What the estimator says for this row, made as run_compare makes it (see the module docstring);
    `s` is the row's run_setup.RunSetup."""
    from workbench.engine.estimator import estimate, variant_estimate

    shapes = s.shapes
    common = dict(
        bits=cfg.bits,
        rank=cfg.rank,
        targets=cfg.target_modules,
        device_type="cpu",
        double_quant=s.cfg.quant.double_quant,
        dtype=s.choice.dtype_name,
    )
    if cfg.mode == "base":
        est = estimate(
            s.layout,
            batch_size=shapes.eval_batch,
            seq_len=shapes.eval_seq,
            train=False,
            scored_tokens=shapes.eval_scored,
            **common,
        )
        total = variant_estimate(s.layout, s.cfg, cfg.bits, False, "cpu", shapes, True, s.choice.dtype_name)
    else:
        est = estimate(
            s.layout,
            batch_size=shapes.train_batch,
            seq_len=shapes.train_seq,
            gradient_checkpointing=cfg.gradient_checkpointing,
            train=True,
            scored_tokens=shapes.train_scored,
            **common,
        )
        total = est.total
        if cfg.mode == "run":
            total = variant_estimate(s.layout, s.cfg, cfg.bits, True, "cpu", shapes, dtype=s.choice.dtype_name)
    return {"estimate": total, "components": est.components, "notes": est.notes, "shapes": asdict(shapes)}


def _run_config(cfg: BenchConfig, model: str):
    from workbench.core.config import (
        LoraSettings,
        ModelSettings,
        QuantSettings,
        RunConfig,
        TrainSettings,
        variant_for_bits,
    )

    settings = TrainSettings(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        warmup_steps=0,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    return RunConfig(
        model=ModelSettings(name=model, device="cpu", dtype=cfg.dtype),
        lora=LoraSettings(rank=cfg.rank, target_modules=cfg.target_modules, dropout=cfg.dropout),
        quant=QuantSettings(bits=cfg.bits),
        train=settings,
        task=cfg.task,
        variants=[variant_for_bits(cfg.bits)],
    )


def _setup(cfg: BenchConfig, model_path: str | None, task=None):
    from workbench.core.config import DEFAULT_MODEL
    from workbench.core.events import Hooks
    from workbench.experiments import run_setup

    quiet = Hooks(on_status=lambda msg: None)
    return run_setup.setup(_run_config(cfg, model_path or DEFAULT_MODEL), task=task, hooks=quiet)


def measure(cfg: BenchConfig, model_path: str | None = None, phases: bool = False) -> dict:
    """One configuration, in this process: the measured peak (see the module docstring) and the estimate."""
    import torch

    torch.set_num_threads(cfg.threads)
    from workbench.core.events import Hooks
    from workbench.engine import models
    from workbench.experiments import phases as run_phases
    from workbench.machine import allocator, memory

    s = _setup(cfg, model_path)
    quiet = Hooks(on_status=lambda msg: None)
    predicted = estimate_for(cfg, s)
    name = s.cfg.variants[0]

    memory.release()
    allocator_used = allocator.configure()
    tracker = PhaseTracker() if phases else None
    mark = tracker.mark if tracker else (lambda name: None)
    monitor = memory.MemoryMonitor("cpu").start()
    start = time.perf_counter()
    # run_compare attaches the adapter before evaluating the base variant whenever a trained variant shares
    # its bit width (base and lora both run at 16 bits), and switches it off for the base's answers
    model = run_phases.load_group(s, cfg.bits, [name], quiet)
    load_peak = monitor.peak()  # the load and the adapter's (small) allocation
    mark("load + LoRA")
    step_peaks: list[int] = []
    losses: list[float] = []
    train_peak = None
    if cfg.mode != "base":
        hooks = []
        if tracker:
            from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

            step = {"n": 0}
            hooks.append(model.register_forward_hook(lambda *a: mark(f"forward {step['n'] + 1}")))
            hooks.append(register_optimizer_step_pre_hook(lambda *a: mark(f"backward {step['n'] + 1}")))

            def after_step(*a):
                step["n"] += 1
                mark(f"optimizer {step['n']}")

            hooks.append(register_optimizer_step_post_hook(after_step))
        tr = run_phases.train_variant(
            s, model, "bench", monitor, quiet.adding([lambda e: step_peaks.append(e.peak_memory_bytes)])
        )
        losses = tr.losses
        train_peak = monitor.peak()
        for h in hooks:
            h.remove()
    if cfg.mode in ("run", "base"):
        run_phases.score_variant(s, model, base=cfg.mode == "base", hooks=quiet)
        mark("evaluate + generate")
    peak = monitor.stop()
    seconds = time.perf_counter() - start
    if tracker:
        tracker.stop()
    return {
        "config": asdict(cfg),
        "peak": peak,
        "train_peak": train_peak,
        "load_peak": load_peak,
        **predicted,
        "step_peaks": step_peaks,
        "losses": losses,
        "seconds": round(seconds, 1),
        "phases": tracker.marks if tracker else None,
        "weight_bytes": models.weight_bytes(model),
        "allocator": allocator_used,
        "dtype": s.choice.dtype_name,
    }


def reestimate(rows: list[dict], model_path: str | None = None) -> list[dict]:
    """Rows measured earlier (a --json file), with the estimate made again by the current estimator."""
    from workbench.data import load_task

    tasks: dict = {}
    out = []
    for row in rows:
        cfg = BenchConfig(**row["config"])
        task = tasks.setdefault(cfg.task, load_task(cfg.task))
        out.append({**row, **estimate_for(cfg, _setup(cfg, model_path, task))})
    return out


# --------------------------------------------------------------------------- in the parent


def run_one(
    cfg: BenchConfig,
    model_path: str | None = None,
    phases: bool = False,
    timeout: float = 1800,
    allocator: str = "auto",
    preload: str | None = None,
) -> dict:
    """measure(cfg) in a fresh Python process, started as the workbench starts its processes (tcmalloc
    preloaded when installed, unless `allocator` is system or limit: see workbench.machine.allocator)."""
    from workbench.machine.allocator import ENV, preload_env

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(asdict(cfg))]
    if model_path:
        cmd += ["--model-path", str(model_path)]
    if phases:
        cmd.append("--phases")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env = preload_env({**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", ENV: allocator})
    if preload:  # a tcmalloc that is on disk but not installed (extracted from its .deb): the workbench's setting
        env = {**env, "LD_PRELOAD": preload, ENV: "system"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench child failed ({cfg.label()}): rc={proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def error(row: dict) -> float:
    """(estimated - measured) / measured of one result row."""
    return (row["estimate"] - row["peak"]) / row["peak"]


SHAPES = ((8, 64), (4, 128), (2, 256))


def grid(name: str, threads: int = 1, steps: int = 3) -> list[BenchConfig]:
    def cfg(*args, **kw) -> BenchConfig:
        return BenchConfig(*args, threads=threads, steps=steps, **kw)

    out: list[BenchConfig] = []
    if name == "quick":
        return [cfg(bits, 16, "all-linear", 8, 64) for bits in (16, 4)]
    if name == "full":
        return [
            cfg(bits, rank, targets, b, s)
            for bits in (16, 8, 4)
            for rank in (4, 16, 64)
            for targets in ("all-linear", "q_proj,v_proj")
            for b, s in SHAPES
        ]
    # default: every shape at each bit width (rank 16, all-linear), then ranks and targets at 8 x 64
    for bits in (16, 8, 4):
        out += [cfg(bits, 16, "all-linear", b, s) for b, s in SHAPES]
        out += [cfg(bits, rank, "all-linear", 8, 64) for rank in (4, 64)]
        out += [cfg(bits, rank, "q_proj,v_proj", 8, 64) for rank in (16, 64)]
    # fewer and more tokens per step (the rows above all have 512)
    out += [cfg(bits, 16, "all-linear", b, s) for bits in (16, 4) for b, s in ((4, 64), (8, 128))]
    # gradient checkpointing: each block's input kept, one block recomputed at a time
    out += [cfg(bits, 16, "all-linear", 8, 64, gradient_checkpointing=True) for bits in (16, 4)]
    # as run_compare measures a variant: the cpu-demo preset's settings on its sentiment task (training,
    # evaluation with generated answers, generation), then base variants on text blocks of three lengths
    out += [cfg(bits, 8, "all-linear", 8, 64, task="sentiment", mode="run") for bits in (16, 4)]
    out += [cfg(16, 8, "all-linear", 8, 64, task="sentiment", mode="base")]
    out += [cfg(16, 8, "all-linear", 8, s, mode="base") for s in (64, 128, 256)]
    return out


def _row_cells(r: dict) -> list[str]:
    c = r["config"]
    sh = r["shapes"]
    if c["mode"] == "base":
        what, shape = "base: evaluate + generate", f"{sh['eval_batch']} x {sh['eval_seq']} (eval)"
        rank = targets = "-"
    else:
        what = {"train": "training", "run": "training + evaluate + generate"}[c["mode"]]
        shape = f"{sh['train_batch']} x {sh['train_seq']}"
        rank, targets = str(c["rank"]), c["targets"]
    notes = [
        n
        for n, on in (
            ("checkpointing", c["gradient_checkpointing"]),
            (f"dropout {c['dropout']:g}", c["dropout"] != 0.05),
            (c["task"], c["task"] != "shakespeare"),
        )
        if on
    ]
    return [
        what + (f" ({', '.join(notes)})" if notes else ""),
        str(c["bits"]),
        rank,
        targets,
        shape,
        f"{r['peak'] / MiB:,.0f}",
        f"{r['estimate'] / MiB:,.0f}",
        f"{error(r):+.1%}",
    ]


def format_table(rows: list[dict]) -> str:
    head = ["#", "peak of", "bits", "rank", "targets", "batch x seq", "measured MiB", "estimated MiB", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        lines.append("| " + " | ".join([str(i)] + _row_cells(r)) + " |")
    return "\n".join(lines)


def format_phases(row: dict) -> str:
    lines = [
        f"  {'phase (MiB)':<14}{'RSS now':>10}{'peak in phase':>15}{'file-backed':>13}{'malloc in use':>15}"
        f"{'malloc peak':>13}{'heap free':>11}"
    ]
    for m in row["phases"] or []:
        lines.append(
            f"  {m['phase']:<14}{m['rss'] / MiB:10.0f}{m['peak'] / MiB:15.0f}{m['file'] / MiB:13.0f}"
            f"{m['heap'] / MiB:15.0f}{m['heap_peak'] / MiB:13.0f}{m['heap_free'] / MiB:11.0f}"
        )
    if row.get("step_peaks"):
        lines.append("  peak so far after each step: " + ", ".join(f"{p / MiB:.0f}" for p in row["step_peaks"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from workbench.core.files import write_json

    ap = argparse.ArgumentParser(prog="bench/bench_memory.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=("quick", "default", "full"), default="default")
    ap.add_argument("--bits", help="comma list, e.g. 16,4 (with --ranks/--targets/--shapes: a custom grid)")
    ap.add_argument("--ranks", help="comma list, e.g. 4,16,64")
    ap.add_argument("--targets", help="semicolon list, e.g. 'all-linear;q_proj,v_proj'")
    ap.add_argument("--shapes", help="comma list of BATCHxSEQ, e.g. 8x64,2x256")
    ap.add_argument("--mode", choices=MODES, default="train", help="for a custom grid (see the docstring)")
    ap.add_argument("--task", default="shakespeare", help="for a custom grid")
    ap.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout, for a custom grid")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="for a custom grid")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--phases", action="store_true", help="print the memory at each phase of every row")
    ap.add_argument(
        "--allocator",
        choices=("auto", "system", "limit"),
        default="auto",
        help="auto: tcmalloc when installed (as the workbench runs); system: glibc as it is; limit: glibc with a "
        "fixed mmap threshold (how the workbench ran before)",
    )
    ap.add_argument("--preload", help="a tcmalloc library to start each child with, when it is not installed")
    ap.add_argument("--dtype", default="auto", help="dtype of the unquantized base (auto, float32, bfloat16)")
    ap.add_argument("--model-path", help="model folder (default: the embedded model)")
    ap.add_argument("--json", help="also write every row's result to this JSON file")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument(
        "--reestimate",
        metavar="JSON",
        nargs="+",
        help="no measuring: print the table of rows measured earlier (--json files, concatenated) "
        "with the current estimator's figures",
    )
    ap.add_argument("--families", help="comma list of families (tests/helpers.py): ~100M random models, 16/4 bits")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        cfg = BenchConfig(**json.loads(args.child))
        print(json.dumps(measure(cfg, args.model_path, phases=args.phases)), flush=True)
        return 0
    if args.families:
        return run_families(args.families.split(","), args)
    if args.reestimate:
        rows = reestimate(
            [r for f in args.reestimate for r in json.loads(Path(f).read_text(encoding="utf-8"))], args.model_path
        )
        return _report(rows, [BenchConfig(**r["config"]) for r in rows], args)

    if any((args.bits, args.ranks, args.targets, args.shapes)):
        bits = [int(b) for b in (args.bits or "16,4").split(",")]
        ranks = [int(r) for r in (args.ranks or "16").split(",")]
        targets = (args.targets or "all-linear").split(";")
        shapes = [tuple(int(x) for x in s.split("x")) for s in (args.shapes or "8x64").split(",")]
        configs = [
            BenchConfig(
                b,
                r,
                t,
                bs,
                sl,
                steps=args.steps,
                threads=args.threads,
                dropout=args.dropout,
                gradient_checkpointing=args.gradient_checkpointing,
                task=args.task,
                mode=args.mode,
                dtype=args.dtype,
            )
            for b in bits
            for r in ranks
            for t in targets
            for bs, sl in shapes
        ]
    else:
        configs = [replace(c, dtype=args.dtype) for c in grid(args.grid, args.threads, args.steps)]
    rows = []
    for i, cfg in enumerate(configs, 1):
        t0 = time.perf_counter()
        row = run_one(cfg, args.model_path, phases=args.phases, allocator=args.allocator)
        rows.append(row)
        print(
            f"[{i}/{len(configs)}] {cfg.label():<44} measured {row['peak'] / MiB:6.0f} MiB  estimated "
            f"{row['estimate'] / MiB:6.0f} MiB  error {error(row):+6.1%}  (load peak {row['load_peak'] / MiB:.0f}"
            f" MiB; {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        if args.phases:
            print(format_phases(row), flush=True)
        if args.json:  # after every row (atomically), so a long run that is stopped keeps what it measured
            write_json(Path(args.json), rows)
    return _report(rows, configs, args)


FAMILY_HIDDEN, FAMILY_LAYERS = 768, 8


def build_family(family: str, out: Path) -> int:
    """A random ~100M-parameter model of `family` with the embedded model's tokenizer, saved to `out`;
    returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import family_config

    from workbench.engine.models import load_tokenizer
    from workbench.engine.resolve import resolve_model

    tokenizer = load_tokenizer(resolve_model())
    config = family_config(
        family,
        h=FAMILY_HIDDEN,
        layers=FAMILY_LAYERS,
        vocab=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def run_families(families: list[str], args) -> int:
    """Each family's random model at 16 and 4 bits, each row in a fresh process; a markdown table."""
    import tempfile

    from workbench.core.files import write_json, write_text

    rows, lines = [], []
    lines.append("| family | parameters | bits | allocator | measured peak MiB | estimated MiB | error |")
    lines.append("|---|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            folder = Path(tmp) / family
            params = build_family(family, folder)
            for bits in (16, 4):
                cfg = BenchConfig(bits, 16, "all-linear", 8, 64, steps=args.steps, threads=args.threads)
                t0 = time.perf_counter()
                row = run_one(cfg, folder, allocator=args.allocator, preload=args.preload)
                row = {**row, "family": family, "params": params}
                rows.append(row)
                line = (
                    f"| {family} | {params / 1e6:.1f}M | {bits} | {row['allocator']} | {row['peak'] / MiB:,.0f} | "
                    f"{row['estimate'] / MiB:,.0f} | {error(row):+.1%} |"
                )
                lines.append(line)
                print(line, f"({time.perf_counter() - t0:.0f} s)", flush=True)
                if args.json:
                    write_json(Path(args.json), rows)
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        write_text(Path(args.markdown), table + "\n")
    return 0


def _report(rows: list[dict], configs: list[BenchConfig], args) -> int:
    from workbench.core.files import write_json, write_text

    table = format_table(rows)
    worst = max(range(len(rows)), key=lambda i: abs(error(rows[i])))
    summary = f"worst row: #{worst + 1} ({configs[worst].label().strip()}), {error(rows[worst]):+.1%}"
    print("\n" + table + "\n\n" + summary)
    if args.json and args.reestimate:
        write_json(Path(args.json), rows)
    if args.markdown:
        write_text(Path(args.markdown), table + "\n\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
