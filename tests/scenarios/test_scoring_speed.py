"""Scoring at the speed of the hardware (issue 31, item 1), on the tiny model trained 2 and 200 steps:
evaluate's answers and losses on a fixed set are those of the code before the speed-ups
(support/scoring_speed_golden.json), a right answer costs no decoding step, a single-line answer ends at its line
break, and closed-set scoring agrees with generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SCORING_SPEED_GOLDEN

from workbench.core.config import LoraSettings, TrainSettings
from workbench.data import Example, load_task
from workbench.data.scoring import closed_answers
from workbench.engine import generate as gen
from workbench.engine import models
from workbench.engine.train import seed_everything, train

EVAL_N = 40  # the first 40 held-out sentiment examples: prompts of 13 to 21 tokens, both labels
SEQ_LEN = 64


def trained_tiny(model_dir: Path, steps: int):
    """The tiny model with a rank-8 all-linear adapter trained `steps` steps on sentiment's training split, on
    one thread and seeded: after 2 steps 6 of the 40 fixed answers are a label and most run to max_new; after 200
    every answer is a label (77.5% right)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = models.load_model(model_dir, bits=16, device="cpu")
        seed_everything(0)
        model = models.attach_lora(model, LoraSettings(rank=8, target_modules="all-linear"), 16)
        settings = TrainSettings(steps=steps, lr=1e-2, batch_size=8, seq_len=SEQ_LEN, warmup_steps=0, seed=0)
        train(model, models.load_tokenizer(model_dir), load_task("sentiment").train, settings)
    finally:
        torch.set_num_threads(before)
    return model


def fixed_set(model, tokenizer, **kw) -> dict:
    """What evaluate says on the fixed set, base (adapter off) and adapter: each answer and each loss."""
    out = {}
    for name, base in (("base", True), ("adapter", False)):
        ev = gen.evaluate(
            model, tokenizer, load_task("sentiment").eval[:EVAL_N], seq_len=SEQ_LEN, batch_size=16, base=base, **kw
        )
        out[name] = {
            "eval_loss": ev.eval_loss,
            "accuracy": ev.accuracy,
            "predictions": [p["prediction"] for p in ev.predictions],
            "losses": ev.losses,
            "tokens": ev.tokens,
            "keys": ev.keys,
        }
    return out


def write_golden(model_dir: Path) -> None:
    """Written once, by the code before the speed-ups (commit 0105de7's generate.py), and never again."""
    tokenizer = models.load_tokenizer(model_dir)
    golden = {}
    for steps in (2, 200):
        torch.set_num_threads(1)
        golden[f"steps={steps}"] = fixed_set(trained_tiny(model_dir, steps), tokenizer)
    SCORING_SPEED_GOLDEN.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_runs(tiny_model_dir):
    """{steps: the tiny model trained that many steps} and its tokenizer, trained once for the module."""
    return {steps: trained_tiny(tiny_model_dir, steps) for steps in (2, 200)}, models.load_tokenizer(tiny_model_dir)


def test_fixed_set_answers_and_losses_are_those_before_the_speed_ups(tiny_runs):
    """The golden file holds what evaluate answered and lost on the fixed set before the speed-ups (the shared
    prompt start, batches by length, rows leaving the batch, answers that follow the reference): the same
    answers, word for word, and the same losses to float32 rounding (7e-7 here), in the same order."""
    golden = json.loads(SCORING_SPEED_GOLDEN.read_text(encoding="utf-8"))
    runs, tokenizer = tiny_runs
    # the set holds every way an answer ends: at the first token, after a label, and at max_new (8 tokens)
    said = [p for run in golden.values() for side in run.values() for p in side["predictions"]]
    assert "" in said and "positive" in said and "negative" in said and any(len(p.split()) == 8 for p in said)
    for steps, model in runs.items():
        now = fixed_set(model, tokenizer)
        for side in ("base", "adapter"):
            was, got = golden[f"steps={steps}"][side], now[side]
            assert got["predictions"] == was["predictions"], (steps, side)
            assert got["accuracy"] == was["accuracy"]
            assert got["keys"] == was["keys"] and got["tokens"] == was["tokens"]
            assert got["losses"] == pytest.approx(was["losses"], rel=1e-5)
            assert got["eval_loss"] == pytest.approx(was["eval_loss"], rel=1e-5)


