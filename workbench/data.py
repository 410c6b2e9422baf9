"""Tasks and datasets: read the formats people have, split, tokenise with the chat template,
collate, score, and preview what the model will see.

Two kinds of data:
- instruction data (prompt -> answer): Alpaca's instruction/input/output, prompt/response (or
  completion or answer), or chat `messages`; from JSONL, JSON, CSV, a pandas DataFrame, a
  `datasets.Dataset` or a list of dicts. Loss on the answer tokens only.
- plain text (.txt, or a `text` column) for continued pre-training or style tuning: cut into
  blocks of seq_len tokens, loss on every token, scored by held-out perplexity.

Every problem a user can cause is a ValueError naming the file, the line or column, and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import statistics
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

IGNORE_INDEX = -100  # label value the loss skips: prompt tokens and padding

# canonical field -> names accepted for it, in order of preference
PROMPT_KEYS = ("prompt", "question", "instruction")
ANSWER_KEYS = ("answer", "response", "completion", "output")
SCHEMAS = ("prompt/answer (or response, completion), instruction/input/output, a messages list of "
           "{role, content}, or text")
# exact match is a fair score only when answers are short; longer ones are scored by perplexity
SHORT_ANSWER_WORDS = 8


def data_dir() -> Path:
    """The shipped data/ folder (beside the package in a source checkout), or $WORKBENCH_DATA."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


@dataclass
class Example:
    prompt: str
    answer: str
    history: list[dict] | None = None  # earlier chat turns (system/user/assistant) before the prompt
    where: str = field(default="", compare=False)  # "file line N", for messages about this row


@dataclass
class TextSource:
    """Plain text for continued pre-training; cut into seq_len-token blocks when tokenised."""

    text: str
    where: str = ""

    def __len__(self) -> int:
        return len(self.text)



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

    @property
    def kind(self) -> str:
        return "text" if isinstance(self.train, TextSource) else "instruction"

    @property
    def chat(self) -> bool:
        """Instruction data goes through the chat template; plain text is continued as it is."""
        return self.kind == "instruction"


