"""Paired comparisons of scored variants: in one run (base against each adapter, LoRA against QLoRA), across
runs, and pooled over the seeds of two settings. Two variants pair only when they were scored on the same
eval examples (the same keys in scores.json); otherwise the answer says so and only the intervals of each
stand, never a p-value that pairing would have made wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.analysis.crossed import SeedSpread, compare_settings, with_scope
from workbench.core.config import VARIANTS
from workbench.core.stats import Verdict, compare_accuracy, compare_losses


@dataclass
class Pairing:
    """What a comparison of a and b found: the verdicts, or why the two cannot be paired."""

    a: str
    b: str
    verdicts: list[Verdict] = field(default_factory=list)
    unpaired: str | None = None  # why no paired test was made

    def sentences(self) -> list[str]:
        return [self.unpaired] if self.unpaired else [v.sentence for v in self.verdicts]

    def get(self, score: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.score == score), None)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "unpaired": self.unpaired, "verdicts": [v.to_dict() for v in self.verdicts]}


def _aligned(a: dict, b: dict) -> tuple[list[int], list[int]] | None:
    """Indices that put a's and b's examples in one order, or None when they were not scored on the same ones."""
    ka, kb = a.get("keys") or [], b.get("keys") or []
    if not ka or len(ka) != len(kb) or len(set(ka)) != len(ka) or set(ka) != set(kb):
        return None
    where = {k: i for i, k in enumerate(kb)}
    return list(range(len(ka))), [where[k] for k in ka]


def _pick(values: Sequence, order: list[int]) -> list:
    return [values[i] for i in order]


def pair(
    a: str, a_scores: dict | None, b: str, b_scores: dict | None, spread: SeedSpread | None = None, trained: int = 0
) -> Pairing:
    """Paired tests of a against b from their scores.json entries: accuracy (McNemar) where the task has one,
    eval loss and forgetting (sign-flip permutation). These speak for the two models as trained: with `trained`
    (how many of the two were trained, each once) every sentence says so, with the task's seed `spread` beside
    it where known (crossed.with_scope)."""
    why = unpaired(a, a_scores, b, b_scores)
    if why:
        return Pairing(a, b, unpaired=why)
    verdicts = _paired(a, a_scores, b, b_scores)
    return Pairing(a, b, [with_scope(v, spread, trained) for v in verdicts])


def unpaired(a: str, a_scores: dict | None, b: str, b_scores: dict | None) -> str | None:
    """Why a and b cannot be paired (no per-example scores, or not the same examples), or None when they can."""
    if not a_scores or not b_scores or not a_scores.get("eval") or not b_scores.get("eval"):
        return f"{a} and {b} cannot be paired: a run from before per-example scores were kept"
    if _aligned(a_scores["eval"], b_scores["eval"]) is None:
        na, nb = len(a_scores["eval"].get("keys") or []), len(b_scores["eval"].get("keys") or [])
        return (
            f"{a} ({na} eval examples) and {b} ({nb}) were not scored on the same examples, so they cannot be "
            "paired: compare their intervals only"
        )
    return None


def _paired(a: str, a_scores: dict, b: str, b_scores: dict) -> list[Verdict]:
    """The paired tests of two runs' scores that can be paired (unpaired said None)."""
    ia, ib = _aligned(a_scores["eval"], b_scores["eval"])
    ea, eb = a_scores["eval"], b_scores["eval"]
    out: list[Verdict] = []
    if ea.get("correct") and eb.get("correct"):
        out.append(compare_accuracy(a, b, _pick(ea["correct"], ia), _pick(eb["correct"], ib)))
    weights = [(x + y) / 2 for x, y in zip(_pick(ea["tokens"], ia), _pick(eb["tokens"], ib))]
    out.append(compare_losses(a, b, _pick(ea["losses"], ia), _pick(eb["losses"], ib), weights))
    ga, gb = a_scores.get("general") or {}, b_scores.get("general") or {}
    if ga.get("base_losses") and gb.get("base_losses"):
        g_order = _aligned(ga, gb)
        if g_order is not None:
            ja, jb = g_order
            fa = [on - off for on, off in zip(_pick(ga["losses"], ja), _pick(ga["base_losses"], ja))]
            fb = [on - off for on, off in zip(_pick(gb["losses"], jb), _pick(gb["base_losses"], jb))]
            out.append(compare_losses(a, b, fa, fb, _pick(ga["tokens"], ja), score="forgetting"))
    return out


def _by_key(part: dict, keys: list[str], field: str) -> list:
    where = {k: i for i, k in enumerate(part["keys"])}
    return [part[field][where[k]] for k in keys]


SCORES = ("accuracy", "eval_loss", "forgetting")  # the scores a verdict compares (eval_plan's seed spread too)


