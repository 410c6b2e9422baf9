"""Paired verdicts (analysis.verdicts): variants and runs scored on the same examples are paired by key, never
by position, pooled seeds count each example once, and a one-run verdict says it is about two trained models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from workbench.analysis import verdicts
from workbench.analysis.crossed import SeedSpread
from workbench.core import stats


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


def _scores_with_general(correct, losses, general=None):
    keys = [f"k{i}" for i in range(len(correct))]
    out = {"eval": {"keys": keys, "losses": losses, "tokens": [3] * len(keys), "correct": correct}}
    if general is not None:
        g_keys = [f"g{i}" for i in range(len(general))]
        out["general"] = {"keys": g_keys, "losses": general, "tokens": [63] * len(g_keys), "base_losses": [2.0] * 11}
    return out


def test_pooled_seeds_are_a_verdict_on_the_settings():
    """One seed that trained badly shifts every example: the old test over examples read it as evidence; the
    verdict over runs sees that the seeds disagree."""
    rng = np.random.default_rng(2)
    n = 200
    hard = rng.random(n) < 0.15
    a_runs, b_runs = [], []
    for seed in range(3):
        bad = seed == 2
        a_right = ~hard & (rng.random(n) > (0.02 if not bad else 0.2))
        b_right = ~hard & (rng.random(n) > 0.05)
        gen = list(rng.normal(2.1, 0.05, 11))
        a_runs.append(_scores_with_general([bool(x) for x in a_right], list(rng.random(n)), gen))
        b_runs.append(
            _scores_with_general([bool(x) for x in b_right], list(rng.random(n)), list(rng.normal(2.1, 0.05, 11)))
        )
    found = verdicts.pooled("a", a_runs, "b", b_runs)
    assert [v.score for v in found.verdicts] == ["accuracy", "eval_loss", "forgetting"]
    acc = found.get("accuracy")
    assert acc.unit == "runs" and acc.runs == (3, 3) and acc.n == n and not acc.real
    assert "over 3 seeds each on the same 200 examples" in acc.sentence
    old = ttest_1samp(
        np.mean([r["eval"]["correct"] for r in a_runs], axis=0)
        - np.mean([r["eval"]["correct"] for r in b_runs], axis=0),
        0.0,
    )
    assert old.pvalue < stats.ALPHA, "the example-level test would have called this real"


def test_a_one_run_verdict_says_it_is_about_two_trained_models():
    a = _scores_with_general([True] * 50 + [False] * 10, [0.1] * 60)
    b = _scores_with_general([True] * 47 + [False] * 13, [0.2] * 60)
    unknown = verdicts.pair("LoRA", a, "QLoRA", b, None, trained=2).get("accuracy")
    assert "two trained adapters, one run each" in unknown.sentence and "not measured here" in unknown.sentence
    spread = SeedSpread({"accuracy": 0.03, "eval_loss": 0.01}, 36, "36 runs of a sweep")
    inside = verdicts.pair("LoRA", a, "QLoRA", b, spread, trained=2)
    assert "3.0 points (sd; 36 runs of a sweep)" in inside.get("accuracy").sentence
    assert "does not show that the settings differ" in inside.get("accuracy").sentence  # 5 points < 8.3
    wide = verdicts.pair(
        "LoRA", _scores_with_general([True] * 58 + [False] * 2, [0.1] * 60), "base", b, spread, trained=1
    )
    assert "one trained adapter, one run" in wide.get("accuracy").sentence
    assert "well under this gap" in wide.get("accuracy").sentence  # 18 points > 1.96 · 3
    # the base against itself, or a caller that says nothing of training: no clause
    assert "trained" not in verdicts.pair("base", a, "base", b).get("accuracy").sentence
    # within a run: base against LoRA counts one trained model, LoRA against QLoRA two
    found = verdicts.within_run({"base": b, "lora": a, "qlora": b}, ["base", "lora", "qlora"], spread=spread)
    said = [p.get("accuracy").sentence for p in found]
    assert "one trained adapter" in said[0] and "two trained adapters" in said[2]


def test_pooled_over_one_run_each_is_a_verdict_on_the_trained_models():
    a = _scores_with_general([True] * 50 + [False] * 10, [0.1] * 60)
    b = _scores_with_general([True] * 47 + [False] * 13, [0.2] * 60)
    spread = SeedSpread({"accuracy": 0.03}, 36, "36 runs")
    one = verdicts.pooled("r16", [a], "r2", [b], spread=spread, trained=2).get("accuracy")
    assert one.unit == "examples" and "two trained adapters, one run each" in one.sentence
    assert one.within_seeds is True and "does not show that the settings differ" in one.sentence
