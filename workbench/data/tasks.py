"""Tasks: a training split and an evaluation split, from the shipped tasks in data/ or the user's own
data (split by a seeded shuffle, or at the end of a text), and how each is scored.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.paths import data_dir
from workbench.data.formats import Example, TextSource, load_examples, source_name
from workbench.data.scoring import choose_scoring


@dataclass
class Task:
    name: str
    train: list[Example] | TextSource
    eval: list[Example] | TextSource
    description: str = ""
    scoring: str = "exact_match"  # or "perplexity"
    sample_prompts: list[str] = field(default_factory=list)
    skipped: int = 0  # rows left out (only with skip_bad_rows), reported, never silent
    notes: list[str] = field(default_factory=list)
    # how far one run's scores move between seeds of one setting, measured and shipped with a built-in task
    # (task.json: each score's standard deviation, the runs, where it was measured); None where not measured
    seed_spread: dict | None = None

    @property
    def kind(self) -> str:
        return "text" if isinstance(self.train, TextSource) else "instruction"

    @property
    def chat(self) -> bool:
        """Instruction data goes through the chat template; plain text is continued as it is."""
        return self.kind == "instruction"

    @property
    def prompt_template(self) -> str | None:
        """How the training prompts frame their own part, as "prefix{text}suffix" (None for plain text, or
        prompts that share no frame): a prompt outside the frame is one the adapter never learned to answer."""
        if isinstance(self.train, TextSource):
            return None
        return prompt_template([e.prompt for e in self.train])

    def eval_split(self, n: int = 0, *, preset: bool = False) -> list[Example] | TextSource:
        """The held-out examples a run scores: the first n (0: all; plain text: all of it). When n is more than
        the task has: ValueError for a number the user asked for (taking all of them quietly would score fewer
        than asked); all of them, and a note saying so (in notes, once), where n is a preset's default
        (`preset`, TrainSettings.eval_examples_from_preset), which nobody asked for."""
        if not n or isinstance(self.eval, TextSource):
            return self.eval
        note = self.preset_size_note(n)
        if note and not preset:
            raise ValueError(
                f"eval_examples: {self.name} has {len(self.eval)} held-out examples; ask for at most that many "
                "(0 = all of them)"
            )
        if note and note not in self.notes:
            self.notes.append(note)
        return self.eval[:n]

    def preset_size_note(self, n: int) -> str:
        """What a run says when a preset's eval size `n` is more than the task holds ("" when it is not)."""
        if not n or isinstance(self.eval, TextSource) or n <= len(self.eval):
            return ""
        held = len(self.eval)
        return f"eval: the preset's {n} examples, but {self.name} has {held} held-out examples: scoring all {held}"

    def wrap(self, text: str) -> str:
        """`text` in the task's prompt frame (unchanged when it is already framed or the task has none)."""
        template = self.prompt_template
        if template is None:
            return text
        prefix, suffix = template.split(TEMPLATE_SLOT)
        text = text.strip()
        if text.startswith(prefix.strip()) and text.endswith(suffix.strip()):
            return text
        return prefix + text + suffix


TEMPLATE_SLOT = "{text}"


def prompt_template(prompts: list[str]) -> str | None:
    """The frame every prompt shares around its own part: the longest common start and end, cut back to
    whole words, as "prefix{text}suffix"; None when there are fewer than two prompts or no frame."""
    if len(prompts) < 2:
        return None
    shortest = min(len(p) for p in prompts)
    prefix = os.path.commonprefix(prompts)
    if prefix and not prefix[-1].isspace():  # part of a word that varies is not the frame
        cut = max(prefix.rfind(" "), prefix.rfind("\n"))
        prefix = prefix[: cut + 1]
    suffix = os.path.commonprefix([p[::-1] for p in prompts])[::-1]
    if suffix and not suffix[0].isspace():
        cuts = [i for i in (suffix.find(" "), suffix.find("\n")) if i >= 0]
        suffix = suffix[min(cuts) :] if cuts else ""
    suffix = suffix[max(0, len(prefix) + len(suffix) - shortest) :]  # the two never overlap
    if not prefix.strip() and not suffix.strip():
        return None
    return prefix + TEMPLATE_SLOT + suffix


GENERAL_TEXT = "general/general.txt"  # under data/: the text forgetting is measured on


def general_text() -> TextSource:
    """The shipped general prose no task trains on (data/general): a fine-tuned model's loss on it, against
    its base's, is what PEFT's method comparison calls forgetting."""
    path = data_dir() / GENERAL_TEXT
    return TextSource(path.read_text(encoding="utf-8"), str(path))


def builtin_tasks() -> list[str]:
    root = data_dir()
    names = {
        p.parent.name
        for ext in ("jsonl", "txt")
        for p in root.glob(f"*/train.{ext}")
        if (p.parent / f"eval.{ext}").exists()
    }
    return sorted(names)


def _opening(passage: str, words: int = 24) -> str:
    """The first `words` words of a passage, its line breaks kept (verse and speaker names need them)."""
    out, count = [], 0
    for line in passage.splitlines():
        taken = line.split()[: words - count]
        out.append(" ".join(taken))
        count += len(taken)
        if count >= words:
            break
    return "\n".join(out).strip()


