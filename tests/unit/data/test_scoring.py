"""Scoring (data.scoring): normalised exact match, the choice of scoring by answer length, closed answer sets."""

from __future__ import annotations

import pytest
from helpers import write_jsonl

from workbench import data
from workbench.data import Example, TextSource, load_task
from workbench.data.scoring import closed_answers


def test_scoring_by_answer_length(tmp_path):
    n = data.SHORT_ANSWER_WORDS
    short = [{"prompt": f"p{i}", "answer": " ".join(["word"] * n)} for i in range(4)]
    assert data.load_data_task(write_jsonl(tmp_path / "s.jsonl", short)).scoring == "exact_match"
    long = short + [{"prompt": "p9", "answer": " ".join(["word"] * (n + 1))}]
    # the long answer is found whichever side of the split it lands on in training
    task = data.load_data_task(
        write_jsonl(tmp_path / "l.jsonl", long), eval_source=write_jsonl(tmp_path / "e.jsonl", short)
    )
    assert task.scoring == "perplexity"
    assert data.choose_scoring([Example("p", "yes")]) == "exact_match"
    assert data.choose_scoring(TextSource("x")) == "perplexity"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Positive", "positive"),
        ("  POSITIVE!  ", "positive"),
        ("The answer is: a cat.", "answer is cat"),
        ("An apple, the  banana", "apple banana"),
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert data.normalize(text) == expected


@pytest.mark.parametrize(
    "pred, answer, same",
    [
        ("positive", "positive", True),
        ("Positive.", "positive", True),
        ("the Positive!", "positive", True),
        ("  negative ", "Negative", True),
        ("a blue car", "Blue car", True),
        ("positive", "negative", False),
        ("positive negative", "positive", False),
        ("", "positive", False),
    ],
)
def test_exact_match(pred, answer, same):
    assert data.exact_match(pred, answer) is same


def test_closed_answers_rule():
    """A closed set: at most 8 labels, each seen at least 5 times in training, all short single lines."""
    assert closed_answers(load_task("sentiment").train) == ["negative", "positive"]
    assert closed_answers(load_task("dates").train) is None  # 399 distinct answers in 400
    assert closed_answers(TextSource("some text")) is None
    yes_no = [Example(f"q{i}", "Yes" if i % 3 else "yes.") for i in range(12)] + [Example("q", "no")] * 5
    assert closed_answers(yes_no) == ["Yes", "no"]  # one label per normalised answer, its commonest spelling
    assert closed_answers(yes_no + [Example("q", "maybe")] * 4) is None  # a label seen 4 times: open
    nine = [Example("q", f"label {i}") for i in range(9) for _ in range(5)]
    assert closed_answers(nine) is None and closed_answers(nine[5:]) is not None
    assert closed_answers([Example("q", "one\ntwo")] * 5 + yes_no) is None
