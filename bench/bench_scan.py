"""Results at class scale: a runs folder of 1,000 runs from 30 people, opened as the teacher's Results tab opens it.

    .venv/bin/python bench/bench_scan.py [--runs 1000] [--people 30]

Builds the folder in a temporary directory (each run a results.json as a finished cpu-demo run writes it, with
its own name, person, rank, targets, bits and scores; no training), then times, each in a fresh process:
- the first open: no scan kept anywhere (every results.json read and checked);
- a later open: a new kernel, the scan kept in $WORKBENCH_HOME/scan (what a teacher meets every time but the first);
- a refresh after one student's run was added, in the open panel;
- one person's runs (the "whose runs" filter), in the open panel;
and the chart's size in pixels. An open is `ResultsPanel(AppState(runs_dir=...))`: the scan, the table page and
the chart drawn to PNG, in a process whose imports are done (a first panel on an empty folder, as the app builds
its other tabs first); the imports themselves are reported apart.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_env, machine, markdown_table, run_child, save  # noqa: E402

TRIAL = """
import json, sys, time
t0 = time.perf_counter()
from workbench.ui import AppState, ResultsPanel
import tempfile
ResultsPanel(AppState(runs_dir=tempfile.mkdtemp()))  # pandas and matplotlib warmed, as the app's other tabs do
imported = time.perf_counter()
panel = ResultsPanel(AppState(runs_dir=sys.argv[1]))
opened = time.perf_counter()
out = {"import_s": imported - t0, "open_s": opened - imported, "rows": len(panel.rows),
       "unreadable": len(panel.unreadable), "chart_png_bytes": len(panel.chart.value)}
from PIL import Image
import io
out["chart_px"] = list(Image.open(io.BytesIO(panel.chart.value)).size)
if len(sys.argv) > 2:
    import shutil
    from pathlib import Path
    src = next(p for p in sorted(Path(sys.argv[1]).iterdir()) if p.is_dir())
    shutil.copytree(src, Path(sys.argv[1]) / "zz-one-more-run")
    t = time.perf_counter(); panel.refresh(); out["refresh_one_new_s"] = time.perf_counter() - t
    t = time.perf_counter(); panel.person.value = sys.argv[2]; out["one_person_s"] = time.perf_counter() - t
    out["one_person_rows"] = len(panel.shown)
    shutil.rmtree(Path(sys.argv[1]) / "zz-one-more-run")
print(json.dumps(out))
"""


def build_folder(root: Path, n_runs: int, n_people: int, seed: int = 0) -> None:
    """n_runs run folders from n_people, each a results.json with three variants (base, LoRA, QLoRA)."""
    from workbench.core.config import preset_config
    from workbench.core.files import write_json
    from workbench.core.stats import accuracy_interval
    from workbench.records.results import CompareResult, VariantResult

    rng = random.Random(seed)
    people = [f"student-{i:02d}" for i in range(n_people)]
    for i in range(n_runs):
        rank, targets = rng.choice([2, 4, 8, 16, 32]), rng.choice([["q_proj", "v_proj"], "all-linear"])
        who = people[i % n_people]
        cfg = preset_config("cpu-demo", {"lora": {"rank": rank, "target_modules": targets}, "train": {"seed": i % 3}})
        doc = CompareResult(
            config=cfg.to_dict(),
            device="cpu (float32)",
            device_type="cpu",
            model_path="/models/smollm2",
            task="dates",
            user=who,
        ).to_json()
        variants = [VariantResult("base", 16, weight_bytes=513 * 2**20, peak_memory_bytes=620 * 2**20).to_dict()]
        for name, bits in (("lora", 16), ("qlora", 4)):
            right = rng.randint(40, 56)
            ci = accuracy_interval(right, 60)
            variants.append(
                VariantResult(
                    name,
                    bits,
                    rank=rank,
                    target_modules=targets,
                    weight_bytes=(520 if bits == 16 else 180) * 2**20,
                    peak_memory_bytes=int(rng.uniform(0.9, 1.1) * (1300 if bits == 16 else 950) * 2**20),
                    estimated_peak_bytes=(1290 if bits == 16 else 940) * 2**20,
                    train_seconds=rng.uniform(28, 43),
                    eval_loss=rng.uniform(0.02, 0.07),
                    perplexity=1.04,
                    accuracy=right / 60,
                    steps_done=20,
                    forgetting=rng.uniform(0.05, 0.3),
                    eval_examples=60,
                    accuracy_low=ci.low,
                    accuracy_high=ci.high,
                ).to_dict()
            )
        write_json(root / f"2026120{i % 9 + 1}-{who}-r{rank}-{i:04d}" / "results.json", {**doc, "variants": variants})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--people", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="workbench-bench-scan-"))
    try:
        folder, home = tmp / "runs", tmp / "home"
        build_folder(folder, a.runs, a.people)
        env = child_env(True, {"WORKBENCH_HOME": str(home), "WORKBENCH_USER": "teacher"})
        first, later = [], []
        for i in range(a.repeats):
            shutil.rmtree(home / "scan", ignore_errors=True)  # nothing kept: every results.json read
            first.append(run_child(["-c", TRIAL, str(folder)], env))
            later.append(run_child(["-c", TRIAL, str(folder), "student-07"], env))  # the scan kept on disk
            print(f"  [{i + 1}/{a.repeats}] first open {first[-1]['open_s']:.2f} s, later {later[-1]['open_s']:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(trials: list[dict], key: str) -> float:
        return sorted(t[key] for t in trials)[len(trials) // 2]

    rows = [
        ["first open (nothing kept)", f"{med(first, 'open_s'):.2f}"],
        ["later open (scan kept on disk)", f"{med(later, 'open_s'):.2f}"],
        ["refresh, one run added", f"{med(later, 'refresh_one_new_s'):.2f}"],
        ["one person's runs", f"{med(later, 'one_person_s'):.2f}"],
        ["(a fresh process's imports, before any of these)", f"{med(later, 'import_s'):.2f}"],
    ]
    px = later[-1]["chart_px"]
    table = (
        f"{a.runs} runs from {a.people} people ({later[-1]['rows']} rows), median of {a.repeats} fresh processes; "
        f"the chart {px[0]} x {px[1]} pixels ({later[-1]['chart_png_bytes'] / 1024:.0f} KiB).\n\n"
        + markdown_table(["Results tab", "seconds"], rows)
    )
    print(table)
    save("scan", {"machine": machine(), "first": first, "later": later, "runs": a.runs, "people": a.people}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