def _sample_prompts(ev: list[Example] | TextSource, n: int = 3) -> list[str]:
    if isinstance(ev, TextSource):
        # the opening of a few held-out passages (or lines, for text without blank lines) to continue
        paras = [p.strip() for p in re.split(r"\n\s*\n", ev.text) if len(p.strip()) > 40]
        if len(paras) < n:
            paras = [p.strip() for p in ev.text.split("\n") if len(p.strip()) > 20] or paras or [ev.text.strip()]
        step = max(1, len(paras) // n)
        return [_opening(p) for p in paras[::step][:n]]
    return [e.prompt for e in ev[:n]]


def load_task(name: str) -> Task:
    root = data_dir() / name
    ext = "jsonl" if (root / "train.jsonl").is_file() else "txt"
    if not (root / f"train.{ext}").is_file() or not (root / f"eval.{ext}").is_file():
        raise ValueError(f"task: unknown task {name!r}; built-in tasks are {', '.join(builtin_tasks()) or 'none'}")
    meta = {}
    if (root / "task.json").is_file():
        meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
    train, _ = load_examples(root / f"train.{ext}")
    ev, _ = load_examples(root / f"eval.{ext}")
    return Task(
        name=name,
        train=train,
        eval=ev,
        description=meta.get("description", ""),
        scoring=meta.get("scoring", choose_scoring(train)),
        sample_prompts=meta.get("sample_prompts") or _sample_prompts(ev),
        seed_spread=meta.get("seed_spread"),
    )


def _split_text(text: TextSource, eval_fraction: float) -> tuple[TextSource, TextSource]:
    """The last eval_fraction of the text (give or take half of it), cut at a paragraph, line or word
    break, is held out."""
    cut = int(len(text.text) * (1 - eval_fraction))

    def nearest(sep: str, lo: int, hi: int) -> int:
        found = [
            p
            for p in (text.text.rfind(sep, max(lo, 0), cut), text.text.find(sep, cut, hi))
            if p > 0 and text.text[:p].strip() and text.text[p:].strip()
        ]
        return min(found, key=lambda p: abs(p - cut)) if found else -1

    # the best break near the cut (the held-out share may grow or shrink by half): a paragraph, a line,
    # else a word; a break far away (a title's blank line at the top) must not move the cut there
    slack = (len(text.text) - cut) // 2
    for sep in ("\n\n", "\n", " "):
        pos = nearest(sep, cut - slack, cut + slack)
        if pos > 0:
            cut = pos
            break
    train, ev = text.text[:cut], text.text[cut:]
    if not train.strip() or not ev.strip():
        raise ValueError(
            f"data: {text.where} is too short to hold out {eval_fraction:.0%} for evaluation; "
            "give more text or an eval file"
        )
    return TextSource(train, text.where), TextSource(ev, text.where)


def load_data_task(
    source: Any,
    *,
    eval_source: Any = None,
    eval_fraction: float = 0.15,
    seed: int = 0,
    columns: str | dict | None = None,
    skip_bad_rows: bool = False,
    name: str | None = None,
) -> Task:
    """A task from the user's data: split by a seeded shuffle (instruction data) or at the end (text),
    or evaluated on a separate eval source."""
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1 (for example 0.15); got {eval_fraction!r}")
    train, skipped = load_examples(source, columns=columns, skip_bad_rows=skip_bad_rows)
    label = name or (Path(source).stem if isinstance(source, (str, Path)) else "data")
    notes = []
    if eval_source is not None:
        ev, skipped_eval = load_examples(eval_source, columns=columns, skip_bad_rows=skip_bad_rows)
        skipped += skipped_eval
        if isinstance(ev, TextSource) != isinstance(train, TextSource):
            raise ValueError(
                f"data: {source_name(eval_source)} and {source_name(source)} must be the same kind of data "
                "(both instruction rows or both plain text); give a matching eval file"
            )
    elif isinstance(train, TextSource):
        train, ev = _split_text(train, eval_fraction)
    else:
        if len(train) < 4:
            raise ValueError(
                f"data: {label} has {len(train)} examples; give at least 4 so some can be held "
                "out, or give an eval file"
            )
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(len(train) * eval_fraction))
        if n_eval >= len(train):  # nothing left to train on: the loop would fail after the weights load
            raise ValueError(
                f"eval_fraction {eval_fraction} of {label}'s {len(train)} examples leaves none to train on; "
                "lower it or give an eval file"
            )
        ev = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in order[n_eval:]]
    if skipped:
        notes.append(
            f"data: skipped {skipped} unusable row(s) of {label}"
            + (" (skip_bad_rows is on)" if skip_bad_rows else " (empty text)")
        )
    return Task(
        name=label,
        train=train,
        eval=ev,
        scoring=choose_scoring(train),
        sample_prompts=_sample_prompts(ev),
        skipped=skipped,
        notes=notes,
    )


def load_file_task(path: str | Path, eval_fraction: float = 0.15, seed: int = 0) -> Task:
    """A task from one file, split into train and eval by a seeded shuffle."""
    return load_data_task(Path(path), eval_fraction=eval_fraction, seed=seed)


def get_task(
    task: str | None,
    data: Any = None,
    seed: int = 0,
    *,
    eval_data: Any = None,
    eval_fraction: float = 0.15,
    columns: str | dict | None = None,
    skip_bad_rows: bool = False,
) -> Task:
    if data is not None:
        return load_data_task(
            data,
            eval_source=eval_data,
            eval_fraction=eval_fraction,
            seed=seed,
            columns=columns,
            skip_bad_rows=skip_bad_rows,
        )
    return load_task(task or "")


def task_for(cfg) -> Task:
    """The task a RunConfig trains and scores on: its built-in task, or its data file with its eval file
    (or held-out fraction), column map and bad-row rule. Everything that needs a run's task calls this."""
    return get_task(
        cfg.task,
        cfg.data,
        seed=cfg.held_out_seed,
        eval_data=cfg.eval_data,
        eval_fraction=cfg.eval_fraction,
        columns=cfg.columns,
        skip_bad_rows=cfg.skip_bad_rows,
    )
