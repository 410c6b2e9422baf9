"""Intervals and paired tests against known values (core.stats): Wilson, McNemar's exact test, the bootstrap, the
permutation test on losses, the planning figures, ties on the frontier; one example is never an error."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core import stats


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


def test_frontier_ties():
    # cost, score: point 2 is off the frontier, which reaches 0.90 at its cost (point 1)
    costs, scores = [1.0, 2.0, 3.0], [0.80, 0.90, 0.78]
    cis = [stats.Interval(0.7, 0.9), stats.Interval(0.85, 0.95), stats.Interval(0.70, 0.91)]
    assert stats.frontier_ties(costs, scores, cis, [0, 1]) == [2]
    cis[2] = stats.Interval(0.70, 0.86)  # reaches point 0's 0.80 but not the 0.90 the frontier has at its cost
    assert stats.frontier_ties(costs, scores, cis, [0, 1]) == []
    # lower is better (a loss): the interval must reach down to the frontier
    assert stats.frontier_ties(costs, [0.5, 0.4, 0.6], [None, None, stats.Interval(0.35, 0.7)], [0, 1], False) == [2]


def test_one_example_is_never_an_error():
    """A text task of one held-out block: the tests say nothing can be told, the run goes on."""
    v = stats.compare_losses("a", "b", [0.4], [0.9])
    assert v.p_value == 1.0 and "could be chance" in v.sentence
    assert stats.compare_accuracy("a", "b", [True], [False]).p_value == 1.0
    assert stats.mean_interval([0.4], [3]) is None
