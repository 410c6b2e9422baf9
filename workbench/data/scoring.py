"""Scoring: exact match of short answers after normalisation, and which score a task gets."""

from __future__ import annotations

import re
import string

from .formats import Example, TextSource

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
