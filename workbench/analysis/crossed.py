"""Verdicts on settings, not only on trained models: a setting's score moves with the seed that trained it as well
as with the eval examples drawn, so a comparison of two settings counts both (runs crossed with examples), a
verdict on two models trained once each says that it is about them, and a plan says what N runs × M examples can
tell apart. docs/statistics.md explains the two sources of noise with a measured example.

stats.py holds the intervals and the paired tests on examples; this module builds on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from workbench.core.stats import ALPHA, POWER, Verdict, chance_words


def settings_gap(
    runs: int,
    n: int,
    run_sd: float,
    accuracy: float = 0.8,
    discordant: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
):
    """The smallest accuracy gap (a share) between two settings that `runs` runs of each, every run scored on the
    same `n` examples, show reliably when one run's accuracy moves by `run_sd` between seeds: the runs' part,
    2·sd²/runs, plus the examples' part, which more runs do not shrink: discordant/n where the share of examples
    two runs answer differently is known (paired on the same examples), else 2·p(1 − p)/n as for two independent
    samples (careful: pairing does better). Student's t with 2(runs − 1) df; one run each, the spread taken as
    known (normal)."""
    from scipy.stats import norm, t

    if runs < 1 or n < 1:
        return None
    p = min(max(accuracy, 0.01), 0.99)
    examples = discordant if discordant is not None else 2 * p * (1 - p)
    se = math.sqrt(2 * run_sd**2 / runs + examples / n)
    dist = t(2 * (runs - 1)) if runs > 1 else norm
    return (dist.ppf(1 - alpha / 2) + dist.ppf(power)) * se


# --------------------------------------------------------------------------- the scope of a one-run verdict


@dataclass(frozen=True)
class SeedSpread:
    """How far one run's score moves between seeds of one setting on a task's eval examples: the standard
    deviation of each score (accuracy as a share), over how many runs, and where it was measured."""

    sd: dict[str, float]
    runs: int
    source: str
    discordant: float | None = None  # the share of examples two runs answer differently (right in one only)


def with_scope(v: Verdict, spread: SeedSpread | None, trained: int) -> Verdict:
    """A verdict on two models that were trained once each (`trained`: how many of the two were trained, 1 for
    base against an adapter), said as what it is: about these models on these examples. Beside it, how far the
    task's score moves between seeds where that is known, so a gap inside that spread is never read as the
    settings' (two runs of one setting differ by up to 1.96·sd·√2 in 95 of 100 pairs)."""
    if trained < 1 or v.unit != "examples":
        return v
    models = "two trained adapters, one run each" if trained == 2 else "one trained adapter, one run"
    sd = spread.sd.get(v.score) if spread else None
    within = None
    if sd is None:
        note = (
            f"This is about {models}: how far this task's {v.score.replace('_', ' ')} moves between seeds is not "
            "measured here, so it does not speak for the settings (train 3 seeds to know)."
        )
    else:
        points = v.score == "accuracy"
        scale, fmt, what = (100, ".1f", "points") if points else (1, ".4f", "nats")
        reach = 1.96 * sd * math.sqrt(trained)
        score = v.score.replace("_", " ")
        said = f"seed to seed this task's {score} moves by {sd * scale:{fmt}} {what} (sd; {spread.source})"
        within = abs(v.gap) <= reach
        if within:
            note = (
                f"This is about {models}: {said}, and runs of one setting differ by up to {reach * scale:{fmt}} "
                f"{what}, so this gap does not show that the settings differ (train 3 seeds each to tell)."
            )
        else:
            note = f"This is about {models}; {said}, well under this gap."
    return replace(v, sentence=f"{v.sentence} {note}", within_seeds=within)


# --------------------------------------------------------------------------- settings: runs and examples crossed


@dataclass(frozen=True)
class Crossed:
    """The mean difference a − b between two settings, each trained in several runs (seeds, or a class's runs
    of one setting) and every run scored on the same examples, with its standard error from both sources of
    noise: which runs were trained and which examples were drawn (a random-effects model with runs and examples
    crossed). `run_sd`: how far one run's mean score moves from another run's of the same setting."""

    gap: float
    se: float
    df: float
    runs: tuple[int, int]
    n: int
    run_sd: float | None  # the standard deviation of one run's score between runs of one setting
    run_var: float  # the runs' share of a single run-pair's variance (σ²_runs), and the examples' share,
    example_var: float  # each per unit: var(gap) = run_var / k + example_var / n + residual_var / (k·n)
    residual_var: float

    @property
    def p_value(self) -> float:
        from scipy.stats import t

        if self.se <= 0:
            return 1.0 if self.gap == 0 else 0.0
        return float(2 * t.sf(abs(self.gap) / self.se, self.df))

    def se_with(self, runs: int, n: int) -> float:
        """The standard error the same components give with `runs` runs of each setting and `n` examples."""
        return math.sqrt(max(self.run_var / runs + self.example_var / n + self.residual_var / (runs * n), 0.0))


