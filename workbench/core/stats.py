"""How sure a score is, and whether a difference between two is real.

Every score the workbench shows comes with a 95% interval: Wilson's for an accuracy (from the number of
eval examples), a bootstrap over the eval examples for a loss, a perplexity or forgetting. Two variants
scored on the same examples are compared pairwise: McNemar's exact test on the examples one got right
and the other wrong, a sign-flip permutation test on the per-example losses. Each comparison ends in one
plain sentence with its numbers. scipy.stats and statsmodels do the statistics; what is written here is
only which test fits which score, and the words.

Imports nothing of workbench: the results, the runs and the panels all read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95  # every interval's confidence
ALPHA = 0.05  # a difference "shows" below this p-value
POWER = 0.80  # the chance a real gap of the stated size shows, for "how many examples would settle it"
RESAMPLES = 2000  # bootstrap and permutation draws: the p-values' own noise is below 0.01 at 2000
SEED = 0  # every resampling is seeded: the same run gives the same interval every time it is read


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __iter__(self):
        return iter((self.low, self.high))

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def map(self, f) -> Interval:
        """The interval of f(score) for an increasing f (perplexity = exp(loss))."""
        return Interval(f(self.low), f(self.high))


def accuracy_interval(correct: int, n: int) -> Interval | None:
    """Wilson's 95% interval for `correct` right out of `n`: unlike the textbook p ± 1.96·SE it stays inside
    [0, 1] and keeps its coverage near 0% and 100%, where fine-tuned accuracies live. None for n = 0."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=LEVEL, method="wilson")
    return Interval(float(ci.low), float(ci.high))


def _weights(values: Sequence[float], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    return x, w


def mean_interval(values: Sequence[float], weights: Sequence[float] | None = None, seed: int = SEED) -> Interval | None:
    """A bootstrap 95% interval of the weighted mean of per-example values (a loss per example, weighted
    by its answer tokens, so the mean is the token-weighted eval loss the run reports): the examples are
    resampled, each with its weight. None with fewer than 2 examples, or when every value is the same."""
    x, w = _weights(values, weights)
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:
        return Interval(float(x[0]), float(x[0]))
    from scipy.stats import bootstrap

    def statistic(v, u, axis=-1):
        return (v * u).sum(axis=axis) / u.sum(axis=axis)

    res = bootstrap(
        (x, w),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high))


def difference_interval(
    a: Sequence[float], b: Sequence[float], weights: Sequence[float] | None = None, seed: int = SEED
) -> Interval | None:
    """A paired bootstrap 95% interval of the weighted mean of a − b (forgetting: an adapter's loss on each
    block of general text minus its base's on the same block)."""
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return mean_interval(x, weights, seed)


# --------------------------------------------------------------------------- paired comparisons


