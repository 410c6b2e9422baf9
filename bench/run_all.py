"""`make bench`: every benchmark in turn, on a quiet machine, and one page of their tables.

    .venv/bin/python bench/run_all.py            # about 35 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick    # one trial a side, for a look

Writes bench/out/<name>.json and .md per benchmark and bench/out/benchmarks.md with all the tables and the
machine they came from: the figures docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, machine  # noqa: E402

# (module, title, arguments)
BENCHES = [
    ("bench_train", "Training throughput: the workbench against the plain recipe", []),
    ("bench_overhead", "Instrumentation overhead", []),
    ("bench_generate", "Generation and evaluation", []),
    ("bench_weights", "Weight memory against the theoretical minimum", []),
    ("bench_startup", "Start-up", []),
    ("bench_loop", "The exploration loop: Start to the first step, the quickstart and Evaluate", []),
    ("bench_scan", "Results at class scale: 1,000 runs from 30 people", []),
    ("bench_inits", "The inits on the embedded model: their start, and their export on the original base", []),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one trial a side")
    ap.add_argument("--only", help="comma list of benchmark modules, e.g. bench_train,bench_weights")
    a = ap.parse_args(argv)
    chosen = [b for b in BENCHES if not a.only or b[0] in a.only.split(",")]
    m = machine()
    page = [
        f"# Benchmarks, {m['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} on {m['threads']} threads, native "
        f"bfloat16: {m['native_bf16']}, tcmalloc: {m['tcmalloc']}.",
        "",
    ]
    took = json.loads((OUT / "durations.json").read_text()) if (OUT / "durations.json").is_file() else {}
    for module, title, args in chosen:
        t0 = time.perf_counter()
        print(f"\n== {title}", flush=True)
        extra = ["--repeats", "1"] if a.quick and module in ("bench_train", "bench_overhead", "bench_generate") else []
        importlib.import_module(f"bench.{module}").main(args + extra)
        took[module] = round(time.perf_counter() - t0)
    from workbench.core.files import write_json

    write_json(OUT / "durations.json", took)
    # the page holds every benchmark's latest table, so `--only` refreshes one section and keeps the rest
    for module, title, _ in BENCHES:
        table = OUT / f"{module.removeprefix('bench_')}.md"
        if table.is_file():
            page += [f"## {title}", "", table.read_text(encoding="utf-8"), f"({took.get(module, '?')} s)", ""]
    from workbench.core.files import write_text

    write_text(OUT / "benchmarks.md", "\n".join(page))
    print(f"\nwrote {OUT / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
