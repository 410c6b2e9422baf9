"""Verdicts on settings that count both sources of noise, the training runs and the eval examples
(analysis.crossed: crossed, compare_settings, compare_run_scores; verdicts.pooled), checked by simulation against
the old verdict that counted the examples alone; and the scope of a one-run verdict (crossed.with_scope)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from workbench.analysis import crossed, verdicts
from workbench.analysis.crossed import SeedSpread
from workbench.analysis.eval_plan import runs_sentence
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


def _scores(correct, losses, general=None):
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
        a_runs.append(_scores([bool(x) for x in a_right], list(rng.random(n)), gen))
        b_runs.append(_scores([bool(x) for x in b_right], list(rng.random(n)), list(rng.normal(2.1, 0.05, 11))))
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
    a = _scores([True] * 50 + [False] * 10, [0.1] * 60)
    b = _scores([True] * 47 + [False] * 13, [0.2] * 60)
    unknown = verdicts.pair("LoRA", a, "QLoRA", b, None, trained=2).get("accuracy")
    assert "two trained adapters, one run each" in unknown.sentence and "not measured here" in unknown.sentence
    spread = SeedSpread({"accuracy": 0.03, "eval_loss": 0.01}, 36, "36 runs of a sweep")
    inside = verdicts.pair("LoRA", a, "QLoRA", b, spread, trained=2)
    assert "3.0 points (sd; 36 runs of a sweep)" in inside.get("accuracy").sentence
    assert "does not show that the settings differ" in inside.get("accuracy").sentence  # 5 points < 8.3
    wide = verdicts.pair("LoRA", _scores([True] * 58 + [False] * 2, [0.1] * 60), "base", b, spread, trained=1)
    assert "one trained adapter, one run" in wide.get("accuracy").sentence
    assert "well under this gap" in wide.get("accuracy").sentence  # 18 points > 1.96 · 3
    # the base against itself, or a caller that says nothing of training: no clause
    assert "trained" not in verdicts.pair("base", a, "base", b).get("accuracy").sentence
    # within a run: base against LoRA counts one trained model, LoRA against QLoRA two
    found = verdicts.within_run({"base": b, "lora": a, "qlora": b}, ["base", "lora", "qlora"], spread=spread)
    said = [p.get("accuracy").sentence for p in found]
    assert "one trained adapter" in said[0] and "two trained adapters" in said[2]


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


def test_pooled_over_one_run_each_is_a_verdict_on_the_trained_models():
    a = _scores([True] * 50 + [False] * 10, [0.1] * 60)
    b = _scores([True] * 47 + [False] * 13, [0.2] * 60)
    spread = SeedSpread({"accuracy": 0.03}, 36, "36 runs")
    one = verdicts.pooled("r16", [a], "r2", [b], spread=spread, trained=2).get("accuracy")
    assert one.unit == "examples" and "two trained adapters, one run each" in one.sentence
    assert one.within_seeds is True and "does not show that the settings differ" in one.sentence


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