def _mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """(runs, examples, residual) mean squares of a runs × examples table: the two-way ANOVA of one score."""
    k, n = x.shape
    grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
    ms_runs = n * float(((rows - grand) ** 2).sum()) / max(k - 1, 1)
    ms_examples = k * float(((cols - grand) ** 2).sum()) / max(n - 1, 1)
    resid = x - rows[:, None] - cols[None, :] + grand
    ms_resid = float((resid**2).sum()) / max((k - 1) * (n - 1), 1)
    return ms_runs, ms_examples, ms_resid


def _satterthwaite(terms: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(variance, degrees of freedom) of Σ c·MS over (c, MS, df) terms, by Satterthwaite (1946)."""
    var = sum(c * ms for c, ms, _ in terms)
    denom = sum((c * ms) ** 2 / df for c, ms, df in terms if df > 0)
    return var, (var * var / denom if denom > 0 else math.inf)


def crossed(a_runs, b_runs, paired: bool = True) -> Crossed:
    """a − b over runs × examples tables of one score (rows: runs, columns: the same examples in one order).

    Paired (the i-th run of a shares the i-th's seed with b): the table of differences D = a − b is a two-way
    random-effects design, runs crossed with examples, and the variance of its mean is
    (MS_runs + MS_examples − MS_residual) / (k·n), with Satterthwaite's degrees of freedom: the textbook
    quasi-F for a grand mean (Cornfield and Tukey 1956). Unpaired (other seeds or counts): each setting's own
    run variance, (MS_runs − MS_residual) / n, over its runs, plus the per-example differences' variance over
    n. Written out in numpy because no kept library has it: statsmodels' MixedLM fits crossed effects only as
    variance components, iteratively, and tests with a normal z, which with 3 runs says "real" far too often."""
    x, y = np.asarray(a_runs, dtype=float), np.asarray(b_runs, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.size == 0 or y.size == 0:
        raise ValueError("a comparison of settings needs every run of both scored on the same examples")
    (ka, n), kb = x.shape, y.shape[0]
    if paired and ka != kb:
        raise ValueError(f"runs paired by seed need as many runs of each setting; got {ka} and {kb}")
    gap = float(x.mean() - y.mean())
    if paired:
        k = ka
        if k < 2:
            raise ValueError("a verdict over runs needs at least 2 runs of each setting")
        s, e, r = _mean_squares(x - y)
        terms = [(1 / (k * n), s, k - 1), (1 / (k * n), e, n - 1), (-1 / (k * n), r, (k - 1) * (n - 1))]
        var, df = _satterthwaite(terms)
        df = max(df, 1.0)  # a negative term can drive Satterthwaite's df below one run's: never fewer than 1
        var = max(var, r / (k * n))  # the components cannot be negative: never less than the residual alone
        run_var, example_var, resid_var = max((s - r) / n, 0.0), max((e - r) / k, 0.0), r
    else:
        measured = [(k, *_mean_squares(t)) for t, k in ((x, ka), (y, kb)) if k >= 2]
        if not measured:
            raise ValueError("a verdict over runs needs at least 2 runs of one of the settings")
        d = x.mean(axis=0) - y.mean(axis=0)
        sd2 = float(d.var(ddof=1)) if n > 1 else 0.0
        terms = [(1 / n, sd2, n - 1)]
        if len(measured) == 2:
            for k, s, _, r in measured:
                terms += [(1 / (n * k), s, k - 1), (-1 / (n * k), r, (k - 1) * (n - 1))]
        else:  # one setting ran once: its runs are taken to vary as the other's do
            k, s, _, r = measured[0]
            both = (1 / ka + 1 / kb) / n
            terms += [(both, s, k - 1), (-both, r, (k - 1) * (n - 1))]
        var, df = _satterthwaite(terms)
        df = max(df, 1.0)
        var = max(var, sd2 / n)
        # per single run of a against one of b, for se_with: each side's run and residual variance
        sides = [(max((s - r) / n, 0.0), r) for _, s, _, r in measured]
        sides = sides * 2 if len(sides) == 1 else sides
        run_var, resid_var = sides[0][0] + sides[1][0], sides[0][1] + sides[1][1]
        example_var = max(sd2 - sides[0][1] / ka - sides[1][1] / kb, 0.0)
    sds = [float(np.sqrt(((t.mean(axis=1) - t.mean()) ** 2).sum() / (len(t) - 1))) for t in (x, y) if len(t) > 1]
    run_sd = float(np.sqrt(np.mean(np.square(sds)))) if sds else None
    return Crossed(gap, math.sqrt(max(var, 0.0)), df, (ka, kb), n, run_sd, run_var, example_var, resid_var)


def runs_needed(c: Crossed, gap: float | None = None, alpha: float = ALPHA, power: float = POWER, most: int = 1000):
    """Runs of each setting (on the same examples) at which a gap this size shows with the given power, from
    the measured components; None when even `most` runs would not (the examples' term alone is too wide)."""
    from scipy.stats import t

    gap = abs(c.gap if gap is None else gap)
    if gap == 0:
        return None
    for k in range(2, most + 1):
        df = max(k - 1, 1) if c.run_var > 0 else math.inf
        if gap >= (t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * c.se_with(k, c.n):
            return k
    return None


def smallest_gap(c: Crossed, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest gap these runs and examples show with the given power (the measured components)."""
    from scipy.stats import t

    return (t.ppf(1 - alpha / 2, c.df) + t.ppf(power, c.df)) * c.se


def compare_settings(
    a: str, b: str, a_runs, b_runs, *, paired: bool = True, score: str = "accuracy", unit: str = "run"
) -> Verdict:
    """Is setting a's score different from setting b's, counting which runs were trained as well as which
    examples were drawn? a_runs and b_runs: runs × examples tables of one score (accuracy: 1 right, 0 wrong;
    a loss per example). `unit` names a row in the sentence (run, seed, pair of runs)."""
    c = crossed(a_runs, b_runs, paired)
    return _settings_verdict(a, b, c, score, unit, "t-test over runs and examples crossed")


def compare_run_scores(
    a: str,
    b: str,
    a_scores: Sequence[float],
    b_scores: Sequence[float],
    *,
    paired: bool = True,
    n: int = 0,
    score: str = "accuracy",
    unit: str = "run",
) -> Verdict:
    """The same question from each run's score alone (no per-example scores kept): a paired t-test over the runs
    (scipy's ttest_rel; Welch's ttest_ind when unpaired). Each run's score already carries its examples' noise,
    so this is the crossed test without the examples' separate term; `n`: the eval examples, for the sentence."""
    from scipy.stats import ttest_ind, ttest_rel

    x, y = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if min(x.size, y.size) < 2 or (paired and x.size != y.size):
        raise ValueError("a verdict over runs needs at least 2 runs of each setting (as many of each, paired)")
    res = ttest_rel(x, y) if paired else ttest_ind(x, y, equal_var=False)
    gap = float(x.mean() - y.mean())
    k = x.size if paired else min(x.size, y.size)
    diffs = x - y if paired else None
    run_var = float(diffs.var(ddof=1)) if paired else float(x.var(ddof=1) + y.var(ddof=1))
    df = float(res.df)
    se = abs(gap / float(res.statistic)) if res.statistic and math.isfinite(res.statistic) else math.sqrt(run_var / k)
    sds = [float(v.std(ddof=1)) for v in (x, y)]
    c = Crossed(gap, se, df, (x.size, y.size), n, float(np.sqrt(np.mean(np.square(sds)))), run_var, 0.0, 0.0)
    test = "paired t-test over runs" if paired else "Welch's t-test over runs"
    return _settings_verdict(a, b, c, score, unit, test, p=float(res.pvalue))


def _settings_verdict(a: str, b: str, c: Crossed, score: str, unit: str, test: str, p: float | None = None):
    """The sentence of a verdict over runs: the mean gap, one run's spread, how often chance makes the gap, and,
    where it could be chance, the smallest gap these runs tell and how many runs a gap this size needs."""
    p = c.p_value if p is None else p
    ka, kb = c.runs
    each = f"{ka} {unit}s each" if ka == kb else f"{ka} and {kb} {unit}s"
    points = score == "accuracy"
    scale, fmt, what = (100, ".1f", "points") if points else (1, ".4f", "nats")
    label = {"accuracy": "accuracy", "eval_loss": "eval loss", "forgetting": "forgetting (general-text loss)"}[score]
    examples = f" on the same {c.n:,} examples" if c.n else ""
    spread = (
        f"; one {unit} of a setting differs from another by {c.run_sd * scale:{fmt}} {what} (sd)" if c.run_sd else ""
    )
    how = f"{test}, {c.df:.1f} df" if math.isfinite(c.df) else test
    needed = None
    if c.gap == 0:
        return Verdict(
            score,
            a,
            b,
            0.0,
            1.0,
            f"over {each}{examples}, {a} and {b} have the same mean {label}.",
            n=c.n,
            unit="runs",
            runs=c.runs,
            run_sd=c.run_sd,
        )
    better = a if (c.gap > 0) == points else b
    head = (
        f"over {each}{examples}, {better}'s mean {label} is {'higher' if points else 'lower'} by "
        f"{abs(c.gap) * scale:{fmt}} {what}{spread}: chance alone makes such a gap in {chance_words(p)} of draws "
        f"({how})"
    )
    if p < ALPHA:
        sentence = f"{head}: a real difference."
    else:
        sentence = f"{head}, so it could be chance"
        if ka == kb and c.run_var > 0 and c.se > 0:
            needed = runs_needed(c) if c.n else None
            smallest = smallest_gap(c) * scale
            sentence += (
                f". {each.capitalize()} cannot tell a gap under about {smallest:{'.1f' if points else fmt}} {what}"
            )
            if needed is not None and needed > ka:
                sentence += f"; about {needed:,} {unit}s each would ({100 * POWER:.0f}% power)"
            elif needed is None and c.n:
                sentence += "; the examples' part alone is wider than this gap, so more examples would, not more runs"
        sentence += "."
    return Verdict(
        score, a, b, c.gap, p, sentence, n=c.n, unit="runs", runs=c.runs, run_sd=c.run_sd, runs_needed=needed
    )
