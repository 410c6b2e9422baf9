"""Scoring: exact match of short answers after normalisation, and which score a task gets."""

from __future__ import annotations

import re
import string
from collections import Counter

from workbench.data.formats import Example, TextSource

# exact match is a fair score only when answers are short; longer ones are scored by perplexity
SHORT_ANSWER_WORDS = 8

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    return normalize(prediction) == normalize(answer)


def choose_scoring(train: list[Example] | TextSource) -> str:
    """Exact match when answers are short labels or phrases; perplexity for long answers and text."""
    if isinstance(train, TextSource):
        return "perplexity"
    longest = max(len(e.answer.split()) for e in train)
    return "exact_match" if longest <= SHORT_ANSWER_WORDS else "perplexity"


# A closed set of answers: at most this many distinct labels (after normalisation), each given at least
# CLOSED_SET_SEEN times in training. A label seen once or twice says the answers are open (dates: 399 distinct of
# 400) and the next held-out answer may be none of them; picking among a handful, each learned several times,
# is what a classifier's labels look like (sentiment: 2, each about 200 times).
CLOSED_SET_MAX = 8
CLOSED_SET_SEEN = 5


def closed_answers(train: list[Example] | TextSource) -> list[str] | None:
    """The labels of a task whose every training answer is one of a few (the most common spelling of each, in
    sorted order), or None where the answers are open, long, or text: closed-set scoring then picks the most
    likely label instead of generating (generate.evaluate's `choices`)."""
    if isinstance(train, TextSource) or not train or choose_scoring(train) != "exact_match":
        return None
    spellings: dict[str, Counter] = {}
    for e in train:
        if "\n" in e.answer.strip():
            return None
        spellings.setdefault(normalize(e.answer), Counter())[e.answer.strip()] += 1
    if len(spellings) > CLOSED_SET_MAX or any(sum(c.values()) < CLOSED_SET_SEEN for c in spellings.values()):
        return None
    return sorted(c.most_common(1)[0][0] for c in spellings.values())
