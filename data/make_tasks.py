"""Regenerate the built-in tasks in data/ (deterministic: the same files every time).

    python data/make_tasks.py

Every sentence is assembled from the word lists below, written for this project; nothing is
downloaded. Eval uses subjects (and some phrases) that training never shows, so the eval split measures whether the
model learned the task rather than remembered the training sentences.

Two tasks: sentiment (a review -> positive/negative) and dates (a date in words -> YYYY-MM-DD, eval years
from decades training never shows). Each has its own seeded generator, so adding one never changes the other.
"""

import calendar
import datetime
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).parent

TRAIN_SUBJECTS = [
    "pizza",
    "hotel room",
    "phone",
    "movie",
    "concert",
    "laptop",
    "haircut",
    "train ride",
    "museum tour",
    "coffee",
    "sofa",
    "novel",
    "video game",
    "taxi driver",
    "bakery",
    "gym",
    "headphones",
    "dentist",
    "theme park",
    "restaurant",
    "backpack",
    "camera",
    "bicycle",
    "yoga class",
    "pasta",
    "printer",
    "hostel",
    "podcast",
    "sneakers",
    "ice cream",
]
EVAL_SUBJECTS = [
    "burger",
    "guesthouse",
    "tablet",
    "documentary",
    "festival",
    "keyboard",
    "barber",
    "ferry",
    "art gallery",
    "tea",
    "mattress",
    "comic book",
    "board game",
    "airline",
]
POSITIVE = [
    "was wonderful",
    "was excellent",
    "exceeded my expectations",
    "made my day",
    "was worth every penny",
    "was a real delight",
    "was fantastic",
    "works perfectly",
    "was friendly and fast",
    "left me smiling",
    "was better than I hoped",
    "was superb",
    "felt like great value",
    "was a pleasant surprise",
    "I would recommend to anyone",
]
NEGATIVE = [
    "was terrible",
    "was a waste of money",
    "broke after two days",
    "ruined my evening",
    "was awful",
    "was a huge disappointment",
    "was rude and slow",
    "left me angry",
    "was worse than I feared",
    "never worked properly",
    "was overpriced junk",
    "was dirty and noisy",
    "I would not recommend to anyone",
    "made me want a refund",
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
# held-out examples per task: near 80% accuracy, 600 examples resolve gaps of about 7 points between two
# settings (80% power, alpha 0.05; workbench.core.stats.resolvable_gap), where the first 60 (all the eval split held
# before) resolved only about 23
EVAL_SIZE = 600
PROMPT = "Review: {review}\nIs this review positive or negative?"


def review(rng: random.Random, subject: str, phrase: str) -> str:
    opener = rng.choice(OPENERS)
    if phrase.startswith("I would"):
        text = f"{opener}the {subject} is one {phrase}."
    else:
        text = rng.choice(TEMPLATES).format(opener=opener, subject=subject, phrase=phrase)
    return text[0].upper() + text[1:]


def make_sentiment(
    rng: random.Random, subjects: list[str], pos: list[str], neg: list[str], n: int, seen: set | None = None
) -> list[dict]:
    """n new rows; `seen`: prompts already used (then they are added to it), so a second call never repeats one."""
    rows, seen = [], set() if seen is None else seen
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


# --------------------------------------------------------------------------- dates
# A format skill: rewrite a date written in words into ISO 8601 (YYYY-MM-DD). Years run from 1700 to 2199;
# seven whole decades are eval-only, so no eval year (and no eval date) is ever shown in training and eval
# measures the rewrite, not recall.

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
EVAL_DECADES = [1760, 1830, 1890, 1950, 2010, 2070, 2140]
EVAL_YEARS = [y for decade in EVAL_DECADES for y in range(decade, decade + 10)]
TRAIN_YEARS = [y for y in range(1700, 2200) if y not in EVAL_YEARS]
# Short on purpose: with the SmolLM2 chat template (30 tokens before the user's text) and the answer's 11
# tokens (one per digit or dash, and end-of-turn), the longest row is exactly 64 tokens, the cpu-demo seq_len.
# A longer wording ("Write this date as YYYY-MM-DD: ...") cuts the end-of-turn token off the longest rows.
DATE_PROMPT = "ISO 8601 date: {date}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


DATE_FORMS = [
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",  # March 5, 2021
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",  # 5 March 2021
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",  # the 5th of March, 2021
    lambda d: f"{MONTH_ABBR[d.month - 1]} {ordinal(d.day)}, {d.year}",  # Mar 5th, 2021
    lambda d: f"{d.day} {MONTH_ABBR[d.month - 1]} {d.year}",  # 5 Mar 2021
    lambda d: f"{MONTHS[d.month - 1]} {ordinal(d.day)} {d.year}",  # March 5th 2021
    lambda d: f"{d.day}/{d.month}/{d.year} (day first)",  # 5/3/2021 (day first)
    lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",  # Friday, 5 March 2021
]


def make_dates(rng: random.Random, years: list[int], n: int, seen: set | None = None) -> list[dict]:
    """n new rows; `seen`: prompts already used (then they are added to it), so a second call never repeats one."""
    rows, seen = [], set() if seen is None else seen
    while len(rows) < n:
        year, month = rng.choice(years), rng.randint(1, 12)
        day = rng.randint(1, calendar.monthrange(year, month)[1])
        d = datetime.date(year, month, day)
        form = DATE_FORMS[len(rows) % len(DATE_FORMS)]
        prompt = DATE_PROMPT.format(date=form(d))
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "answer": d.isoformat()})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_task_json(path: Path, description: str, sample_prompts: list[str]) -> None:
    """task.json: what workbench.data.load_task shows as the task's description and sample prompts. A measured
    seed_spread already there is kept: it comes from trained runs (docs/statistics.md), not from this script."""
    meta = {"description": description, "sample_prompts": sample_prompts}
    if path.is_file() and "seed_spread" in (old := json.loads(path.read_text(encoding="utf-8"))):
        meta["seed_spread"] = old["seed_spread"]
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    rng = random.Random(1234)
    write_jsonl(HERE / "sentiment" / "train.jsonl", make_sentiment(rng, TRAIN_SUBJECTS, POSITIVE, NEGATIVE, 400))
    seen: set = set()
    eval_pos, eval_neg = POSITIVE + EVAL_POSITIVE, NEGATIVE + EVAL_NEGATIVE
    sentiment_eval = make_sentiment(rng, EVAL_SUBJECTS, eval_pos, eval_neg, 60, seen)
    # EVAL_SIZE in all, drawn after the first 60 so those stay the rows every earlier run was scored on
    sentiment_eval += make_sentiment(rng, EVAL_SUBJECTS, eval_pos, eval_neg, EVAL_SIZE - 60, seen)
    write_jsonl(HERE / "sentiment" / "eval.jsonl", sentiment_eval)
    write_task_json(
        HERE / "sentiment" / "task.json",
        "Short product/service reviews labelled positive or negative; scored by exact match. "
        "Eval uses subjects and phrases that training never shows.",
        [row["prompt"] for row in sentiment_eval[:3]],
    )

    rng = random.Random(20240305)  # its own generator, so the sentiment files above stay as they were
    write_jsonl(HERE / "dates" / "train.jsonl", make_dates(rng, TRAIN_YEARS, 400))
    seen = set()
    dates_eval = make_dates(rng, EVAL_YEARS, 60, seen)
    dates_eval += make_dates(rng, EVAL_YEARS, EVAL_SIZE - 60, seen)  # as for sentiment: the first 60 kept
    write_jsonl(HERE / "dates" / "eval.jsonl", dates_eval)
    # one eval prompt each in three different surface forms
    samples = [
        next(row["prompt"] for row in dates_eval if re.search(form, row["prompt"]))
        for form in (r": the \d+\w\w of ", r"\(day first\)$", r": [A-Z][a-z]{2} \d+\w\w, \d{4}$")
    ]
    write_task_json(
        HERE / "dates" / "task.json",
        "Rewrite a date written in words (March 5, 2021; the 5th of March, 2021; 5/3/2021 day first; "
        "...) as ISO 8601 YYYY-MM-DD; scored by exact match. Eval years come from decades that "
        "training never shows.",
        samples,
    )


if __name__ == "__main__":
    main()
