"""Intervals, paired tests and the pooling of seeds against known values (workbench.core.stats, verdicts, repeats)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workbench.analysis import verdicts
from workbench.analysis.settings import Setting, setting_key, settings
from workbench.core import stats
from workbench.experiments.seeds import check_seeds, seed_values
from workbench.records.results import VariantResult, interval_fields


def test_wilson_interval_of_51_of_60():
    # Wilson's score interval for 51/60 (z = 1.959964): centre (51 + z²/2)/(60 + z²), half-width
    # z·sqrt(51·9/60 + z²/4)/(60 + z²): 0.73885 to 0.91903
    ci = stats.accuracy_interval(51, 60)
    assert ci.low == pytest.approx(0.73885, abs=1e-5) and ci.high == pytest.approx(0.91903, abs=1e-5)
    # it stays inside [0, 1] where the textbook interval would not
    assert stats.accuracy_interval(60, 60).high == 1.0 and stats.accuracy_interval(60, 60).low > 0.93
    assert stats.accuracy_interval(0, 60).low == 0.0
    assert stats.accuracy_interval(0, 0) is None


def test_mcnemar_exact_on_a_fixed_table():
    # the example: 4 examples right for a only, 9 for b only, of 60; exact two-sided binomial on the
    # 13 discordant pairs: 2·P(X ≤ 4 | n=13, p=½) = 2·(1+13+78+286+715)/8192 = 0.26685
    a = [True] * 40 + [True] * 4 + [False] * 9 + [False] * 7
    b = [True] * 40 + [False] * 4 + [True] * 9 + [False] * 7
    v = stats.compare_accuracy("QLoRA", "LoRA", a, b)
    assert (v.a_only, v.b_only, v.n) == (4, 9, 60)
    assert v.p_value == pytest.approx(2 * (1 + 13 + 78 + 286 + 715) / 8192)
    assert v.gap == pytest.approx(-5 / 60) and not v.real
    # Connor's sample size with 13/60 discordant and an 8.3-point gap: ~243 examples
    assert 235 <= v.needed <= 250
    assert "QLoRA got 4 examples right that LoRA missed and missed 9" in v.sentence
    assert "27% of draws" in v.sentence and "could be chance" in v.sentence and "243 eval examples" in v.sentence
    # a lopsided table is a real difference; identical answers have nothing to test
    w = stats.compare_accuracy("a", "b", [True] * 20 + [False] * 40, [False] * 20 + [False] * 40)
    assert w.p_value == pytest.approx(2 / 2**20) and w.real and "a real difference" in w.sentence
    same = stats.compare_accuracy("a", "b", [True, False], [True, False])
    assert same.p_value == 1.0 and "no difference to test" in same.sentence


def test_bootstrap_interval_is_seeded_and_covers_the_weighted_mean():
    rng = np.random.default_rng(3)
    losses, tokens = rng.gamma(2.0, 0.2, 200), rng.integers(1, 12, 200)
    ci = stats.mean_interval(losses, tokens)
    mean = float((losses * tokens).sum() / tokens.sum())
    assert ci.low < mean < ci.high and ci.high - ci.low < 0.2
    assert stats.mean_interval(losses, tokens) == ci  # seeded: read twice, the same interval
    assert stats.mean_interval([0.5], [3]) is None and stats.mean_interval([0.2, 0.2], [1, 1]) == stats.Interval(
        0.2, 0.2
    )


def test_permutation_test_on_losses_sees_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.3, 150)
    shifted = stats.compare_losses("a", "b", a, a + 0.1)
    assert shifted.real and shifted.gap == pytest.approx(-0.1) and "a's eval loss is lower" in shifted.sentence
    noise = stats.compare_losses("a", "b", a, a + rng.normal(0, 0.3, 150))
    assert noise.p_value > 0.05 and "could be chance" in noise.sentence


def test_planning_figures():
    # 60 examples near 80%: only gaps of about 20 points (two proportions, 80% power, alpha 0.05)
    assert 0.19 < stats.resolvable_gap(60) < 0.25
    assert 0.06 < stats.resolvable_gap(600) < 0.075
    assert "60 eval examples near 80%" in stats.eval_size_sentence(60)
    assert stats.resolvable_gap(1) is None


def _scores(correct, losses, keys=None):
    keys = keys or [f"k{i}" for i in range(len(correct))]
    return {"eval": {"keys": keys, "losses": losses, "tokens": [2] * len(keys), "correct": correct}}


def test_variants_scored_on_different_examples_are_never_paired():
    a = _scores([True, True, False], [0.1, 0.2, 0.9])
    b = _scores([True, False, False], [0.2, 0.5, 0.8], keys=["k0", "k1", "other"])
    found = verdicts.pair("run A", a, "run B", b)
    assert found.unpaired and not found.verdicts and "cannot be paired" in found.unpaired
    shorter = verdicts.pair("run A", a, "run B", _scores([True, True], [0.1, 0.2]))
    assert shorter.unpaired and "3 eval examples" in shorter.unpaired
    assert verdicts.pair("old", {}, "new", a).unpaired  # a run from before scores.json


def test_pairing_matches_examples_by_key_not_by_position():
    a = _scores([True, False, True, True], [0.1, 0.9, 0.2, 0.3])
    # the same examples in another order: b is right exactly where a is
    b = {"eval": {k: [v[i] for i in (3, 2, 1, 0)] for k, v in a["eval"].items()}}
    found = verdicts.pair("a", a, "b", b)
    acc = found.get("accuracy")
    assert (acc.a_only, acc.b_only) == (0, 0) and found.get("eval_loss").gap == pytest.approx(0.0)


def test_pooled_seeds_count_examples_once():
    """Three seeds of 30 examples: the tests' unit is the example (30), not the 90 answers."""
    rng = np.random.default_rng(1)
    base = rng.random(30) < 0.5
    a_runs, b_runs = [], []
    for _ in range(3):
        a_runs.append(_scores(list(base | (rng.random(30) < 0.3)), list(rng.random(30))))
        b_runs.append(_scores(list(base), list(rng.random(30) + 0.5)))
    found = verdicts.pooled("a", a_runs, "b", b_runs)
    acc = found.get("accuracy")
    assert acc.n == 30 and acc.gap > 0 and "over 3 seeds" in acc.sentence
    assert found.get("eval_loss").gap < 0 and found.get("eval_loss").n == 30
    # a seed scored on other examples breaks the pairing, with a statement instead of a p-value
    b_runs[1] = _scores(list(base), list(rng.random(30)), keys=[f"x{i}" for i in range(30)])
    assert verdicts.pooled("a", a_runs, "b", b_runs).unpaired


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


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, 101])
def test_bad_seed_counts_are_refused(bad):
    with pytest.raises(ValueError, match="seeds must be a whole number from 1 to 100"):
        check_seeds(bad)


