"""Reliability, end to end: out of memory ends one variant and frees its model, another error still ends the
run keeping what finished, writers in several processes never share a folder, damaged and older run folders are
listed beside the good ones and break nothing, a sweep point that will not fit fails alone, and an interrupt or an
exception in a step keeps a continuable adapter and the metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref

import pytest
import torch
from helpers import tiny_config

from workbench.core.events import Hooks
from workbench.experiments import comparison, phases, run_setup
from workbench.machine import memory
from workbench.records import runs, scan
from workbench.ui import Workbench

MiB = 1024**2


# ---------------------------------------------------------------------------- out of memory during a run
def test_out_of_memory_ends_that_variant_only_and_frees_its_model(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    real = phases.train_variant
    held: list[weakref.ref] = []

    def train_then_run_out(s, model, name, *a, **k):
        if name != "lora":
            return real(s, model, name, *a, **k)
        held.append(weakref.ref(model))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(phases, "train_variant", train_then_run_out)
    said = []
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora,qlora", steps=2)
    result = comparison.run_compare(cfg, tmp_path / "run", Hooks(on_status=said.append))
    by_name = {v.name: v for v in result.variants}
    assert list(by_name) == ["base", "lora", "qlora"]
    assert by_name["lora"].status == "out of memory" and "smaller batch" in by_name["lora"].error
    assert by_name["qlora"].status == "done" and by_name["qlora"].accuracy is not None  # the next precision ran
    assert by_name["base"].status == "done"
    assert any("ran out of" in s for s in said)
    assert held and held[0]() is None  # the model that ran out was freed before qlora loaded
    saved = runs.Run(tmp_path / "run")
    rows = {v.name: v for v in saved.results()}
    assert rows["lora"].status == "out of memory" and rows["lora"].error == by_name["lora"].error
    assert not saved.has_adapter("lora") and saved.has_adapter("qlora")


def test_another_error_still_ends_the_run_and_keeps_what_finished(tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch):
    def broken(s, model, name, *a, **k):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(phases, "train_variant", broken)
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora", steps=1)
    with pytest.raises(RuntimeError, match="a bug"):
        comparison.run_compare(cfg, tmp_path / "run")
    kept = [(v.name, v.status) for v in runs.Run(tmp_path / "run").results()]
    assert kept == [("base", "done"), ("lora", "failed")]  # base finished: kept; lora marked


# ---------------------------------------------------------------------------- many writers
WRITER = """
import json, sys, time
from pathlib import Path
from workbench.records import runs
from workbench.core.files import write_json
root, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
for i in range(8):
    path = runs.claim_run_dir(root, "20261201-120000-lora-r8-all-linear")
    write_json(path / "owner.json", {"writer": sys.argv[3], "i": i})
    print(path.name)
