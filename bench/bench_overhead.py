"""Instrumentation overhead: the same training with and without what watches it.

    .venv/bin/python bench/bench_overhead.py          # 5 trials a side

Watched: the Train tab's live loss and memory plots (TrainPanel, redrawn at most every 0.5 s and in at most 2%
of the time), the progress bars (the panel's and the CLI's tqdm), metrics.csv, and the memory monitor
(the kernel's peak RSS on Linux, a 5 ms sampling thread elsewhere). Bare: no sinks and no monitor.
Both train the embedded model (LoRA r=8 on q_proj,v_proj, 4 x 128-token blocks of the shakespeare text) in
a fresh process started as the workbench starts its processes; the figure is a trial's mean step time over the
steps after the first (a redraw lands on some steps only), and the median of the trials.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Side, alternate, child_env, machine, markdown_table, save  # noqa: E402


class NullMonitor:
    """A memory monitor that samples nothing (train() reads now() and peak() once a step)."""

    def now(self) -> int:
        return 0

    def peak(self) -> int:
        return 0


def child(watched: bool, steps: int) -> dict:
    from workbench.core.config import DEFAULT_MODEL, LoraSettings, TrainSettings, preset_config
    from workbench.core.events import ProgressBars, Stages
    from workbench.core.paths import data_dir
    from workbench.data import Encoded
    from workbench.engine import models
    from workbench.engine.resolve import resolve_model
    from workbench.engine.train import seed_everything, train
    from workbench.records.runs import MetricsCSV

    path = resolve_model(DEFAULT_MODEL)
    tok = models.load_tokenizer(path)
    ids = tok((data_dir() / "shakespeare" / "train.txt").read_text(encoding="utf-8"))["input_ids"]
    rows = [{"input_ids": ids[i : i + 128], "labels": ids[i : i + 128]} for i in range(0, 128 * 64, 128)]
    model, _ = models.load_model(path, bits=16, device="cpu")
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=8, target_modules="q_proj,v_proj"), 16)
    stamps: list[float] = []
    sinks, monitor, tmp = [lambda e: stamps.append(time.perf_counter())], NullMonitor(), None
    if watched:
        from workbench.ui.state import AppState
        from workbench.ui.train import TrainPanel

        panel = TrainPanel(AppState(preset_config("cpu-demo")))
        tmp = tempfile.TemporaryDirectory()
        csv = MetricsCSV(Path(tmp.name) / "metrics.csv")
        bars = ProgressBars()
        tell = Stages(lambda p: (bars(p), panel._on_progress(p)), 1).begin("train", "lora", steps, "steps")
        sinks = [*sinks, panel._on_event, lambda e: tell(e.step), bars.metric, csv]
        monitor = None  # train() starts its own MemoryMonitor
    stamps.append(time.perf_counter())
    settings = TrainSettings(steps=steps, batch_size=4, seq_len=128, warmup_steps=0)
    train(model, tok, Encoded(rows, 128), settings, sinks=sinks, monitor=monitor)
    # the mean over steps 2 onwards, not the median: a redraw lands on some steps only, and its cost counts
    step_s = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
    return {"step_s": step_s, "redraws": panel.redraws if watched else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)  # the effect is a few percent: more trials than elsewhere
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--child", choices=("watched", "bare"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child == "watched", a.steps)), flush=True)
        return 0
    me = str(Path(__file__).resolve())
    common = ["--steps", str(a.steps)]
    sides = [
        Side("watched", [me, "--child", "watched", *common], child_env(True), "step_s"),
        Side("bare", [me, "--child", "bare", *common], child_env(True), "step_s"),
    ]
    print("instrumentation overhead: live plots, progress bar, metrics.csv and memory sampling")
    alternate(sides, a.repeats)
    watched, bare = sides
    overhead = watched.median / bare.median - 1
    md = markdown_table(
        ["", "median step s", "trials"],
        [
            [
                "watched (plots, tqdm, metrics.csv, memory sampling)",
                f"{watched.median:.3f}",
                ", ".join(f"{v:.3f}" for v in watched.values),
            ],
            ["bare (no sinks, no sampling)", f"{bare.median:.3f}", ", ".join(f"{v:.3f}" for v in bare.values)],
            ["overhead", f"{overhead:+.1%}", ""],
        ],
    )
    print("\n" + md)
    save("overhead", {"machine": machine(), "watched": watched.trials, "bare": bare.trials, "overhead": overhead}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