def words(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def chance_words(p: float) -> str:
    """A p-value as people read it: the share of draws in which chance alone makes such a gap."""
    if p < 0.001:
        return "fewer than 0.1%"
    if p < 0.01:
        return f"{100 * p:.1f}%"
    return f"{100 * p:.0f}%"


def pairs_needed(discordant: float, gap: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Eval examples a paired comparison needs to see an accuracy gap `gap` (a share, 0.083 for 8.3 points)
    when a share `discordant` of examples is right for one variant only, with the given power in a two-sided
    test at alpha (Connor 1987, the sample size of McNemar's test). Written out because neither scipy nor
    statsmodels gives McNemar's sample size. None when there is no gap to see."""
    from scipy.stats import norm

    gap = abs(gap)
    if gap <= 0 or discordant <= 0:
        return None
    discordant = max(discordant, gap)  # the gap is made of discordant pairs: there are at least that many
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = (za * math.sqrt(discordant) + zb * math.sqrt(max(discordant - gap * gap, 0.0))) ** 2 / (gap * gap)
    return math.ceil(n)


def resolvable_gap(n: int, accuracy: float = 0.8, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest accuracy gap (a share) that two settings each scored on `n` examples show reliably (with
    the given power, two-sided at alpha) near `accuracy`, before any run: the planning figure. Counted as two
    independent samples (statsmodels' power of two proportions, Cohen's h); pairing on the same examples
    usually does better, so it errs on the careful side."""
    if n < 2:
        return None
    from statsmodels.stats.power import NormalIndPower

    accuracy = min(max(accuracy, 0.01), 0.99)
    h = NormalIndPower().solve_power(nobs1=n, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    # back from Cohen's h = 2·asin(√p1) − 2·asin(√p2) to the other accuracy, on whichever side stays in [0, 1]
    phi = 2 * math.asin(math.sqrt(accuracy))
    lower = phi - h
    other = math.sin(lower / 2) ** 2 if lower >= 0 else math.sin((phi + h) / 2) ** 2
    return abs(accuracy - other)


def eval_size_sentence(n: int, accuracy: float = 0.8) -> str:
    """What a plan says of its eval size: "with 60 examples near 80%, only gaps of about 20 points show
    reliably (80% power, α = 0.05)"."""
    gap = resolvable_gap(n, accuracy)
    if gap is None:
        return f"with {words(n, 'eval example')} no gap between two settings can show"
    return (
        f"with {words(n, 'eval example')} near {100 * accuracy:.0f}%, only accuracy gaps of about "
        f"{100 * gap:.0f} points show reliably between two settings ({100 * POWER:.0f}% power, α = {ALPHA})"
    )


@dataclass(frozen=True)
class Verdict:
    """One paired comparison: which score, the gap (a − b), how often chance alone makes it, the sentence."""

    score: str  # accuracy, eval_loss or forgetting
    a: str
    b: str
    gap: float
    p_value: float
    sentence: str
    a_only: int = 0  # accuracy: examples a got right and b missed
    b_only: int = 0
    n: int = 0
    needed: int | None = None  # eval examples that would tell a gap this size apart (accuracy)
    # what the verdict speaks for: "examples" (these trained models on these examples) or "runs" (the settings,
    # their runs' spread counted); runs: how many runs of each; run_sd: one run's spread within a setting
    unit: str = "examples"
    runs: tuple[int, int] = (1, 1)
    run_sd: float | None = None
    runs_needed: int | None = None  # runs of each setting that would tell a gap this size apart
    # a one-run verdict: is the gap within what two runs of one setting differ by (None: the spread is not known)
    within_seeds: bool | None = None

    @property
    def real(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def compare_accuracy(a: str, b: str, a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Verdict:
    """McNemar's exact test on the examples exactly one of a and b got right (the others say nothing about
    which is better): is a's accuracy different from b's on these examples?"""
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("a paired comparison needs both variants scored on the same examples")
    a_only, b_only = int((x & ~y).sum()), int((~x & y).sum())
    n = x.size
    table = [[int((x & y).sum()), a_only], [b_only, int((~x & ~y).sum())]]
    p = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    gap = (a_only - b_only) / n
    needed = pairs_needed((a_only + b_only) / n, gap)
    head = (
        f"{a} got {words(a_only, 'example')} right that {b} missed and missed {b_only} that {b} got right: "
        f"{_gap_words(100 * gap, 'point', a, b)}"
    )
    same = f"{a} and {b} got exactly the same {words(n, 'example')} right: no difference to test."
    sentence = _accuracy_sentence(head, same, a_only + b_only, p, n, needed)
    return Verdict("accuracy", a, b, gap, p, sentence, a_only, b_only, n, needed)


def _accuracy_sentence(head: str, same: str, discordant: int, p: float, n: int, needed: int | None) -> str:
    """An accuracy verdict's sentence: what differed (`head`), then whether chance alone would make it and, if it
    could, how many examples would tell; `same` where nothing differed."""
    if discordant == 0:
        return same
    if p < ALPHA:
        return f"{head} that chance alone makes in {chance_words(p)} of draws: a real difference on these {n} examples."
    more = (
        f"; about {needed:,} eval examples would tell a gap this size apart ({100 * POWER:.0f}% power)."
        if needed and needed > n
        else "."
    )
    return f"{head} that chance alone makes in {chance_words(p)} of draws, so it could be chance{more}"


def _gap_words(gap: float, unit: str, a: str, b: str) -> str:
    if gap == 0:
        return f"no gap between {a} and {b}"
    return f"a {abs(gap):.1f}-{unit} gap in {a if gap > 0 else b}'s favour"


def compare_losses(
    a: str,
    b: str,
    a_losses: Sequence[float],
    b_losses: Sequence[float],
    weights: Sequence[float] | None = None,
    score: str = "eval_loss",
    seed: int = SEED,
) -> Verdict:
    """A sign-flip permutation test on per-example losses (lower is better): under "no difference" each
    example's a − b is as likely to have either sign; how often do random signs make a mean gap this large?"""

    x, y = np.asarray(a_losses, dtype=float), np.asarray(b_losses, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("a paired comparison needs both variants scored on the same examples")
    _, w = _weights(x, weights)
    d = x - y
    gap = float((d * w).sum() / w.sum())
    p = _sign_flip_p(d, w, seed)
    what = {"eval_loss": "eval loss", "forgetting": "forgetting (general-text loss)"}.get(score, score)
    lower = a if gap < 0 else b
    if gap == 0:
        sentence = f"{a} and {b} have the same {what} on these {words(x.size, 'example')}."
    else:
        sentence = (
            f"{lower}'s {what} is lower by {abs(gap):.4f} nats per token over {words(x.size, 'example')}, a gap "
            f"chance alone makes in {chance_words(p)} of draws"
            + (": a real difference." if p < ALPHA else ", so it could be chance.")
        )
    return Verdict(score, a, b, gap, p, sentence, n=int(x.size))


# --------------------------------------------------------------------------- repeats


def repeats_interval(values: Sequence[float], intervals: Sequence[Interval | None]) -> Interval | None:
    """The 95% interval of the mean of several repeats of one setting (seeds), each scored on the same eval
    examples with its own interval. Two noises add up: which seed (the repeats' spread, shrinking with more
    seeds) and which eval examples (shared by every seed, so more seeds do not shrink it: the repeats' own
    standard errors, averaged, on each side, so Wilson's asymmetry near 0% and 100% is kept). No library
    combines the two, so their variances are added here. One repeat, or repeats that agree: their interval."""
    if not values:
        return None
    known = [(v, ci) for v, ci in zip(values, intervals) if ci is not None]
    if len(values) == 1 or (np.ptp(values) == 0 and len(set(intervals)) == 1):
        return intervals[0]
    from scipy.stats import norm

    z = norm.ppf(0.5 + LEVEL / 2)
    mean = float(np.mean(values))
    between = float(np.var(values, ddof=1)) / len(values)
    below = float(np.mean([((v - ci.low) / z) ** 2 for v, ci in known])) if known else 0.0
    above = float(np.mean([((ci.high - v) / z) ** 2 for v, ci in known])) if known else 0.0
    return Interval(mean - z * math.sqrt(between + below), mean + z * math.sqrt(between + above))


def _sign_flip_p(d: np.ndarray, weights: np.ndarray | None = None, seed: int = SEED) -> float:
    """Two-sided p-value of a (weighted) mean difference under random signs (scipy's permutation test)."""
    from scipy.stats import permutation_test

    w = np.ones_like(d) if weights is None else weights
    if np.all(d == 0) or d.size < 2:  # one example: either sign is as extreme as the other, p = 1 exactly
        return 1.0

    def statistic(u, v, axis=-1):
        return ((u - v) * w).sum(axis=axis) / w.sum()

    return float(
        permutation_test(
            (d, np.zeros_like(d)),
            statistic,
            permutation_type="samples",
            vectorized=True,
            n_resamples=RESAMPLES,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        ).pvalue
    )


def frontier_ties(
    costs: Sequence[float],
    scores: Sequence[float],
    intervals: Sequence[Interval | None],
    front: Sequence[int],
    higher_is_better: bool = True,
) -> list[int]:
    """The points off the frontier whose interval reaches it: their score cannot be told from that of the
    frontier point that costs no more than they do, so the frontier does not beat them on the evidence."""
    ties = []
    for i in range(len(costs)):
        if i in front or intervals[i] is None:
            continue
        cheaper = [scores[j] for j in front if costs[j] <= costs[i]]
        if not cheaper:
            continue
        best = max(cheaper) if higher_is_better else min(cheaper)
        reach = intervals[i].high if higher_is_better else intervals[i].low
        if (reach >= best) if higher_is_better else (reach <= best):
            ties.append(i)
    return ties
