"""Tokenising: prompts through the chat template, answer-only labels, plain text in blocks; batches
padded for training; and what the model will see (length reports and a preview), before training.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from workbench.data.formats import Example, TextSource
from workbench.data.tasks import Task

IGNORE_INDEX = -100  # label value the loss skips: prompt tokens and padding


def prompt_text(tokenizer, prompt: str, history: list[dict] | None = None, chat: bool = True) -> str:
    """The prompt as the model sees it: wrapped in the chat template when the tokenizer has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = list(history or []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not chat:
        return prompt
    return prompt + "\n"


def answer_suffix(tokenizer) -> str:
    """What closes an answer: the end-of-turn token the template writes (or EOS)."""
    return tokenizer.eos_token or ""


def prompt_answer_ids(tokenizer, ex: Example) -> tuple[list[int], list[int]]:
    """Token ids of the templated prompt and of the answer with its end-of-turn token."""
    p_ids = tokenizer(prompt_text(tokenizer, ex.prompt, ex.history), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(ex.answer + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    return p_ids, a_ids


def _cut(p_ids: list[int], a_ids: list[int], seq_len: int) -> dict:
    ids = (p_ids + a_ids)[:seq_len]
    labels = ([IGNORE_INDEX] * len(p_ids) + a_ids)[:seq_len]
    return {"input_ids": ids, "labels": labels}


def encode_example(tokenizer, ex: Example, seq_len: int) -> dict:
    """input_ids and labels; labels are IGNORE_INDEX on the prompt, so loss is on answer tokens only."""
    return _cut(*prompt_answer_ids(tokenizer, ex), seq_len)


def text_blocks(tokenizer, text: TextSource, seq_len: int) -> list[dict]:
    """Plain text -> consecutive seq_len-token blocks, loss on every token (the last short block kept
    when it has at least a quarter of seq_len tokens)."""
    ids = tokenizer(text.text, add_special_tokens=False)["input_ids"]
    blocks = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    if len(blocks) > 1 and len(blocks[-1]) < seq_len // 4:
        blocks.pop()
    return [{"input_ids": b, "labels": list(b)} for b in blocks if len(b) > 1]


@dataclass
class Encoded:
    """A split tokenised once at seq_len: the rows training and evaluation read, and, for instruction
    data, each example's prompt and answer length before cutting (for the length report)."""

    rows: list[dict]
    seq_len: int
    lengths: list[tuple[Example, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def longest(self) -> int:
        """The longest row after cutting: the width of a batch that holds it."""
        return max((len(r["input_ids"]) for r in self.rows), default=0)

    @property
    def most_scored(self) -> int:
        """The most positions a loss reads in one row: its labelled next tokens."""
        return max((sum(lab != IGNORE_INDEX for lab in r["labels"][1:]) for r in self.rows), default=0)

    def trainable(self) -> list[dict]:
        """Rows with at least one answer token left to learn from (a prompt that fills seq_len has none)."""
        return [r for r in self.rows if any(lab != IGNORE_INDEX for lab in r["labels"])]

    def length_messages(self) -> list[str]:
        """What length_report says: examples longer than seq_len, and what to do."""
        return _length_messages(self.lengths, self.seq_len)


def encode(tokenizer, split: list[Example] | TextSource | Encoded, seq_len: int) -> Encoded:
    """Tokenise a split once (an Encoded split is passed through when its seq_len matches)."""
    if isinstance(split, Encoded):
        if split.seq_len != seq_len:
            raise ValueError(f"seq_len: the split was encoded at {split.seq_len} tokens, not {seq_len}")
        return split
    if isinstance(split, TextSource):
        return Encoded(text_blocks(tokenizer, split, seq_len), seq_len)
    rows, lengths = [], []
    for ex in split:
        p_ids, a_ids = prompt_answer_ids(tokenizer, ex)
        lengths.append((ex, len(p_ids), len(a_ids)))
        rows.append(_cut(p_ids, a_ids, seq_len))
    return Encoded(rows, seq_len, lengths)


def encode_split(tokenizer, split: list[Example] | TextSource, seq_len: int) -> list[dict]:
    """The rows of encode(): input_ids and labels per example or text block."""
    return encode(tokenizer, split, seq_len).rows


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training/loss."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_report(tokenizer, split: list[Example] | TextSource | Encoded, seq_len: int) -> list[str]:
    """Messages about examples that do not fit in seq_len: how many, where the first is, what to do."""
    return encode(tokenizer, split, seq_len).length_messages()


def _length_messages(lengths: list[tuple[Example, int, int]], seq_len: int) -> list[str]:
    """(example, prompt tokens, answer tokens) rows -> the message length_report gives."""
    long, cut_whole, first, longest = 0, 0, "", 0
    for ex, p, a in lengths:
        longest = max(longest, p + a)
        if p + a > seq_len:
            long += 1
            first = first or ex.where
            cut_whole += p >= seq_len
    if not long:
        return []
    msg = (
        f"data: {long} of {len(lengths)} examples are longer than seq_len {seq_len} tokens (longest {longest}"
        + (f", first at {first}" if first else "")
        + ") and will be cut"
    )
    if cut_whole:
        msg += f"; {cut_whole} lose their whole answer and are skipped in training"
    return [msg + f"; raise seq_len to {longest} to keep them whole"]


@dataclass
class Preview:
    """What the model will see: a few examples as templated and tokenised, and length statistics."""

    task: str
    kind: str
    scoring: str
    seq_len: int
    examples: list[dict]
    stats: dict
    notes: list[str]

    def to_text(self) -> str:
        s = self.stats
        lines = [
            f"task {self.task}: {self.kind} data, scored by {self.scoring.replace('_', ' ')}",
            f"train {s['train']} {s['unit']}, eval {s['eval']} {s['unit']}; tokens per example: "
            f"min {s['min']}, median {s['median']}, 90th percentile {s['p90']}, max {s['max']}; "
            f"{s['truncated']} of {s['train']} longer than seq_len {self.seq_len}",
        ]
        for i, ex in enumerate(self.examples, 1):
            lines.append(
                f"\n--- example {i}: {ex['prompt_tokens']} prompt tokens + {ex['answer_tokens']} "
                f"answer tokens{' (cut at seq_len)' if ex['truncated'] else ''}"
            )
            if ex["prompt"]:
                lines.append("[prompt, no loss]\n" + ex["prompt"])
            lines.append("[answer, trained on]\n" + ex["answer"])
        lines += ["", *self.notes] if self.notes else []
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def preview(tokenizer, task: Task, seq_len: int = 128, n: int = 3) -> Preview:
    """Examples exactly as tokenised and templated (prompt and answer parts marked), with statistics."""
    lengths: list[tuple[Example, int, int]] = []
    if isinstance(task.train, TextSource):
        rows = text_blocks(tokenizer, task.train, seq_len)
        full = [len(r["input_ids"]) for r in rows]
        examples = [
            {
                "prompt": "",
                "answer": tokenizer.decode(r["input_ids"]),
                "prompt_tokens": 0,
                "answer_tokens": len(r["input_ids"]),
                "truncated": False,
            }
            for r in rows[:n]
        ]
        unit, n_eval = "blocks", len(encode_split(tokenizer, task.eval, seq_len))
        truncated = 0
    else:
        full, examples, truncated = [], [], 0
        for ex in task.train:
            p_ids, a_ids = prompt_answer_ids(tokenizer, ex)
            lengths.append((ex, len(p_ids), len(a_ids)))
            full.append(len(p_ids) + len(a_ids))
            truncated += len(p_ids) + len(a_ids) > seq_len
            if len(examples) < n:
                examples.append(
                    {
                        "prompt": tokenizer.decode(p_ids),
                        "answer": tokenizer.decode(a_ids),
                        "prompt_tokens": len(p_ids),
                        "answer_tokens": len(a_ids),
                        "truncated": len(p_ids) + len(a_ids) > seq_len,
                    }
                )
        unit, n_eval = "examples", len(task.eval)
    ordered = sorted(full)
    stats = {
        "train": len(full),
        "eval": n_eval,
        "unit": unit,
        "min": ordered[0],
        "max": ordered[-1],
        "median": int(statistics.median(ordered)),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "truncated": truncated,
        "histogram": _histogram(ordered),
    }
    notes = list(task.notes) + _length_messages(lengths, seq_len)
    return Preview(task.name, task.kind, task.scoring, seq_len, examples, stats, notes)


def _histogram(lengths: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(from, to, count) buckets of token lengths, for a bar chart."""
    lo, hi = lengths[0], lengths[-1]
    width = max(1, -(-(hi - lo + 1) // bins))
    out = []
    for start in range(lo, hi + 1, width):
        out.append((start, start + width - 1, sum(start <= x < start + width for x in lengths)))
    return out
