"""Runs of one setting pooled (analysis.settings): the mean, the spread across seeds and the interval; settings
grouped by everything but the seed."""

from __future__ import annotations

import json
import math

import pytest

from workbench.analysis.settings import Setting, setting_key, settings
from workbench.core import stats
from workbench.records.results import VariantResult


def _result(acc: float, n: int = 60, peak: int = 100) -> VariantResult:
    r = VariantResult(name="lora", bits=16, rank=8, accuracy=acc, peak_memory_bytes=peak)
    ci = stats.accuracy_interval(round(acc * n), n)
    r.accuracy_low, r.accuracy_high = ci.low, ci.high
    return r


def test_seeds_aggregate_to_a_mean_a_spread_and_an_interval():
    g = Setting("k", [_result(0.80), _result(0.90), _result(0.85)])
    assert g.mean("accuracy") == pytest.approx(0.85) and g.spread("accuracy") == pytest.approx(0.05)
    ci = g.interval("accuracy")
    # wider than the seeds' spread alone (the examples' noise stays), within [0, 1]
    sd_of_mean = 0.05 / math.sqrt(3)
    assert ci.high - ci.low > 2 * 1.96 * sd_of_mean and 0 <= ci.low < 0.85 < ci.high <= 1
    one = Setting("k", [_result(0.85)])
    assert one.interval("accuracy") == one.first.interval("accuracy")
    twins = Setting("k", [_result(0.85), _result(0.85)])  # seeds that agree: the one interval they share
    assert twins.interval("accuracy") == twins.first.interval("accuracy")
    mean = g.mean_result()
    assert mean.accuracy == pytest.approx(0.85) and mean.interval("accuracy") == ci


def test_settings_group_by_everything_but_the_seed():
    cfg = {"lora": {"rank": 8}, "train": {"seed": 0, "steps": 20}}
    rows = [
        (cfg, _result(0.8), "r0", "ann"),
        ({**cfg, "train": {"seed": 1, "steps": 20}}, _result(0.9), "r1", "bob"),
        ({**cfg, "train": {"seed": 0, "steps": 40}}, _result(0.7), "r2", "ann"),
    ]
    groups = settings(rows)
    assert [g.n for g in groups] == [2, 1] and groups[0].seeds == [0, 1] and groups[0].people == ["ann", "bob"]
    assert setting_key(cfg, "lora") != setting_key(cfg, "qlora")


def test_a_presets_marked_eval_size_is_the_same_setting_as_before_the_mark():
    """Runs made before a preset's eval size was marked as the preset's group, match and name a study with runs
    made since: the mark says where a value came from, not what the run did."""
    from workbench.core.config import preset_config, same_settings

    marked = preset_config("cpu-demo").to_dict()
    assert marked["train"]["preset_eval_examples"] == 60
    before = json.loads(json.dumps(marked))
    del before["train"]["preset_eval_examples"]
    assert same_settings(marked) == same_settings(before) == before
    assert setting_key(marked, "lora") == setting_key(before, "lora")