# --------------------------------------------------------------------------- reading files


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ValueError(f"data: {path} does not exist; check the path")
    if path.is_dir():
        raise ValueError(f"data: {path} is a folder; give a .jsonl, .json, .csv or .txt file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"data: {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                         "re-save it as UTF-8") from None
    if not text.strip():
        raise ValueError(f"data: {path} is empty; add examples to it")
    return text


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """Rows of a JSONL, JSON (a list of objects) or CSV file, each with where it came from."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        header = text.split("\n", 1)[0]
        # Excel in many locales writes ';'-separated "CSV"; .tsv is tab-separated
        delimiter = "\t" if suffix == ".tsv" else ";" if header.count(";") > header.count(",") else ","
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        if not reader.fieldnames or not any(f and f.strip() for f in reader.fieldnames):
            raise ValueError(f"data: {path} has no header row; its first line must name the columns")
        rows = []
        for row in reader:
            if None in row:
                raise ValueError(f"data: {path} line {reader.line_num} has more cells than the header has "
                                 "columns; quote cells that contain commas")
            if any((v or "").strip() for v in row.values()):
                rows.append((f"{path} line {reader.line_num}", {k.strip(): v for k, v in row.items() if k}))
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = ("it looks like JSONL (one object per line): rename it to .jsonl"
                    if exc.msg == "Extra data" else "fix it, or use JSONL with one object per line")
            raise ValueError(f"data: {path} is not valid JSON (line {exc.lineno}: {exc.msg}); {hint}") from None
        if not isinstance(obj, list) or not all(isinstance(o, dict) for o in obj):
            raise ValueError(f"data: {path} must hold a JSON list of objects, one per example")
        return [(f"{path} item {i}", o) for i, o in enumerate(obj, 1)]
    rows = []
    # split on \n only: str.splitlines() also breaks at U+2028, U+0085 and other characters that JSON
    # strings may hold unescaped (json.dumps(..., ensure_ascii=False) writes them raw)
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"data: {path} line {lineno} is not valid JSON ({exc.msg}); fix or remove "
                             "that line") from None
        if not isinstance(obj, dict):
            raise ValueError(f"data: {path} line {lineno} is not a JSON object; each line must be one "
                             "{...} example")
        rows.append((f"{path} line {lineno}", obj))
    return rows


def _records_from_object(source: Any) -> tuple[str, list[tuple[str, dict]]]:
    """A DataFrame, a datasets.Dataset or a list of dicts -> (name, rows)."""
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas DataFrame
        return "DataFrame", [(f"DataFrame row {i}", dict(r)) for i, r in enumerate(source.to_dict("records"))]
    if hasattr(source, "column_names") and hasattr(source, "to_list"):  # datasets.Dataset
        return "Dataset", [(f"Dataset row {i}", dict(r)) for i, r in enumerate(source.to_list())]
    if isinstance(source, (list, tuple)) and all(isinstance(r, dict) for r in source):
        return "list", [(f"row {i}", dict(r)) for i, r in enumerate(source)]
    raise ValueError("data: give a file path, a pandas DataFrame, a datasets.Dataset or a list of dicts; "
                     f"got {type(source).__name__}")


def _name(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def parse_columns(spec: str | dict | None) -> dict[str, str]:
    """'prompt=question,answer=label' -> {'prompt': 'question', 'answer': 'label'}."""
    if not spec:
        return {}
    out = {}
    if isinstance(spec, dict):
        out = {str(k).strip(): str(v).strip() for k, v in spec.items()}
    else:
        for part in spec.split(","):
            if "=" not in part:
                raise ValueError(f"columns: write FIELD=COLUMN pairs such as prompt=question,answer=label; "
                                 f"got {part!r}")
            k, v = (s.strip() for s in part.split("=", 1))
            out[k] = v
    known = set(PROMPT_KEYS + ANSWER_KEYS + ("input", "messages", "text", "system"))
    bad = [k for k in out if k not in known]
    if bad:
        raise ValueError(f"columns: unknown field {', '.join(bad)}; map any of {', '.join(sorted(known))}")
    return out


def _apply_columns(rows: list[tuple[str, dict]], columns: dict[str, str], name: str) -> list[tuple[str, dict]]:
    if not columns:
        return rows
    present = set().union(*(r.keys() for _, r in rows)) if rows else set()
    missing = [c for c in columns.values() if c not in present]
    if missing:
        raise ValueError(f"columns: {name} has no column {', '.join(map(repr, missing))}; its columns are "
                         f"{', '.join(sorted(present))}")
    out = []
    for where, src in rows:
        # a row without a mapped column (JSONL rows may differ) is left for the row checks to name
        r = {k: v for k, v in src.items() if k not in columns.values()}
        for canonical, actual in columns.items():
            # an explicit mapping wins over a column that merely has a known name
            family = PROMPT_KEYS if canonical in PROMPT_KEYS else ANSWER_KEYS if canonical in ANSWER_KEYS else ()
            for other in family:
                if other != canonical and other not in columns:
                    r.pop(other, None)
            if actual in src:
                r[canonical] = src[actual]
        out.append((where, r))
    return out


def _schema(keys: set[str] | dict, name: str) -> str:
    if "messages" in keys:
        return "messages"
    if any(k in keys for k in PROMPT_KEYS) and any(k in keys for k in ANSWER_KEYS):
        return "prompt"
    if "text" in keys:
        return "text"
    raise ValueError(f"data: {name} has columns {', '.join(sorted(keys)) or '(none)'} but needs {SCHEMAS}; "
                     "rename them, or map them with --columns prompt=COLUMN,answer=COLUMN")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from pandas
        return ""
    if isinstance(value, float) and value.is_integer():  # pandas stores int columns with gaps as float
        return str(int(value))
    return str(value)


def _to_example(schema: str, where: str, r: dict) -> Example:
    """One row -> Example; raises ValueError(message) when the row cannot be used."""
    if schema == "messages":
        msgs = r.get("messages")
        if isinstance(msgs, str):
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                raise ValueError(f"data: {where}: messages is not a JSON list; write it as "
                                 '[{"role": "user", "content": "..."}, ...]') from None
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise ValueError(f"data: {where}: messages must be a list of {{role, content}} objects")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
            raise ValueError(f"data: {where}: messages must end with a user turn followed by the assistant "
                             "answer to learn")
        answer = _cell(msgs[-1]["content"])
        prompt = _cell(msgs[-2]["content"])
        history = [{"role": m["role"], "content": _cell(m["content"])} for m in msgs[:-2]] or None
        ex = Example(prompt, answer, history, where)
    else:  # prompt/answer, Alpaca's instruction/input/output, or a mix of their names
        prompt = next((_cell(r[k]) for k in PROMPT_KEYS if k in r), "").strip()
        extra = _cell(r.get("input")).strip()
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        answer = next((_cell(r[k]) for k in ANSWER_KEYS if k in r), "")
        system = _cell(r.get("system")).strip()
        ex = Example(prompt, answer, [{"role": "system", "content": system}] if system else None, where)
    if not ex.prompt.strip():
        raise ValueError(f"data: {where} has an empty prompt; fill it in or remove the row")
    if not ex.answer.strip():
        raise ValueError(f"data: {where} has an empty answer; fill it in or remove the row")
    return ex


def examples_from_rows(rows: list[tuple[str, dict]], name: str, *, skip_bad_rows: bool = False
                       ) -> tuple[list[Example] | TextSource, int]:
    """Rows -> examples (or one TextSource for a text column); returns (data, rows skipped)."""
    if not rows:
        raise ValueError(f"data: {name} holds no examples; add rows to it")
    keys: set[str] = set().union(*(r.keys() for _, r in rows))
    schema = _schema(keys, name)
    if schema == "text":
        parts = [_cell(r.get("text")) for _, r in rows]
        if not any(p.strip() for p in parts):
            raise ValueError(f"data: {name} has a text column but every cell is empty")
        return TextSource("\n\n".join(p for p in parts if p.strip()), name), sum(1 for p in parts if not p.strip())
    out, skipped = [], 0
    for where, r in rows:
        try:
            out.append(_to_example(_schema(r, where), where, r))
        except ValueError:
            if not skip_bad_rows:
                raise
            skipped += 1
    if not out:
        raise ValueError(f"data: {name}: every row was unusable; fix the rows")
    return out, skipped


def load_examples(source: Any, *, columns: str | dict | None = None, skip_bad_rows: bool = False
                  ) -> tuple[list[Example] | TextSource, int]:
    """Any supported source -> (examples or TextSource, rows skipped)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() == ".txt":
            return TextSource(_read_text(path), str(path)), 0
        if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
            if not path.exists():
                raise ValueError(f"data: {path} does not exist; check the path")
            raise ValueError(f"data: {path} has an unknown extension; use .jsonl, .json, .csv, .tsv or .txt")
        name, rows = str(path), read_records(path)
    else:
        name, rows = _records_from_object(source)
    rows = _apply_columns(rows, parse_columns(columns), name)
    return examples_from_rows(rows, name, skip_bad_rows=skip_bad_rows)


def read_jsonl(path: Path) -> list[Example]:
    """A JSONL file of instruction rows -> examples (errors on any bad row)."""
    examples, _ = load_examples(Path(path))
    if isinstance(examples, TextSource):
        raise ValueError(f"data: {path} holds plain text; it needs prompt and answer fields")
    return examples


# --------------------------------------------------------------------------- tasks


def builtin_tasks() -> list[str]:
    root = data_dir()
    names = {p.parent.name for ext in ("jsonl", "txt") for p in root.glob(f"*/train.{ext}")
             if (p.parent / f"eval.{ext}").exists()}
    return sorted(names)


def choose_scoring(train: list[Example] | TextSource) -> str:
    """Exact match when answers are short labels or phrases; perplexity for long answers and text."""
    if isinstance(train, TextSource):
        return "perplexity"
    longest = max(len(e.answer.split()) for e in train)
    return "exact_match" if longest <= SHORT_ANSWER_WORDS else "perplexity"


def _opening(passage: str, words: int = 24) -> str:
    """The first `words` words of a passage, its line breaks kept (verse and speaker names need them)."""
    out, count = [], 0
    for line in passage.splitlines():
        taken = line.split()[:words - count]
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
    return Task(name=name, train=train, eval=ev, description=meta.get("description", ""),
                scoring=meta.get("scoring", choose_scoring(train)),
                sample_prompts=meta.get("sample_prompts") or _sample_prompts(ev))


def _split_text(text: TextSource, eval_fraction: float) -> tuple[TextSource, TextSource]:
    """The last eval_fraction of the text (give or take half of it), cut at a paragraph, line or word
    break, is held out."""
    cut = int(len(text.text) * (1 - eval_fraction))

    def nearest(sep: str, lo: int, hi: int) -> int:
        found = [p for p in (text.text.rfind(sep, max(lo, 0), cut), text.text.find(sep, cut, hi))
                 if p > 0 and text.text[:p].strip() and text.text[p:].strip()]
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
        raise ValueError(f"data: {text.where} is too short to hold out {eval_fraction:.0%} for evaluation; "
                         "give more text or an eval file")
    return TextSource(train, text.where), TextSource(ev, text.where)


def load_data_task(source: Any, *, eval_source: Any = None, eval_fraction: float = 0.15, seed: int = 0,
                   columns: str | dict | None = None, skip_bad_rows: bool = False,
                   name: str | None = None) -> Task:
    """A task from the user's data: split by a seeded shuffle (instruction data) or at the end (text),
    or evaluated on a separate eval source."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1 (for example 0.15); got {eval_fraction}")
    train, skipped = load_examples(source, columns=columns, skip_bad_rows=skip_bad_rows)
    label = name or (Path(source).stem if isinstance(source, (str, Path)) else "data")
    notes = []
    if eval_source is not None:
        ev, skipped_eval = load_examples(eval_source, columns=columns, skip_bad_rows=skip_bad_rows)
        skipped += skipped_eval
        if isinstance(ev, TextSource) != isinstance(train, TextSource):
            raise ValueError(f"data: {_name(eval_source)} and {_name(source)} must be the same kind of data "
                             "(both instruction rows or both plain text); give a matching eval file")
    elif isinstance(train, TextSource):
        train, ev = _split_text(train, eval_fraction)
    else:
        if len(train) < 4:
            raise ValueError(f"data: {label} has {len(train)} examples; give at least 4 so some can be held "
                             "out, or give an eval file")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(len(train) * eval_fraction))
        ev = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in order[n_eval:]]
    if skipped:
        notes.append(f"data: skipped {skipped} unusable row(s) of {label}"
                     + (" (skip_bad_rows is on)" if skip_bad_rows else " (empty text)"))
    return Task(name=label, train=train, eval=ev, scoring=choose_scoring(train),
                sample_prompts=_sample_prompts(ev), skipped=skipped, notes=notes)


def load_file_task(path: str | Path, eval_fraction: float = 0.15, seed: int = 0) -> Task:
    """A task from one file, split into train and eval by a seeded shuffle."""
    return load_data_task(Path(path), eval_fraction=eval_fraction, seed=seed)


def get_task(task: str | None, data: Any = None, seed: int = 0, *, eval_data: Any = None,
             eval_fraction: float = 0.15, columns: str | dict | None = None, skip_bad_rows: bool = False) -> Task:
    if data is not None:
        return load_data_task(data, eval_source=eval_data, eval_fraction=eval_fraction, seed=seed,
                              columns=columns, skip_bad_rows=skip_bad_rows)
    return load_task(task or "")


# --------------------------------------------------------------------------- tokenising


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


def encode_example(tokenizer, ex: Example, seq_len: int) -> dict:
    """input_ids and labels; labels are IGNORE_INDEX on the prompt, so loss is on answer tokens only."""
    p_ids, a_ids = prompt_answer_ids(tokenizer, ex)
    ids = (p_ids + a_ids)[:seq_len]
    labels = ([IGNORE_INDEX] * len(p_ids) + a_ids)[:seq_len]
    return {"input_ids": ids, "labels": labels}


def text_blocks(tokenizer, text: TextSource, seq_len: int) -> list[dict]:
    """Plain text -> consecutive seq_len-token blocks, loss on every token (the last short block kept
    when it has at least a quarter of seq_len tokens)."""
    ids = tokenizer(text.text, add_special_tokens=False)["input_ids"]
    blocks = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    if len(blocks) > 1 and len(blocks[-1]) < seq_len // 4:
        blocks.pop()
    return [{"input_ids": b, "labels": list(b)} for b in blocks if len(b) > 1]


def encode_split(tokenizer, split: list[Example] | TextSource, seq_len: int) -> list[dict]:
    if isinstance(split, TextSource):
        return text_blocks(tokenizer, split, seq_len)
    return [encode_example(tokenizer, ex, seq_len) for ex in split]


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


# --------------------------------------------------------------------------- seeing the data


def length_report(tokenizer, split: list[Example] | TextSource, seq_len: int) -> list[str]:
    """Messages about examples that do not fit in seq_len: how many, where the first is, what to do."""
    if isinstance(split, TextSource):
        return []
    return _length_messages([(ex, *map(len, prompt_answer_ids(tokenizer, ex))) for ex in split], seq_len)


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
    msg = (f"data: {long} of {len(lengths)} examples are longer than seq_len {seq_len} tokens (longest {longest}"
           + (f", first at {first}" if first else "") + ") and will be cut")
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
        lines = [f"task {self.task}: {self.kind} data, scored by {self.scoring.replace('_', ' ')}",
                 f"train {s['train']} {s['unit']}, eval {s['eval']} {s['unit']}; tokens per example: "
                 f"min {s['min']}, median {s['median']}, 90th percentile {s['p90']}, max {s['max']}; "
                 f"{s['truncated']} of {s['train']} longer than seq_len {self.seq_len}"]
        for i, ex in enumerate(self.examples, 1):
            lines.append(f"\n--- example {i}: {ex['prompt_tokens']} prompt tokens + {ex['answer_tokens']} "
                         f"answer tokens{' (cut at seq_len)' if ex['truncated'] else ''}")
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
        examples = [{"prompt": "", "answer": tokenizer.decode(r["input_ids"]), "prompt_tokens": 0,
                     "answer_tokens": len(r["input_ids"]), "truncated": False} for r in rows[:n]]
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
                examples.append({"prompt": tokenizer.decode(p_ids), "answer": tokenizer.decode(a_ids),
                                 "prompt_tokens": len(p_ids), "answer_tokens": len(a_ids),
                                 "truncated": len(p_ids) + len(a_ids) > seq_len})
        unit, n_eval = "examples", len(task.eval)
    ordered = sorted(full)
    stats = {"train": len(full), "eval": n_eval, "unit": unit, "min": ordered[0], "max": ordered[-1],
             "median": int(statistics.median(ordered)), "p90": ordered[int(0.9 * (len(ordered) - 1))],
             "truncated": truncated, "histogram": _histogram(ordered)}
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

