"""Verdicts on settings that count both sources of noise, the training runs and the eval examples
(analysis.crossed: crossed, compare_settings, compare_run_scores; verdicts.pooled), checked by simulation against
the old verdict that counted the examples alone; and the scope of a one-run verdict (crossed.with_scope)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from workbench.analysis import crossed
from workbench.core import stats

SEED_SD = 0.03  # one run's accuracy moves this much between seeds of one setting (the 2.4-3.6 points)
SLOPE = 0.12  # d(accuracy)/d(logit) near this accuracy: a run's logit offset of SEED_SD / SLOPE moves it ~3 points


def _settings(rng, k: int, n: int, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Two settings' runs × examples tables of right (1) and wrong (0): every example has its own difficulty,
    shared by every run; every run (seed) shifts all of its answers at once, as a run that trained well or
    badly does; setting a is `gap` (in accuracy) better than b."""
    difficulty = rng.normal(2.2, 1.5, n)  # logits: ~85% accuracy over the examples

    def runs(shift: float) -> np.ndarray:
        offset = rng.normal(0, SEED_SD / SLOPE, k)
        p = 1 / (1 + np.exp(-(difficulty[None, :] + offset[:, None] + shift / SLOPE)))
        return (rng.random((k, n)) < p).astype(float)

    return runs(gap), runs(0.0)


def _rates(k: int, n: int, gap: float, trials: int, seed: int = 0) -> tuple[float, float, float]:
    """(share called real by the new verdict, by the old one, mean seed-to-seed sd of a setting's accuracy)."""
    rng = np.random.default_rng(seed)
    new = old = 0
    spreads = []
    for _ in range(trials):
        a, b = _settings(rng, k, n, gap)
        new += crossed.compare_settings("a", "b", a, b).real
        # the old verdict: each example's share right over the seeds, a − b, tested over the examples (a one-sample
        # t-test here: at 600 examples it is the sign-flip test the old code ran, without its 2,000 draws)
        old += ttest_1samp(a.mean(axis=0) - b.mean(axis=0), 0.0).pvalue < stats.ALPHA
        spreads.append(a.mean(axis=1).std(ddof=1))
    return new / trials, old / trials, float(np.mean(spreads))


@pytest.mark.parametrize("runs", [3, 5])
def test_no_true_difference_is_called_real_at_most_one_time_in_twenty(runs):
    new, old, spread = _rates(runs, 600, 0.0, trials=200, seed=runs)
    assert 0.02 <= spread <= 0.04, f"the simulation's seed spread is {spread:.3f}, not the ~3 points measured"
    assert new <= 0.05, f"the new verdict called {new:.0%} of no-difference comparisons real"
    assert old >= 0.25, f"the old verdict, counting examples alone, should be fooled often; it was {old:.0%}"


def test_a_gap_of_twice_the_seed_spread_shows_with_ten_runs():
    new, old, _ = _rates(10, 600, 2 * SEED_SD, trials=60, seed=7)
    assert new >= 0.8, f"a 6-point gap over 10 runs each was found in only {new:.0%} of trials"


def test_the_crossed_standard_error_matches_the_spread_of_the_gap():
    """Unbiased: over many tables of a random-effects design (runs crossed with examples, residual noise), the
    mean of the estimated variance of the gap is the variance the gaps really have."""
    rng = np.random.default_rng(3)
    k, n = 4, 40
    gaps, variances = [], []
    for _ in range(1500):
        d = rng.normal(0, 1.0, (k, 1)) + rng.normal(0, 2.0, (1, n)) + rng.normal(0, 3.0, (k, n))
        c = crossed.crossed(d, np.zeros_like(d))
        gaps.append(c.gap)
        variances.append(c.se**2)
    # var(gap) = 1/k + 4/n + 9/(k·n) = 0.25 + 0.1 + 0.05625
    assert np.var(gaps) == pytest.approx(0.40625, rel=0.1)
    assert np.mean(variances) == pytest.approx(0.40625, rel=0.1)


def test_unpaired_runs_and_a_setting_run_once():
    rng = np.random.default_rng(5)
    a, b = _settings(rng, 4, 300, 0.0)
    c = crossed.crossed(a, b[:3], paired=False)
    assert c.runs == (4, 3) and c.df > 2 and c.se > 0
    # b ran once: its runs are taken to vary as a's do, so the run term is added to the examples' alone
    one = crossed.crossed(a, b[:1], paired=False)
    examples_alone = np.var(a.mean(axis=0) - b[0], ddof=1) / 300
    assert one.run_var > 0 and one.se**2 > examples_alone
    with pytest.raises(ValueError, match="as many runs"):
        crossed.crossed(a, b[:3])
    with pytest.raises(ValueError, match="at least 2 runs"):
        crossed.crossed(a[:1], b[:1])


def test_the_dtype_table_is_could_be_chance():
    """The issue's measured table: LoRA in bfloat16 and float32, 5 seeds each on 600 dates examples."""
    f32 = [0.878, 0.903, 0.898, 0.880, 0.813]
    bf16 = [0.928, 0.878, 0.897, 0.872, 0.872]
    v = crossed.compare_run_scores("LoRA bfloat16", "LoRA float32", bf16, f32, n=600, unit="seed")
    assert v.p_value == pytest.approx(0.42, abs=0.01) and not v.real and v.unit == "runs"
    s = v.sentence
    assert "over 5 seeds each on the same 600 examples" in s and "higher by 1.5 points" in s
    assert "42% of draws" in s and "could be chance" in s and "cannot tell a gap under about" in s
    assert v.runs_needed > 5 and f"about {v.runs_needed:,} seeds each would" in s
    welch = crossed.compare_run_scores("LoRA bfloat16", "LoRA float32", bf16, f32, n=600, paired=False)
    assert welch.p_value == pytest.approx(0.46, abs=0.01)
