"""What an eval size and N runs can tell apart (analysis.eval_plan): the plan's sentences, the seed spread read
from a runs folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.analysis import crossed
from workbench.analysis.crossed import SeedSpread
from workbench.analysis.eval_plan import runs_sentence


def test_the_plan_says_what_runs_and_examples_tell_apart():
    spread = SeedSpread({"accuracy": 0.026}, 36, "36 runs")
    one = runs_sentence(1, 300, 600, spread)
    assert "speaks for two trained adapters, not their settings" in one and "--seeds 3" in one
    three = runs_sentence(3, 600, 600, spread)
    assert "3 runs of each show gaps of about" in three and "9 runs: about" in three
    assert "more runs would help more" in three  # every example is already scored: only runs are left
    assert runs_sentence(3, 60, 600, spread).endswith("more examples would help more")  # 60 examples dominate
    assert runs_sentence(3, 300, 600, None) == ""
    # more runs shrink the gap; past a point more examples cannot (the seeds' part stays)
    assert crossed.settings_gap(10, 600, 0.026) < crossed.settings_gap(3, 600, 0.026)
    assert crossed.settings_gap(3, 10**6, 0.026) > 2 * 0.026 * 1.96 / np.sqrt(3) * 0.9


def test_the_plan_counts_pairing_where_the_task_ships_its_discordance():
    """dates ships how often two runs answer an example differently (9%, docs/data/sweep-dates-seeds.json): the
    examples' part is then the paired one, narrower than two independent samples'."""
    from workbench.analysis.eval_plan import seed_spread

    dates = seed_spread({"task": "dates", "data": None, "train": {"eval_examples": 300}})
    assert dates.runs == 36 and dates.sd["accuracy"] == pytest.approx(0.016) and dates.discordant == 0.09
    paired = crossed.settings_gap(3, 300, 0.016, discordant=dates.discordant)
    assert paired < crossed.settings_gap(3, 300, 0.016)
    assert seed_spread({"task": "sentiment", "data": None, "train": {"eval_examples": 60}}) is None  # not measured


def test_the_seed_spread_is_read_from_the_runs_folder_one_result_per_seed(monkeypatch):
    """Settings trained with several seeds on the same task and eval examples give the spread (pooled over the
    settings); a run made again with the same seed adds nothing; without seeds in the folder, the task's own."""
    from workbench.analysis import eval_plan
    from workbench.records.results import VariantResult
    from workbench.records.scan import ResultRow

    def row(rank: int, seed: int, accuracy: float, eval_examples: int = 300) -> ResultRow:
        config = {"task": "dates", "data": None, "lora": {"rank": rank}, "variants": ["lora"]}
        config["train"] = {"seed": seed, "eval_examples": eval_examples}
        result = VariantResult(name="lora", bits=16, rank=rank, accuracy=accuracy, eval_loss=0.1, status="done")
        return ResultRow(f"r{rank}-s{seed}", "", "dates", "cpu", 20, None, result, config=config)

    rows = [row(2, 0, 0.80), row(2, 1, 0.84), row(2, 1, 0.84), row(16, 0, 0.90), row(16, 1, 0.86)]
    rows += [row(2, 2, 0.10, eval_examples=60)]  # another eval size: another question, left out
    monkeypatch.setattr(eval_plan, "all_results", lambda root: rows)
    config = rows[0].config
    found = eval_plan.seed_spread(config, Path("."))
    # two settings, two seeds each: variances 0.0008 and 0.0008, pooled sd 0.0283
    assert found.runs == 4 and found.sd["accuracy"] == pytest.approx(0.02828, abs=1e-4)
    assert "4 runs of 2 settings in this runs folder" == found.source and found.discordant == 0.09
    monkeypatch.setattr(eval_plan, "all_results", lambda root: rows[1:3])  # one seed, run twice: the task's
    assert eval_plan.seed_spread(config, Path(".")).runs == 36
