"""The exploration loop's waits, as a learner has them: Start to the first training step, the whole quickstart,
and Evaluate in the Compare tab, each in a fresh process on the embedded model.

    .venv/bin/python bench/bench_loop.py               # about 10 minutes on 2 cores
    .venv/bin/python bench/bench_loop.py --steps 20    # the notebook's own step count

Each case is what the app does when its button is pressed (run_compare for Start, Session.scored per variant for
Evaluate), timed from the press: the imports and the app itself are up before it, as in a notebook. Cases:

- before: issue 31's starting point, float32 and all 600 held-out `dates` examples, in a $WORKBENCH_HOME as
  `make setup` leaves it (the embedded model converted, no score kept). The scoring speed-ups of that issue
  are in this row too: only the old defaults are.
- after, first run: the defaults now (dtype auto: bfloat16 where the CPU multiplies it natively; the
  quickstart's eval size), in such a home.
- after, a later run: the same with another rank, in the home the first run left (the base's scores kept).
- Evaluate in the Compare tab: the three variants of the first run's folder on its examples, once right after
  the run (its scores kept) and once from an empty home (scored in rounds until settled, the models loaded);
  before: each variant scored whole on the before run's 600 examples, as Evaluate did then.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_env, machine, markdown_table, run_child, save  # noqa: E402

BEFORE_EVAL = 600  # the whole split: what the quickstart notebook's EVAL_EXAMPLES = 0 asked for


def quickstart_eval() -> int:
    """The quickstart notebook's eval size now (its parameters cell), 0 meaning the whole split."""
    from workbench.core.paths import notebooks_dir

    nb = json.loads((notebooks_dir() / "01_quickstart.ipynb").read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        for line in cell["source"]:
            if line.startswith("EVAL_EXAMPLES ="):
                return int(line.split("=")[1].split("#")[0])
    raise SystemExit("bench_loop: no EVAL_EXAMPLES in notebooks/01_quickstart.ipynb")


def child_run(a) -> dict:
    """One Start: run_compare with the quickstart's variants; seconds to the first training step and to the end."""
    from workbench.core.config import preset_config
    from workbench.core.events import Hooks, MetricEvent
    from workbench.experiments.comparison import run_compare

    cfg = preset_config(
        "quickstart",
        {
            "model": {"dtype": a.dtype},
            "lora": {"rank": a.rank},
            "train": {"steps": a.steps, "eval_examples": a.eval_examples},
            "variants": ["base", "lora", "qlora"],
        },
    )
    first: list[float] = []

    def on_event(e) -> None:
        if isinstance(e, MetricEvent) and not first:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    result = run_compare(cfg, a.out, Hooks(sinks=(on_event,)), fit_check=False)
    total = time.perf_counter() - t0
    acc = {v.name: v.accuracy for v in result.variants}
    return {"first_step_s": first[0] - t0 if first else None, "total_s": total, "accuracy": acc}


def child_evaluate(a) -> dict:
    """One Evaluate of a run's base, LoRA and QLoRA, timed from the press to the last verdict: the Compare tab's
    (the score cache read, rounds that stop once settled), or with --plain as it was before issue 31 (each
    variant scored whole on the run's examples, nothing kept between processes)."""
    from workbench.records.runs import Run

    run = Path(a.out)
    cfg = Run(run).config()
    if a.plain:
        from workbench.data import task_for
        from workbench.engine.session import Session

        t0 = time.perf_counter()
        session = Session.from_run(run)
        task = task_for(cfg)
        examples = task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
        for v in ("base", "lora", "qlora"):
            session.scored(v, examples, seq_len=cfg.train.seq_len, scoring=task.scoring, keep=False)
        return {"total_s": time.perf_counter() - t0, "examples": len(examples)}
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import AppState

    state = AppState(cfg, runs_dir=run.parent)
    state.use_run(run)
    panel = ComparePanel(state)
    t0 = time.perf_counter()
    panel.evaluate()
    panel.wait()
    took = time.perf_counter() - t0
    if "wb-error" in panel.status.value:
        raise SystemExit(f"bench_loop: Evaluate failed: {panel.status.value}")
    reached = {v: len(e["predictions"]) for v, e in panel.evaluation.items()}
    return {"total_s": took, "examples": reached, "status": panel.status.value}


def prepare(home: Path) -> None:
    """A home as `make setup` leaves it: the embedded model converted, no scores kept."""
    code = "from workbench.engine.resolve import resolve_model; resolve_model(); print('{}')"
    run_child(["-c", code], child_env(True, {"WORKBENCH_HOME": str(home)}), timeout=600)


def case(kind: str, home: Path, out: Path, a, **over) -> dict:
    args = [
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--out",
        str(out),
        "--steps",
        str(a.steps),
        "--dtype",
        over.get("dtype", "auto"),
        "--rank",
        str(over.get("rank", 8)),
        "--eval-examples",
        str(over.get("eval_examples", 0)),
        *(["--plain"] if over.get("plain") else []),
    ]
    took = run_child(args, child_env(True, {"WORKBENCH_HOME": str(home)}), timeout=3600)
    print(f"  {kind} {over}: {json.dumps(took)}", flush=True)
    return took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)  # one pass: each case is minutes
    ap.add_argument("--child", choices=("run", "evaluate"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--eval-examples", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child_run(a) if a.child == "run" else child_evaluate(a)), flush=True)
        return 0
    from workbench.engine.models import cpu_dtype

    now = quickstart_eval()
    auto = str(cpu_dtype(16)).replace("torch.", "")
    print(f"The quickstart's loop, {a.steps} steps, base + LoRA + QLoRA on dates ({auto} now, eval {now or 'all'})")
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        tmp = Path(tmp)
        for home in ("home-before", "home-after", "home-empty", "home-empty-before"):
            prepare(tmp / home)
        before = case("run", tmp / "home-before", tmp / "before", a, dtype="float32", eval_examples=BEFORE_EVAL)
        first = case("run", tmp / "home-after", tmp / "after", a, eval_examples=now)
        later = case("run", tmp / "home-after", tmp / "after-r16", a, eval_examples=now, rank=16)
        ev_kept = case("evaluate", tmp / "home-after", tmp / "after", a)
        ev_cold = case("evaluate", tmp / "home-empty", tmp / "after", a)
        ev_before = case("evaluate", tmp / "home-empty-before", tmp / "before", a, plain=True)
    rows = [
        ["Start to the first training step", before["first_step_s"], first["first_step_s"], later["first_step_s"]],
        ["the whole quickstart", before["total_s"], first["total_s"], later["total_s"]],
        ["Evaluate in the Compare tab", ev_before["total_s"], ev_cold["total_s"], ev_kept["total_s"]],
    ]
    head = [
        "seconds",
        f"before (float32, {BEFORE_EVAL} examples, nothing kept)",
        f"after ({auto}, {now or 'all'} examples): first run / Evaluate with nothing kept",
        "after: a later run (the base's scores kept) / Evaluate right after the run",
    ]
    md = markdown_table(head, [[r[0], *(f"{x:.1f}" if x is not None else "" for x in r[1:])] for r in rows])
    print("\n" + md)
    save(
        "loop",
        {
            "machine": machine(),
            "steps": a.steps,
            "eval_examples": now,
            "dtype": auto,
            "before": before,
            "first": first,
            "later": later,
            "evaluate_kept": ev_kept,
            "evaluate_cold": ev_cold,
            "evaluate_before": ev_before,
        },
        md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