def test_a_right_answer_costs_no_decoding_step(tiny_runs):
    """Greedy answers follow the reference while the scoring forward's argmax agrees with it: a right label
    needs no decoding step, a wrong one a single step (to see its end of turn), and the rows that are done
    leave the batch. The old loop decoded every row of a batch until the last one ended."""
    runs, tokenizer = tiny_runs
    model = runs[200]
    body, _ = models.split_head(model)
    fed = []
    hook = body.register_forward_pre_hook(lambda m, a, kw: fed.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        ev = gen.evaluate(model, tokenizer, load_task("sentiment").eval[:EVAL_N], seq_len=SEQ_LEN, batch_size=16)
    finally:
        hook.remove()
    assert {p["prediction"] for p in ev.predictions} == {"positive", "negative"}
    wrong = sum(not p["correct"] for p in ev.predictions)
    assert 0 < wrong < EVAL_N
    decoded_rows = sum(rows for rows, width in fed if width == 1)
    assert decoded_rows == wrong
    assert fed[0] == (1, 4)  # the prompts' shared start ("<|im_start|> user Review :"), once, for a batch of one


class _NewlineAt:
    """The tiny tokenizer, with one word read as a line break (the tiny vocabulary has none)."""

    def __init__(self, tokenizer, token_id: int):
        object.__setattr__(self, "_tok", tokenizer)
        object.__setattr__(self, "_id", token_id)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        setattr(self._tok, name, value)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def decode(self, ids, **kwargs):
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        parts, part = [], []
        for i in ids + [None]:
            if i == self._id or i is None:
                parts.append(self._tok.decode(part, **kwargs))
                part = []
            else:
                part.append(i)
        return "\n".join(parts)


def test_a_single_line_answer_ends_at_its_first_line_break(tiny_runs, monkeypatch):
    """Where every reference answer is one line, an answer ends at the first line break after some text, and
    the prediction is that first line: what the run to max_new would have said before the break, on both paths."""
    runs, tokenizer = tiny_runs
    model = runs[2]
    examples = load_task("sentiment").eval[:EVAL_N]
    long = gen.evaluate(model, tokenizer, examples, seq_len=SEQ_LEN, base=True)
    # a word the rambling base model writes after some text in several answers: read as a line break
    word = "pleasant"
    assert sum(word in p["prediction"].split()[1:] for p in long.predictions) >= 2

    def first_line(text: str) -> str:
        said = []
        for w in text.split():
            if w == word and said:
                break
            said += [] if w == word else [w]
        return " ".join(said)

    expect = [first_line(p["prediction"]) for p in long.predictions]
    assert expect != [p["prediction"] for p in long.predictions]
    newline = _NewlineAt(tokenizer, tokenizer.convert_tokens_to_ids(word))
    body, _ = models.split_head(model)
    fed = []
    hook = body.register_forward_pre_hook(lambda m, a, kw: fed.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        cut = gen.evaluate(model, newline, examples, seq_len=SEQ_LEN, base=True)
        decoded = sum(rows for rows, width in fed if width == 1)
        fed.clear()
        gen.evaluate(model, tokenizer, examples, seq_len=SEQ_LEN, base=True)
    finally:
        hook.remove()
    assert [p["prediction"] for p in cut.predictions] == expect
    assert decoded < sum(rows for rows, width in fed if width == 1)  # the rows that ended stopped costing steps
    assert cut.losses == long.losses  # the loss is the reference's, however the answer ends
    monkeypatch.setattr(gen, "split_head", lambda model: None)  # transformers' generate, cut afterwards
    plain = gen.evaluate(model, newline, examples, seq_len=SEQ_LEN, base=True)
    assert [p["prediction"] for p in plain.predictions] == expect


def test_closed_set_scoring_agrees_with_generation_on_sentiment(tiny_runs):
    """On the shipped sentiment task, picking the likelier label agrees with greedy generation. What "agrees"
    means: on every example whose greedy answer is one of the labels, the closed-set answer is that same label,
    so where every greedy answer is a label (the adapter trained 200 steps: 40 of 40) the accuracy and each
    example's correctness are the same. Where the model does not answer with a label (2 steps: 34 of 40 answers
    are other words or nothing), closed-set scoring still picks one and scores something generation does not:
    which label the model prefers, not whether it answers with it. The eval loss is the reference's either way."""
    runs, tokenizer = tiny_runs
    labels = closed_answers(load_task("sentiment").train)
    assert labels == ["negative", "positive"]
    examples = load_task("sentiment").eval[:EVAL_N]
    for steps, model in runs.items():
        greedy = gen.evaluate(model, tokenizer, examples, seq_len=SEQ_LEN, batch_size=16)
        chosen = gen.evaluate(model, tokenizer, examples, seq_len=SEQ_LEN, batch_size=16, choices=labels)
        assert all(p["answered_by"] == "choice" and p["prediction"] in labels for p in chosen.predictions)
        assert chosen.losses == greedy.losses and chosen.eval_loss == greedy.eval_loss
        said = [(g["prediction"], c["prediction"]) for g, c in zip(greedy.predictions, chosen.predictions)]
        labelled = [(g, c) for g, c in said if g in labels]
        assert labelled and all(g == c for g, c in labelled), steps
        if steps == 200:
            assert len(labelled) == EVAL_N
            assert chosen.correct == greedy.correct and chosen.accuracy == greedy.accuracy
            assert 0.6 < chosen.accuracy < 1  # both labels predicted, some wrong: agreement is not trivial
        else:
            assert len(labelled) < EVAL_N / 2


def test_each_label_is_scored_as_a_reference_answer_would_be(tiny_runs):
    """Each label's loss is the one evaluate gives it as the reference answer (its tokens and end of turn, the
    cross entropy summed), and the answer is the label with the lowest: labels of 2 to 4 tokens, three sharing
    their first token, so their later tokens decide."""
    runs, tokenizer = tiny_runs
    model = runs[2]
    labels = ["red", "red green", "red blue green", "apple banana cherry"]
    examples = load_task("sentiment").eval[:6]
    chosen = gen.evaluate(model, tokenizer, examples, seq_len=SEQ_LEN, choices=labels)
    for example, picked in zip(examples, chosen.predictions):
        as_reference = {}
        for label in labels:
            alone = gen.evaluate(model, tokenizer, [Example(example.prompt, label)], seq_len=SEQ_LEN)
            as_reference[label] = alone.losses[0] * alone.tokens[0]
        assert picked["label_losses"] == pytest.approx(as_reference, rel=1e-5)
        assert picked["prediction"] == min(as_reference, key=as_reference.get)


if __name__ == "__main__":  # PYTHONPATH=tests python tests/scenarios/test_scoring_speed.py MODEL_DIR (the tiny model)
    import sys

    write_golden(Path(sys.argv[1]))
