"""Start-up: a fresh process to a ready app (`Workbench()` returned) on the embedded model.

    .venv/bin/python bench/bench_startup.py           # 3 trials each

First use: an empty WORKBENCH_HOME, so the model's layout is built (transformers' model code, the model on
the meta device) and cached; the embedded model's one-time conversion (GGUF to safetensors) is timed on
its own, since the app does not need it until the first run. Later: the same home, warm.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_env, machine, markdown_table, save  # noqa: E402

APP = (
    "import time; t = time.perf_counter()\nfrom workbench.ui import Workbench\nWorkbench(runs_dir={runs!r})\n"
    "print(time.perf_counter() - t)"
)
CONVERT = (
    "import time; t = time.perf_counter()\nfrom workbench.engine.resolve import resolve_model\n"
    "resolve_model('HuggingFaceTB/SmolLM2-135M-Instruct')\nprint(time.perf_counter() - t)"
)


def timed(code: str, home: Path) -> float:
    """Seconds from the process's start to the end of `code` (the interpreter's own start included)."""
    import time

    env = child_env(True, {"WORKBENCH_HOME": str(home)})
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    float(out.stdout.strip().splitlines()[-1])
    return time.perf_counter() - t0


def main(argv=None) -> int:
    repeats = 3
    first, later, convert = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        runs = str(Path(tmp) / "runs")
        for i in range(repeats):
            home = Path(tmp) / f"home{i}"
            first.append(timed(APP.format(runs=runs), home))
            later.append(timed(APP.format(runs=runs), home))
            convert.append(timed(CONVERT, home))
            shutil.rmtree(home, ignore_errors=True)
    rows = [
        ["first use (empty WORKBENCH_HOME)", f"{statistics.median(first):.2f}"],
        ["later", f"{statistics.median(later):.2f}"],
        ["the embedded model's conversion, once (not needed to appear)", f"{statistics.median(convert):.2f}"],
    ]
    md = markdown_table(["fresh process to a ready app", "seconds (median of 3)"], rows)
    print(md)
    save("startup", {"machine": machine(), "first": first, "later": later, "convert": convert}, md)
    print(json.dumps({"first": first, "later": later, "convert": convert}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
