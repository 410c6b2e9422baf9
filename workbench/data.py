"""Tasks and datasets: load, split, tokenise with the chat template, collate, score."""

from __future__ import annotations

import json
import os
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import torch

IGNORE_INDEX = -100  # label value the loss skips: prompt tokens and padding


def data_dir() -> Path:
    """The shipped data/ folder (beside the package in a source checkout), or $WORKBENCH_DATA."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


@dataclass
class Example:
    prompt: str
    answer: str


@dataclass
class Task:
    name: str
    train: list[Example]
    eval: list[Example]
    description: str = ""
    scoring: str = "exact_match"
    sample_prompts: list[str] = field(default_factory=list)


def builtin_tasks() -> list[str]:
    root = data_dir()
    return sorted(p.parent.name for p in root.glob("*/train.jsonl") if (p.parent / "eval.jsonl").exists())


def read_jsonl(path: Path) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data: {path} does not exist; give the path of a JSONL file with prompt and answer fields")
    rows: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"data: {path} line {lineno} is not valid JSON ({exc.msg}); fix or remove that line")
            prompt = obj.get("prompt", obj.get("instruction"))
            answer = obj.get("answer", obj.get("response", obj.get("output")))
            if not isinstance(prompt, str) or not isinstance(answer, str):
                raise ValueError(f"data: {path} line {lineno} needs string fields 'prompt' and 'answer'")
            if not answer.strip():
                raise ValueError(f"data: {path} line {lineno} has an empty answer; fill it in or remove the row")
            rows.append(Example(prompt, answer))
    if not rows:
        raise ValueError(f"data: {path} holds no examples; add JSONL rows with prompt and answer fields")
    return rows


def load_task(name: str) -> Task:
    root = data_dir() / name
    if not (root / "train.jsonl").is_file():
        raise ValueError(f"task: unknown task {name!r}; built-in tasks are {', '.join(builtin_tasks()) or 'none'}")
    meta = {}
    if (root / "task.json").is_file():
        meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
    task = Task(name=name, train=read_jsonl(root / "train.jsonl"), eval=read_jsonl(root / "eval.jsonl"),
                description=meta.get("description", ""), sample_prompts=meta.get("sample_prompts", []))
    if not task.sample_prompts:
        task.sample_prompts = [e.prompt for e in task.eval[:3]]
    return task


def load_file_task(path: str | Path, eval_fraction: float = 0.15, seed: int = 0) -> Task:
    """A task from one JSONL file, split into train and eval by a seeded shuffle."""
    rows = read_jsonl(Path(path))
    if len(rows) < 4:
        raise ValueError(f"data: {path} has {len(rows)} examples; give at least 4 so some can be held out")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * eval_fraction))
    ev = [rows[i] for i in order[:n_eval]]
    tr = [rows[i] for i in order[n_eval:]]
    return Task(name=Path(path).stem, train=tr, eval=ev, sample_prompts=[e.prompt for e in ev[:3]])


def get_task(task: str | None, data: str | None, seed: int = 0) -> Task:
    return load_file_task(data, seed=seed) if data else load_task(task or "")


# --------------------------------------------------------------------------- tokenising


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it: wrapped in the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


def answer_suffix(tokenizer) -> str:
    """What closes an answer: the end-of-turn token the template writes (or EOS)."""
    return tokenizer.eos_token or ""


def encode_example(tokenizer, ex: Example, seq_len: int) -> dict:
    """input_ids and labels; labels are IGNORE_INDEX on the prompt, so loss is on answer tokens only."""
    p_ids = tokenizer(prompt_text(tokenizer, ex.prompt), add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(ex.answer + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    ids = (p_ids + a_ids)[:seq_len]
    labels = ([IGNORE_INDEX] * len(p_ids) + a_ids)[:seq_len]
    return {"input_ids": ids, "labels": labels}


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


# --------------------------------------------------------------------------- scoring

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    return normalize(prediction) == normalize(answer)