def score_tables(runs: list[dict]) -> dict[str, list[list[float]]] | None:
    """Each score of several runs as a runs × examples table, the examples in one order (the first run's keys):
    accuracy (1 right, 0 wrong), eval_loss and forgetting (each block's loss with the adapter on minus off);
    a score some run lacks is left out. None when the runs were not all scored on the same examples."""
    evals = [r["eval"] for r in runs]
    keys = list(evals[0]["keys"])
    if any(set(e["keys"]) != set(keys) or len(e["keys"]) != len(keys) for e in evals):
        return None
    tables = {"eval_loss": [_by_key(e, keys, "losses") for e in evals]}
    if all(e.get("correct") for e in evals):
        tables["accuracy"] = [[float(c) for c in _by_key(e, keys, "correct")] for e in evals]
    generals = [r.get("general") or {} for r in runs]
    if all(g.get("base_losses") for g in generals):
        g_keys = list(generals[0]["keys"])
        if all(set(g["keys"]) == set(g_keys) for g in generals):
            tables["forgetting"] = [
                [on - off for on, off in zip(_by_key(g, g_keys, "losses"), _by_key(g, g_keys, "base_losses"))]
                for g in generals
            ]
    return {score: tables[score] for score in SCORES if score in tables}


def pooled(
    a: str,
    a_runs: list[dict | None],
    b: str,
    b_runs: list[dict | None],
    unit: str = "seed",
    spread: SeedSpread | None = None,
    trained: int = 0,
) -> Pairing:
    """a against b over several runs (seeds), the i-th of a paired with the i-th of b (the same seed), every run
    scored on the same examples: a verdict on the settings, counting both sources of noise, which runs were
    trained and which examples were drawn (crossed.compare_settings). One run each: pair()'s verdict on the two
    models, said as one on `trained` trained models with the task's seed `spread` beside it."""
    if len(a_runs) != len(b_runs) or not a_runs:
        return Pairing(a, b, unpaired=f"{a} and {b} have different numbers of {unit}s, so they cannot be paired")
    if len(a_runs) == 1:
        return pair(a, a_runs[0], b, b_runs[0], spread, trained)
    for sa, sb in zip(a_runs, b_runs):  # only whether each seed pairs: its own tests are not needed
        why = unpaired(a, sa, b, sb)
        if why:
            return Pairing(a, b, unpaired=why)
    tables = score_tables([*a_runs, *b_runs])
    if tables is None:
        return Pairing(a, b, unpaired=f"the {unit}s of {a} and {b} were not all scored on the same examples")
    k = len(a_runs)
    verdicts = [compare_settings(a, b, table[:k], table[k:], score=score, unit=unit) for score, table in tables.items()]
    return Pairing(a, b, verdicts)


def variant_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The comparisons a run answers, in the teaching order: base against each adapter, then each pair of
    adapters (LoRA against QLoRA)."""
    trained = [n for n in names if VARIANTS[n].trained]
    pairs = [("base", t) for t in trained if "base" in names]
    return pairs + [(x, y) for i, x in enumerate(trained) for y in trained[i + 1 :]]


def trained_count(*names: str) -> int:
    """How many of these variants were trained (base is not)."""
    return sum(VARIANTS[n].trained for n in names if n in VARIANTS)


def within_run(
    scores: dict[str, dict], names: list[str], titles: dict[str, str] | None = None, spread: SeedSpread | None = None
) -> list[Pairing]:
    """Every comparison of one run's variants (`scores`: its scores.json), by the variants' titles where given;
    each says it is about these trained models, with the task's seed `spread` where known."""
    titles = titles or {}
    present = [n for n in names if n in scores]
    return [
        pair(titles.get(x, x), scores[x], titles.get(y, y), scores[y], spread, trained_count(x, y))
        for x, y in variant_pairs(present)
    ]


def across_seeds(
    seed_scores: list[dict[str, dict]],
    names: list[str],
    titles: dict[str, str] | None = None,
    spread: SeedSpread | None = None,
):
    """Every comparison of the variants of a run repeated over seeds (each seed's scores.json): over several
    seeds a verdict on the settings (pooled), over one a verdict on the trained models (within_run)."""
    if len(seed_scores) == 1:
        return within_run(seed_scores[0], names, titles, spread)
    titles = titles or {}
    present = [n for n in names if all(n in s for s in seed_scores)]
    return [
        pooled(titles.get(x, x), [s[x] for s in seed_scores], titles.get(y, y), [s[y] for s in seed_scores])
        for x, y in variant_pairs(present)
    ]


def verdicts_what(seeds: int) -> str:
    """What a run's verdicts speak for, said above them: the trained models (one seed) or the settings."""
    if seeds > 1:
        return f"over {seeds} seeds, each a verdict on the settings: the seeds' spread and the examples' both counted"
    return "paired on the same eval examples: verdicts on these trained models"


def short_titles(names: list[str]) -> dict[str, str]:
    """What a sentence calls each variant: base, LoRA, LoRA 8-bit, QLoRA."""
    return {n: VARIANTS[n].short for n in names}
