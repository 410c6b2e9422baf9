"""Scoring until a comparison is settled: two variants' accuracy on the same examples tested after every round of
scoring, so a run or an Evaluate can stop as soon as the answer is clear, with a design whose error rate holds
under that kind of stopping (never a fixed-size p-value peeked at).

The design is Haybittle–Peto's group-sequential one (Haybittle 1971, Peto et al. 1976): at each look before the
last, McNemar's exact test (stats.compare_accuracy) settles the comparison only at p < 0.001; the last look, at
the budget, uses what is left of α (0.05 less 0.001 for each earlier look). By Bonferroni's inequality the chance
of ever calling no difference real is at most α, however the looks fall; and since the interim bar is so high,
the last look is nearly the fixed-size test, so a gap that all the examples would show still shows, while a
large gap (base against a trained adapter) is settled after the first round. scipy and statsmodels have no
group-sequential boundaries; this one needs none to be computed, only the looks counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.core.stats import ALPHA, Verdict, compare_accuracy, resolvable_gap, words
from workbench.engine.generate import EvalResult, joined

INTERIM = 0.001  # the bar at every look before the last


def rounds(total: int, first: int = 60, growth: float = 2.0) -> list[int]:
    """The examples scored by each look: `first`, then doubling, then `total` (60, 120, 240, 480, 600). Few
    looks keep the last look's bar near α (each costs it 0.001) and each look's cost small."""
    out, n = [], min(first, total)
    while n < total:
        out.append(n)
        n = min(total, max(n + 1, int(n * growth)))
    return [*out, total]


def last_alpha(looks: int, alpha: float = ALPHA) -> float:
    """What the last of `looks` looks may spend: α less INTERIM for each look before it."""
    return alpha - INTERIM * (looks - 1)


@dataclass
class Sequential:
    """a against b over rounds of the same examples: after each round, is the gap settled?"""

    a: str
    b: str
    budget: int  # the examples the last look is at
    looks: int  # how many looks the schedule has (rounds(budget))
    alpha: float = ALPHA
    a_correct: list[bool] = field(default_factory=list)
    b_correct: list[bool] = field(default_factory=list)
    verdict: Verdict | None = None  # McNemar's at the latest look
    settled_at: int | None = None  # the examples by the look that settled it
    settled_bar: float | None = None  # the bar that look's p-value beat
    done_looks: int = 0

    def update(self, a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Sequential:
        """Add a round of the same new examples, then look."""
        if len(a_correct) != len(b_correct):
            raise ValueError("a sequential comparison needs both variants scored on the same new examples")
        self.a_correct += [bool(x) for x in a_correct]
        self.b_correct += [bool(x) for x in b_correct]
        self.done_looks += 1
        if self.settled_at is not None:  # kept as it was when settled: later rounds were for other comparisons
            return self
        self.verdict = compare_accuracy(self.a, self.b, self.a_correct, self.b_correct)
        if self.verdict.p_value < self.bar:
            self.settled_at, self.settled_bar = self.n, self.bar
        return self

    @property
    def n(self) -> int:
        return len(self.a_correct)

    @property
    def last(self) -> bool:
        return self.n >= self.budget or self.done_looks >= self.looks

    @property
    def bar(self) -> float:
        """The p-value this look must beat: INTERIM before the last look, what is left of α at it."""
        return last_alpha(self.looks, self.alpha) if self.last else INTERIM

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    def sentence(self, a: str | None = None, b: str | None = None) -> str:
        """The verdict at this look (or at the look that settled it), with how many examples it took and why
        scoring stopped (or goes on); `a` and `b`: what to call the two (default: their names)."""
        v = self.verdict
        a, b = a or self.a, b or self.b
        if v is None:
            return f"{a} and {b}: nothing scored yet."
        counts = f"{a} got {words(v.a_only, 'example')} right that {b} missed and missed {v.b_only} that {b} got right"
        gap = "no gap" if v.gap == 0 else f"a {abs(100 * v.gap):.1f}-point gap in {a if v.gap > 0 else b}'s favour"
        p = f"p = {v.p_value:.2g}" if v.p_value >= 1e-4 else "p < 0.0001"
        if self.settled:
            why = "settled before the budget" if self.settled_at < self.budget else "settled at the budget"
            return (
                f"{why}, after {self.settled_at:,} of {self.budget:,} examples: {counts}, {gap} ({p} against a bar "
                f"of {self.settled_bar:g} at that look, so that looking after every round keeps the error rate at "
                f"{self.alpha:g}): a real difference on these examples."
            )
        if self.last:
            return (
                f"not settled: all {self.n:,} examples of the budget were scored. {counts}, {gap} ({p}, the bar at "
                f"the last look {self.bar:g}), so it could be chance."
            )
        return (
            f"not settled yet after {self.n:,} of {self.budget:,} examples: {counts}, {gap} ({p}; the bar "
            f"{self.bar:g})."
        )


def all_settled(pairs: Sequence[Sequential]) -> bool:
    """Whether every comparison the user is looking at is settled: scoring can stop."""
    return bool(pairs) and all(p.settled for p in pairs)


def simulate(gap: float, discordant: float, budget: int, trials: int, seed: int = 0) -> tuple[float, float]:
    """(share of trials settled, mean examples scored) for a paired accuracy gap `gap` with a share `discordant`
    of examples right for one variant only: what a plan can say is likely settled within a budget."""
    rng = np.random.default_rng(seed)
    schedule = rounds(budget)
    settled, used = 0, []
    for _ in range(trials):
        d = rng.random(budget) < discordant
        a = d & (rng.random(budget) < 0.5 + gap / (2 * discordant))
        b = d & ~a
        s, prev = Sequential("a", "b", budget, len(schedule)), 0
        for m in schedule:
            s.update(a[prev:m], b[prev:m])
            prev = m
            if s.settled:
                break
        settled += s.settled
        used.append(s.n)
    return settled / trials, float(np.mean(used))


@dataclass
class Scored:
    """What scoring until settled left: each variant's scores on the examples it reached, each comparison's
    sequential verdict, the examples of the last look, and how many each variant had scored now (not kept)."""

    results: dict  # variant -> EvalResult on its first examples (a variant whose comparisons settled stops)
    pairs: list[Sequential]
    n: int
    budget: int
    scored: dict = field(default_factory=dict)  # variant -> examples scored now, beyond what was kept

    @property
    def early(self) -> bool:
        return self.n < self.budget

    def sentences(self, titles: dict[str, str] | None = None) -> list[str]:
        """One sentence per comparison: its verdict, how many examples it took and why scoring stopped."""
        titles = titles or {}
        out = []
        for p in self.pairs:
            a, b = titles.get(p.a, p.a), titles.get(p.b, p.b)
            out.append(f"{a} against {b}: {p.sentence(a, b)}")
        return out


def score_until_settled(
    score: Callable[[str, int, int], EvalResult],
    variants: Sequence[str],
    budget: int,
    pairs: Sequence[tuple[str, str]],
    *,
    kept: dict | None = None,
    on_look: Callable[[Scored], None] | None = None,
    first: int = 60,
) -> Scored:
    """Score `variants` in rounds of the same examples (rounds(budget)) until every comparison in `pairs` is
    settled or the budget is spent. `score(variant, start, stop)` scores examples[start:stop]. `kept`: what a
    variant already has on the first examples (the score cache's, a run's), read and never scored again; only
    the examples past it are scored. A variant whose comparisons are all settled is scored no further.
    `on_look` hears the state after each look (the Compare tab redraws its table)."""
    kept = dict(kept or {})
    schedule = rounds(budget, first)
    looks = [Sequential(a, b, budget, len(schedule)) for a, b in pairs]
    parts = {v: [kept[v]] if v in kept else [] for v in variants}
    reached = {v: len(kept[v].losses) if v in kept else 0 for v in variants}
    scored = dict.fromkeys(variants, 0)
    state = Scored({}, looks, 0, budget)
    prev = 0
    for m in schedule:
        needed = {v for s in looks if not s.settled for v in (s.a, s.b)}
        for v in variants:
            if v in needed and reached[v] < m:
                parts[v].append(score(v, reached[v], m))
                scored[v] += m - reached[v]
                reached[v] = m
        now = {v: _head(joined(parts[v]), min(m, reached[v])) for v in variants if parts[v]}
        for s in looks:
            fresh = not s.settled
            s.update(now[s.a].correct[prev:m] if fresh else [], now[s.b].correct[prev:m] if fresh else [])
        prev = m
        state = Scored(now, looks, m, budget, dict(scored))
        if on_look is not None:
            on_look(state)
        if all_settled(looks):
            break
    return state


def _head(result: EvalResult, n: int) -> EvalResult:
    """A scoring's first n examples, as if only they had been scored."""
    if len(result.losses) <= n:
        return result
    cut = EvalResult(
        result.eval_loss,
        result.perplexity,
        result.accuracy,
        result.predictions[:n],
        result.losses[:n],
        result.tokens[:n],
        result.keys[:n],
        result.seconds * n / max(len(result.losses), 1),
    )
    return joined([cut])


def plan(budget: int, accuracy: float = 0.8) -> str:
    """What scoring in rounds will do, said before it does: the looks, when it stops, and the gaps the last look
    is likely to settle (stats.resolvable_gap at the last look's bar: independent samples, the careful side)."""
    looks = rounds(budget)
    gap = resolvable_gap(budget, accuracy, alpha=last_alpha(len(looks)))
    likely = f"gaps of about {100 * gap:.0f} points near {accuracy:.0%} are likely settled" if gap else ""
    if len(looks) == 1:
        return f"all {budget} examples in one round" + (f"; {likely}" if likely else "")
    shown = ", ".join(str(m) for m in looks[:-1]) + f" and {looks[-1]}"
    return f"looking after {shown} examples, stopping at the first look that settles every comparison" + (
        f"; by the last, {likely}" if likely else ""
    )
