"""Scoring until settled (analysis.sequential): the group-sequential design's error rates checked by simulation,
on no difference (looked at after every round) and on known differences, against the fixed-size test."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis import sequential
from workbench.analysis.sequential import Sequential, all_settled, last_alpha, rounds, simulate
from workbench.core import stats


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


# ---------------------------------------------------------------------------- scoring in rounds
def _fake_results(right: dict[str, list[bool]]):
    """score(variant, start, stop) over fixed right/wrong lists, each call recorded."""
    from workbench.engine.generate import EvalResult

    calls: list[tuple[str, int, int]] = []

    def result(v: str, start: int, stop: int) -> EvalResult:
        marks = right[v][start:stop]
        preds = [{"prompt": f"p{i}", "answer": "a", "prediction": "a", "correct": c} for i, c in enumerate(marks)]
        losses = [0.1 if c else 2.0 for c in marks]
        acc = sum(marks) / len(marks)
        mean = sum(losses) / len(losses)
        keys = [f"k{i}" for i in range(start, stop)]
        return EvalResult(mean, float(np.exp(mean)), acc, preds, losses, [1] * len(marks), keys, 0.01 * len(marks))

    def score(v: str, start: int, stop: int):
        calls.append((v, start, stop))
        return result(v, start, stop)

    return score, calls, result


def test_a_large_gap_stops_after_the_first_round_and_a_small_one_runs_to_the_budget():
    rng = np.random.default_rng(0)
    lora = list(rng.random(600) < 0.9)
    qlora = list(lora)  # as often right where LoRA is wrong as wrong where it is right: no gap at all
    for want, flip in ((True, False), (False, True)):
        for i in [i for i, c in enumerate(lora) if c == want][:20]:
            qlora[i] = flip
    right = {"base": list(rng.random(600) < 0.1), "lora": lora, "qlora": qlora}
    score, calls, _ = _fake_results(right)
    looks = []
    two = sequential.score_until_settled(score, ["base", "lora"], 600, [("base", "lora")], on_look=looks.append)
    assert two.early and two.n == 60 and len(looks) == 1 and two.pairs[0].settled_at == 60
    assert calls == [("base", 0, 60), ("lora", 0, 60)]
    assert two.results["lora"].keys == [f"k{i}" for i in range(60)]
    assert "settled before the budget, after 60 of 600 examples" in two.sentences()[0]

    calls.clear()
    three = sequential.score_until_settled(score, ["base", "lora", "qlora"], 600, [("base", "lora"), ("lora", "qlora")])
    assert not three.early and three.n == 600  # LoRA against QLoRA, alike, never settles: the whole budget
    assert [c[1:] for c in calls if c[0] == "qlora"] == [(0, 60), (60, 120), (120, 240), (240, 480), (480, 600)]
    assert three.pairs[0].settled_at == 60 and not three.pairs[1].settled
    # the base's one comparison settled at the first look: it was scored no further
    assert [c for c in calls if c[0] == "base"] == [("base", 0, 60)] and three.scored["base"] == 60
    assert len(three.results["base"].losses) == 60 and len(three.results["qlora"].losses) == 600
    assert "not settled: all 600 examples of the budget were scored" in three.sentences()[1]


def test_rounds_join_to_what_one_scoring_gives_and_kept_scores_are_never_scored_again():
    rng = np.random.default_rng(3)
    right = {"base": list(rng.random(200) < 0.5), "lora": list(rng.random(200) < 0.55)}
    score, calls, whole = _fake_results(right)
    out = sequential.score_until_settled(
        score, ["base", "lora"], 200, [("base", "lora")], kept={"base": whole("base", 0, 200)}
    )
    assert {c[0] for c in calls} == {"lora"}  # the base's whole-split scores were read slice by slice
    one = whole("lora", 0, out.n)
    joined = out.results["lora"]
    assert joined.losses == one.losses and joined.keys == one.keys and joined.correct == one.correct
    assert joined.accuracy == pytest.approx(one.accuracy) and joined.eval_loss == pytest.approx(one.eval_loss)
    assert out.results["base"].keys == [f"k{i}" for i in range(out.n)]


def test_what_a_run_kept_on_the_first_examples_is_read_and_only_the_rest_is_scored():
    """A run scored 200 examples; Evaluate's budget is the whole split: its first looks come from the run."""
    rng = np.random.default_rng(4)
    right = {"lora": list(rng.random(600) < 0.8), "qlora": list(rng.random(600) < 0.8)}
    score, calls, whole = _fake_results(right)
    run = {v: whole(v, 0, 200) for v in right}
    out = sequential.score_until_settled(score, ["lora", "qlora"], 600, [("lora", "qlora")], kept=run)
    assert calls[:2] == [("lora", 200, 240), ("qlora", 200, 240)]  # 60 and 120 were read from the run
    assert out.scored == {"lora": out.n - 200, "qlora": out.n - 200}
    assert out.results["lora"].correct == right["lora"][: out.n]


def test_the_plan_says_the_looks_and_the_gaps_the_last_is_likely_to_settle():
    line = sequential.plan(600)
    assert line.startswith("looking after 60, 120, 240, 480 and 600 examples, stopping at the first look")
    gap = stats.resolvable_gap(600, 0.8, alpha=last_alpha(5))
    assert f"gaps of about {100 * gap:.0f} points near 80% are likely settled" in line
    assert sequential.plan(40, 0.5).startswith("all 40 examples in one round; gaps of about")
