"""What compare and train print (cli/output.py): the results table of a run, each seed's and the seeds pooled,
the variants that failed, the verdicts, and where it wrote; the eval plan before a run."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import good_doc

from workbench.cli import output
from workbench.records.results import CompareResult, VariantResult


def result_of(tmp_path: Path, name: str, seed: int, accuracy: float, error: str | None = None):
    """A finished run's CompareResult (helpers.good_doc's cpu-demo run) with its own seed and LoRA accuracy, and
    the folder it would have been written to."""
    doc = good_doc()
    doc["config"]["train"]["seed"] = seed
    doc["variants"][1].update(accuracy=accuracy, error=error)
    fields = {k: doc[k] for k in ("config", "device", "device_type", "model_path", "task", "allocator", "user")}
    return CompareResult(**fields, variants=[VariantResult.from_dict(v) for v in doc["variants"]]), tmp_path / name


def test_one_run_prints_its_table_its_device_and_where_it_wrote(tmp_path, capsys):
    result, folder = result_of(tmp_path, "run", 0, 0.9)
    output.print_results([result], [folder], folder)
    out = capsys.readouterr().out
    table = out.split("\n\n")[0]
    assert "base" in table and "lora" in table and "over" not in out  # one seed: no pooled table
    assert f"device: {result.device}" in out and f"wrote {folder.resolve()}" in out
    assert "(stopped early)" not in out


def test_seeds_print_each_table_then_the_settings_pooled(tmp_path, capsys):
    runs = [result_of(tmp_path, f"seed-{s}", s, acc) for s, acc in ((0, 0.8), (1, 0.9))]
    output.print_results([r for r, _ in runs], [f for _, f in runs], tmp_path)
    out = capsys.readouterr().out
    assert "seed 0 (" in out and "seed 1 (" in out
    assert "over 2 seeds (mean, spread across seeds, 95% interval of the mean):" in out
    pooled = out.split("over 2 seeds", 1)[1]
    # lora over its 2 seeds: accuracy 80% and 90%, so a mean of 85.0 points and a spread (sd) of 7.1
    assert re.search(r"\n\s*lora\s+2\s+85\.0\s+7\.1\s", pooled), pooled


def test_a_failed_variant_and_a_stopped_run_are_said(tmp_path, capsys):
    result, folder = result_of(tmp_path, "run", 0, 0.9, error="out of memory: tried to allocate 9 GiB")
    result.stopped = True
    output.print_results([result], [folder], folder)
    out = capsys.readouterr().out
    assert "lora: " in out and "out of memory: tried to allocate 9 GiB" in out
    assert out.strip().endswith("(stopped early)")


def test_verdicts_need_scores_to_pair_and_print_nothing_without_them(capsys):
    output.print_verdicts([{}], ["base", "lora"])
    assert capsys.readouterr().out == ""
