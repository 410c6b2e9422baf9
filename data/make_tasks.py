"""Regenerate the built-in tasks in data/ (deterministic: the same files every time).

    python data/make_tasks.py

Every sentence is assembled from the word lists below, written for this project; nothing is
downloaded. Eval uses subjects (and some phrases) that training never shows, so the eval split measures whether the
model learned the task rather than remembered the training sentences.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

TRAIN_SUBJECTS = [
    "pizza", "hotel room", "phone", "movie", "concert", "laptop", "haircut", "train ride",
    "museum tour", "coffee", "sofa", "novel", "video game", "taxi driver", "bakery", "gym",
    "headphones", "dentist", "theme park", "restaurant", "backpack", "camera", "bicycle",
    "yoga class", "pasta", "printer", "hostel", "podcast", "sneakers", "ice cream",
]
EVAL_SUBJECTS = [
    "burger", "guesthouse", "tablet", "documentary", "festival", "keyboard", "barber",
    "ferry", "art gallery", "tea", "mattress", "comic book", "board game", "airline",
]
POSITIVE = [
    "was wonderful", "was excellent", "exceeded my expectations", "made my day",
    "was worth every penny", "was a real delight", "was fantastic", "works perfectly",
    "was friendly and fast", "left me smiling", "was better than I hoped", "was superb",
    "felt like great value", "was a pleasant surprise", "I would recommend to anyone",
]
NEGATIVE = [
    "was terrible", "was a waste of money", "broke after two days", "ruined my evening",
    "was awful", "was a huge disappointment", "was rude and slow", "left me angry",
    "was worse than I feared", "never worked properly", "was overpriced junk",
    "was dirty and noisy", "I would not recommend to anyone", "made me want a refund",
    "was a nightmare",
]
# phrases seen only in the eval split: scoring them needs the sense of the words, not recall
EVAL_POSITIVE = ["was lovely", "was brilliant", "made me very happy", "was a joy to use"]
EVAL_NEGATIVE = ["was horrible", "was a disaster", "made me very sad", "was painful to use"]
OPENERS = ["", "Honestly, ", "Well, ", "To be fair, ", "I have to say, ", "Last week "]
TEMPLATES = [
    "{opener}the {subject} {phrase}.",
    "{opener}this {subject} {phrase}.",
    "{opener}our {subject} {phrase}!",
    "{opener}my {subject} {phrase}.",
]
PROMPT = "Review: {review}\nIs this review positive or negative?"


def review(rng: random.Random, subject: str, phrase: str) -> str:
    opener = rng.choice(OPENERS)
    if phrase.startswith("I would"):
        text = f"{opener}the {subject} is one {phrase}."
    else:
        text = rng.choice(TEMPLATES).format(opener=opener, subject=subject, phrase=phrase)
    return text[0].upper() + text[1:]


def make_sentiment(rng: random.Random, subjects: list[str], pos: list[str], neg: list[str], n: int) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < n:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        phrase = rng.choice(pos if label == "positive" else neg)
        text = review(rng, rng.choice(subjects), phrase)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"prompt": PROMPT.format(review=text), "answer": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(1234)
    write_jsonl(HERE / "sentiment" / "train.jsonl", make_sentiment(rng, TRAIN_SUBJECTS, POSITIVE, NEGATIVE, 400))
    write_jsonl(HERE / "sentiment" / "eval.jsonl", make_sentiment(rng, EVAL_SUBJECTS, POSITIVE + EVAL_POSITIVE, NEGATIVE + EVAL_NEGATIVE, 60))


if __name__ == "__main__":
    main()