def test_seed_values_follow_the_config_seed():
    from workbench.core.config import RunConfig, TrainSettings

    assert seed_values(RunConfig(train=TrainSettings(seed=7)), 3) == [7, 8, 9]
    with pytest.raises(ValueError, match="passes the largest seed"):
        seed_values(RunConfig(train=TrainSettings(seed=2**32 - 1)), 2)


def test_interval_fields_from_scores():
    scores = {"keys": ["a", "b", "c", "d"], "losses": [0.1, 0.3, 0.2, 0.6], "tokens": [2, 2, 2, 2]}
    fields = interval_fields({**scores, "correct": [True, True, False, True]})
    assert fields["eval_examples"] == 4
    ci = stats.accuracy_interval(3, 4)
    assert (fields["accuracy_low"], fields["accuracy_high"]) == (ci.low, ci.high)
    assert fields["eval_loss_low"] <= 0.3 <= fields["eval_loss_high"]
    assert fields["perplexity_low"] == pytest.approx(math.exp(fields["eval_loss_low"]))
    general = {"keys": ["g0", "g1"], "losses": [2.0, 2.4], "tokens": [64, 64], "base_losses": [1.9, 2.0]}
    both = interval_fields({**scores, "correct": None}, general)
    assert "accuracy_low" not in both and both["forgetting_low"] <= 0.25 <= both["forgetting_high"]


def test_frontier_ties():
    # cost, score: point 2 is off the frontier, which reaches 0.90 at its cost (point 1)
    costs, scores = [1.0, 2.0, 3.0], [0.80, 0.90, 0.78]
    cis = [stats.Interval(0.7, 0.9), stats.Interval(0.85, 0.95), stats.Interval(0.70, 0.91)]
    assert stats.frontier_ties(costs, scores, cis, [0, 1]) == [2]
    cis[2] = stats.Interval(0.70, 0.86)  # reaches point 0's 0.80 but not the 0.90 the frontier has at its cost
    assert stats.frontier_ties(costs, scores, cis, [0, 1]) == []
    # lower is better (a loss): the interval must reach down to the frontier
    assert stats.frontier_ties(costs, [0.5, 0.4, 0.6], [None, None, stats.Interval(0.35, 0.7)], [0, 1], False) == [2]


def test_repeats_of_a_data_file_keep_the_first_seeds_split():
    from workbench.core.config import RunConfig, TrainSettings
    from workbench.experiments.seeds import with_seed

    cfg = RunConfig(task=None, data="mine.jsonl", train=TrainSettings(seed=5))
    again = with_seed(cfg, 6)
    assert again.train.seed == 6 and again.held_out_seed == 5 and with_seed(cfg, 5).split_seed is None
    # the same setting, whichever way its split seed was written; another split is another setting
    assert setting_key(cfg.to_dict(), "lora") == setting_key(again.to_dict(), "lora")
    other = RunConfig(task=None, data="mine.jsonl", train=TrainSettings(seed=6))
    assert setting_key(other.to_dict(), "lora") != setting_key(cfg.to_dict(), "lora")
    # a built-in task's eval split is fixed: the seed alone never separates two settings
    assert setting_key(RunConfig(train=TrainSettings(seed=1)).to_dict(), "lora") == setting_key(
        RunConfig().to_dict(), "lora"
    )


def test_one_example_is_never_an_error():
    """A text task of one held-out block: the tests say nothing can be told, the run goes on."""
    v = stats.compare_losses("a", "b", [0.4], [0.9])
    assert v.p_value == 1.0 and "could be chance" in v.sentence
    assert stats.compare_accuracy("a", "b", [True], [False]).p_value == 1.0
    assert stats.mean_interval([0.4], [3]) is None


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
