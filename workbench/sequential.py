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

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .stats import ALPHA, Verdict, compare_accuracy, words

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
    done_looks: int = 0

    def update(self, a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Sequential:
        """Add a round of the same new examples, then look."""
        if len(a_correct) != len(b_correct):
            raise ValueError("a sequential comparison needs both variants scored on the same new examples")
        self.a_correct += [bool(x) for x in a_correct]
        self.b_correct += [bool(x) for x in b_correct]
        self.done_looks += 1
        self.verdict = compare_accuracy(self.a, self.b, self.a_correct, self.b_correct)
        if self.settled_at is None and self.verdict.p_value < self.bar:
            self.settled_at = self.n
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

    def sentence(self) -> str:
        """The verdict at this look, with how many examples it took and why scoring stopped (or goes on)."""
        v = self.verdict
        if v is None:
            return f"{self.a} and {self.b}: nothing scored yet."
        counts = (
            f"{self.a} got {words(v.a_only, 'example')} right that {self.b} missed and missed {v.b_only} that "
            f"{self.b} got right"
        )
        gap = (
            "no gap"
            if v.gap == 0
            else f"a {abs(100 * v.gap):.1f}-point gap in {self.a if v.gap > 0 else self.b}'s favour"
        )
        p = f"p = {v.p_value:.2g}" if v.p_value >= 1e-4 else "p < 0.0001"
        if self.settled:
            why = "settled before the budget" if self.settled_at < self.budget else "settled at the budget"
            return (
                f"{why}, after {self.settled_at:,} of {self.budget:,} examples: {counts}, {gap} ({p} against a bar "
                f"of {self.bar:g} at this look, so that looking after every round keeps the error rate at "
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
