"""Scoring until settled (workbench.sequential): the group-sequential design's error rates checked by simulation,
on no difference (looked at after every round) and on known differences, against the fixed-size test."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import sequential, stats
from workbench.sequential import Sequential, all_settled, last_alpha, rounds, simulate


def test_the_looks_double_up_to_the_budget():
    assert rounds(600) == [60, 120, 240, 480, 600]
    assert rounds(60) == [60] and rounds(30) == [30] and rounds(100) == [60, 100]
    assert last_alpha(5) == pytest.approx(0.046)


def test_no_difference_is_called_real_at_most_one_time_in_twenty_however_often_it_is_read():
    settled, used = simulate(0.0, 0.15, 600, trials=600, seed=1)
    assert settled <= stats.ALPHA, f"{settled:.1%} of no-difference comparisons were settled as real"
    assert used > 590  # with nothing to find, scoring runs to the budget
    # peeking at a fixed-size p-value after every round, the mistake this design avoids, is fooled more often
    rng = np.random.default_rng(1)
    peeked = 0
    for _ in range(600):
        d = rng.random(600) < 0.15
        a = d & (rng.random(600) < 0.5)
        b = d & ~a
        peeked += any(stats.compare_accuracy("a", "b", a[:m], b[:m]).real for m in rounds(600))
    assert peeked / 600 > settled + 0.02


def test_a_large_gap_settles_after_the_first_round_and_a_small_one_as_often_as_the_fixed_test():
    settled, used = simulate(0.35, 0.4, 600, trials=100, seed=2)  # base against a trained adapter
    assert settled == 1.0 and used <= 70
    settled, used = simulate(0.05, 0.15, 600, trials=300, seed=3)
    rng = np.random.default_rng(3)
    fixed = 0
    for _ in range(300):
        d = rng.random(600) < 0.15
        a = d & (rng.random(600) < 0.5 + 0.05 / 0.3)
        fixed += stats.compare_accuracy("a", "b", a, d & ~a).real
    assert settled >= fixed / 300 - 0.05, (settled, fixed / 300)  # nearly the fixed test's power
    assert used < 600  # and cheaper on average


def test_the_sentence_says_how_many_examples_it_took_and_why_it_stopped():
    s = Sequential("LoRA", "base", budget=600, looks=len(rounds(600)))
    s.update([True] * 50 + [False] * 10, [False] * 50 + [False] * 10)
    assert s.settled and s.settled_at == 60 and all_settled([s])
    assert s.sentence().startswith("settled before the budget, after 60 of 600 examples: LoRA got 50 examples")
    close = Sequential("LoRA", "QLoRA", budget=120, looks=2)
    close.update([True] * 30 + [False] * 30, [True] * 28 + [False] * 32)
    assert not close.settled and "not settled yet after 60 of 120" in close.sentence() and not all_settled([close])
    close.update([True] * 30 + [False] * 30, [True] * 29 + [False] * 31)
    assert close.last and close.bar == pytest.approx(last_alpha(2))
    assert "not settled: all 120 examples of the budget were scored" in close.sentence()
    assert "could be chance" in close.sentence()
    with pytest.raises(ValueError, match="same new examples"):
        close.update([True], [True, False])
    assert sequential.INTERIM < stats.ALPHA / 10