"""


def test_writers_in_several_processes_never_share_a_run_folder(tmp_path):
    import time

    root = tmp_path / "class-runs"
    start = time.time() + 3  # all four start claiming at the same moment, once python and workbench are imported
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(start), str(n)], stdout=subprocess.PIPE, text=True
        )
        for n in range(4)
    ]
    names = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        names += out.split()
    assert len(names) == 32 and len(set(names)) == 32
    folders = sorted(p for p in root.iterdir())
    assert len(folders) == 32
    owners = {(d["writer"], d["i"]) for d in (json.loads((f / "owner.json").read_text()) for f in folders)}
    assert len(owners) == 32  # each folder holds exactly one writer's file


# ---------------------------------------------------------------------------- damaged and older runs
@pytest.fixture(scope="module")
def good_run(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    comparison.run_compare(tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora", steps=2), root / "good")
    return root


def _damage(root):
    """Beside the good run: one folder broken in each way a run folder can be broken."""
    good = json.loads((root / "good" / "results.json").read_text())
    cases = {
        "cut-short": (root / "good" / "results.json").read_text()[:200],
        "binary": b"\x00\xff\xfe\x89PNG garbage",
        "a-list": "[1, 2, 3]",
        "no-variants": json.dumps({"config": good["config"]}),
        "older-settings": json.dumps({**good, "config": {**good["config"], "lora": {"rnk": 8}}}),
        "bad-variant-rows": json.dumps({**good, "variants": [5, "x"]}),
    }
    for name, content in cases.items():
        (root / name).mkdir(exist_ok=True)
        path = root / name / "results.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "killed").mkdir(exist_ok=True)
    (root / "killed" / "metrics.csv").write_text("step,variant,loss\n1,lora,2.3\n2,lo")
    (root / "not-a-run").mkdir(exist_ok=True)  # an unrelated folder: not listed at all
    (root / "stray.txt").write_text("notes")
    return set(cases) | {"killed"}


def test_damaged_and_unfinished_runs_are_listed_with_a_reason_and_break_nothing(good_run):
    broken = _damage(good_run)
    rows, bad = scan.scan(good_run)
    assert {r.run for r in rows} == {"good"} and len(rows) == 2
    assert {u.run for u in bad} == broken
    reasons = {u.run: u.reason for u in bad}
    assert "damaged" in reasons["cut-short"] and "line" in reasons["cut-short"]
    assert "not text" in reasons["binary"] or "damaged" in reasons["binary"]
    assert "older" in reasons["a-list"] and "older" in reasons["no-variants"]
    assert "another version" in reasons["older-settings"] and "rnk" in reasons["older-settings"]
    assert "another version" in reasons["bad-variant-rows"]
    assert "incomplete" in reasons["killed"]
    assert len(scan.all_results(good_run)) == 2


def test_the_results_panel_lists_unreadable_runs_beside_the_good_ones(good_run, tiny_model_dir, tiny_jsonl):
    broken = _damage(good_run)
    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=good_run)
    panel = wb.results
    assert {r.run for r in panel.rows} == {"good"}
    assert f"{len(broken)} run folders not shown" in panel.info.value
    for name in broken:
        assert f"<code>{name}</code>" in panel.info.value
    assert panel.chart.value  # the chart of the good run is drawn all the same


def test_after_a_restart_results_finds_earlier_runs_and_loads_their_adapters(good_run, tiny_model_dir, tiny_jsonl):
    """A new kernel: a new Workbench on the same runs folder lists the run, and its adapter answers."""
    from peft import PeftModel

    from workbench.engine.session import Session

    wb = Workbench(tiny_config(tiny_model_dir, tiny_jsonl), runs_dir=good_run)
    assert "good" in {r.run for r in wb.results.rows}
    session = Session.from_run(good_run / "good")
    model, adapter_off = session.model_for("lora")
    assert isinstance(model, PeftModel) and not adapter_off
    saved = runs.Run(good_run / "good")
    from peft import load_peft_weights

    weights = load_peft_weights(str(saved.adapter_dir("lora")))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    some = next(k for k in weights if "lora_B" in k)
    match = [k for k in loaded if k.replace(".default", "") == some]
    assert match and torch.equal(loaded[match[0]], weights[some])
    session.release()


def test_a_sweep_point_that_will_not_fit_is_planned_as_such_and_fails_alone(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    from workbench.experiments.study.workers import run_sweep
    from workbench.experiments.sweep import SweepGrid, plan

    base = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=1)
    grid = SweepGrid(ranks=[2, 4], targets=["all-linear"], bits=[16])
    small = plan(grid, base, tmp_path / "sweep")
    assert [p.fit for p in small.points] == ["fits", "fits"]
    # 1 MiB free: above every estimate, so every point is refused before it loads
    need = {p.point.rank: p.estimated_peak_bytes for p in small.points}
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1 * MiB)
    sweep = plan(grid, base, tmp_path / "sweep")
    assert all(p.fit == memory.WONT_FIT for p in sweep.points) and need[2] > MiB
    done = run_sweep(sweep)
    assert [p.status for p in done] == ["failed", "failed"]  # each point reported; the sweep went on
    assert all("will not fit" in p.error for p in done)


# ---------------------------------------------------------------------------- interruptions
def _raise_on_call(monkeypatch, n: int, exc: BaseException):
    """workbench.engine.train's loss raises `exc` on its n-th call (a training step's forward)."""
    import workbench.engine.train as train_module

    real, calls = train_module.scored_loss, [0]

    def loss(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(train_module, "scored_loss", loss)


def test_a_kernel_interrupt_in_a_step_stops_the_run_and_keeps_a_continuable_adapter(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    _raise_on_call(monkeypatch, 3, KeyboardInterrupt())
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora,qlora", steps=4)
    result = comparison.run_compare(cfg, tmp_path / "run")  # the interrupt is handled as a Stop: no exception
    assert result.stopped and [v.name for v in result.variants] == ["base", "lora"]  # qlora never started
    lora = result.variants[1]
    assert lora.status == "stopped" and lora.steps_done == 2
    run = runs.Run(tmp_path / "run")
    assert run.status == "stopped" and run.training_state("lora").step == 2
    assert [e.step for e in run.metrics() if e.variant == "lora"] == [1, 2]
    monkeypatch.undo()
    from workbench.engine.session import Session

    session = Session.from_run(run.path)  # the stopped adapter can be evaluated, as the Compare tab does
    scored = session.evaluate("lora", run_setup.setup(cfg).eval_set, seq_len=32)
    assert scored.accuracy is not None and len(scored.predictions) > 0
    session.release()
    again = comparison.continue_run(run.path, 4)  # and it goes on from there
    assert {v.name: v.steps_done for v in again.variants}["lora"] == 4


def test_an_exception_in_a_step_is_marked_on_its_variant_and_the_metrics_are_kept(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch
):
    _raise_on_call(monkeypatch, 2, RuntimeError("something broke inside the step"))
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="base,lora", steps=3)
    with pytest.raises(RuntimeError, match="broke"):
        comparison.run_compare(cfg, tmp_path / "run")
    run = runs.Run(tmp_path / "run")
    rows = {v.name: v for v in run.results()}
    assert rows["base"].status == "done"
    assert rows["lora"].status == "failed" and "RuntimeError: something broke" in rows["lora"].error
    assert [e.step for e in run.metrics() if e.variant == "lora"] == [1]
    listed, bad = scan.scan(tmp_path)
    assert not bad and {r.status_text for r in listed} == {"done", "failed"}
