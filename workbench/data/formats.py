"""Reading the formats data comes in: JSONL, JSON, CSV/TSV and plain text files, pandas DataFrames,
`datasets.Dataset`s and lists of dicts, in the shapes instruction data has (prompt/answer, Alpaca's
instruction/input/output, chat `messages`) or as plain text. Each row becomes an Example; plain text
becomes one TextSource. Every problem a user can cause is a ValueError naming the file, the line or
column, and what to do.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# canonical field -> names accepted for it, in order of preference
PROMPT_KEYS = ("prompt", "question", "instruction")
ANSWER_KEYS = ("answer", "response", "completion", "output")
SCHEMAS = (
    "prompt/answer (or response, completion), instruction/input/output, a messages list of {role, content}, or text"
)


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


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ValueError(f"data: {path} does not exist; check the path")
    if path.is_dir():
        raise ValueError(f"data: {path} is a folder; give a .jsonl, .json, .csv or .txt file")
    try:
        raw = path.read_bytes()
    except OSError as exc:  # no permission, a broken link, a FIFO...
        raise ValueError(f"data: {path} cannot be read ({exc.strerror}); check the file and its permissions") from None
    text = _decode(path, raw)
    if not text.strip():
        raise ValueError(f"data: {path} is empty; add examples to it")
    # Windows writes CRLF and Excel for Mac a bare CR: one "\n" everywhere, so no "\r" reaches the tokenizer and
    # a text's "\n\n" paragraph breaks are found
    return text.replace("\r\n", "\n").replace("\r", "\n")


# a byte-order mark names its encoding beyond doubt: Notepad's "Unicode" and Excel's "Unicode Text" are UTF-16
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"))
_BOMS += ((codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF8, "utf-8-sig"))


def _decode(path: Path, raw: bytes) -> str:
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)
    if encoding is None and b"\x00" in raw:  # UTF-8 text never holds NUL; spreadsheets, archives and UTF-16 do
        raise ValueError(
            f"data: {path} is not a text file (it holds NUL bytes: a spreadsheet, an archive, or UTF-16 without a "
            "byte-order mark); save it as UTF-8 text"
        )
    try:
        return raw.decode(encoding or "utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"data: {path} is not {(encoding or 'utf-8').upper().replace('-SIG', '')} text "
            f"(byte 0x{raw[exc.start]:02x} on line {line}); re-save it as UTF-8"
        ) from None


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """Rows of a JSONL, JSON (a list of objects) or CSV file, each with where it came from."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        header = text.split("\n", 1)[0]
        # Excel in many locales writes ';'-separated "CSV"; .tsv is tab-separated
        delimiter = "\t" if suffix == ".tsv" else ";" if header.count(";") > header.count(",") else ","
        # a cell cannot be longer than the file; csv's default cap (131,072 characters) refuses a long document
        csv.field_size_limit(max(csv.field_size_limit(), len(text)))
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        try:
            return _csv_rows(path, reader)
        except csv.Error as exc:
            raise ValueError(
                f"data: {path} line {reader.line_num} is not valid CSV ({exc}); check its quotes"
            ) from None
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except RecursionError:  # thousands of nested brackets: not data anyone meant
            raise ValueError(f"data: {path} is not valid JSON (nested too deeply); fix it") from None
        except json.JSONDecodeError as exc:
            hint = (
                "it looks like JSONL (one object per line): rename it to .jsonl"
                if exc.msg == "Extra data"
                else "fix it, or use JSONL with one object per line"
            )
            raise ValueError(f"data: {path} is not valid JSON (line {exc.lineno}: {exc.msg}); {hint}") from None
        if not isinstance(obj, list) or not all(isinstance(o, dict) for o in obj):
            raise ValueError(f"data: {path} must hold a JSON list of objects, one per example")
        return [(f"{path} item {i}", o) for i, o in enumerate(obj, 1)]
    rows = []
    # split on \n only: str.splitlines() also breaks at U+2028, U+0085 and other characters that JSON
    # strings may hold unescaped (json.dumps(..., ensure_ascii=False) writes them raw)
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.lstrip("\ufeff")  # files joined with `cat` keep each one's byte-order mark
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(
                f"data: {path} line {lineno} is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')}); "
                "fix or remove that line"
            ) from None
        if not isinstance(obj, dict):
            raise ValueError(f"data: {path} line {lineno} is not a JSON object; each line must be one {{...}} example")
        rows.append((f"{path} line {lineno}", obj))
    return rows


def _csv_rows(path: Path, reader: csv.DictReader) -> list[tuple[str, dict]]:
    if not reader.fieldnames or not any(f and f.strip() for f in reader.fieldnames):
        raise ValueError(f"data: {path} has no header row; its first line must name the columns")
    rows = []
    for row in reader:
        if None in row:
            raise ValueError(
                f"data: {path} line {reader.line_num} has more cells than the header has "
                "columns; quote cells that contain commas"
            )
        if any((v or "").strip() for v in row.values()):
            rows.append((f"{path} line {reader.line_num}", {k.strip(): v for k, v in row.items() if k}))
    return rows


def _records_from_object(source: Any) -> tuple[str, list[tuple[str, dict]]]:
    """A DataFrame, a datasets.Dataset or a list of dicts -> (name, rows)."""
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas DataFrame
        return "DataFrame", [(f"DataFrame row {i}", dict(r)) for i, r in enumerate(source.to_dict("records"))]
    if hasattr(source, "column_names") and hasattr(source, "to_list"):  # datasets.Dataset
        return "Dataset", [(f"Dataset row {i}", dict(r)) for i, r in enumerate(source.to_list())]
    if isinstance(source, (list, tuple)) and all(isinstance(r, dict) for r in source):
        return "list", [(f"row {i}", dict(r)) for i, r in enumerate(source)]
    raise ValueError(
        "data: give a file path, a pandas DataFrame, a datasets.Dataset or a list of dicts; "
        f"got {type(source).__name__}"
    )


def source_name(source: Any) -> str:
    """What a data source is called in a message: its path, or the kind of object it is."""
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
                raise ValueError(
                    f"columns: write FIELD=COLUMN pairs such as prompt=question,answer=label; got {part!r}"
                )
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
        raise ValueError(
            f"columns: {name} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(sorted(present))}"
        )
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
    raise ValueError(
        f"data: {name} has columns {', '.join(sorted(keys)) or '(none)'} but needs {SCHEMAS}; "
        "rename them, or map them with --columns prompt=COLUMN,answer=COLUMN"
    )


def _cell(value: Any, where: str = "", what: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from pandas
        return ""
    if isinstance(value, (list, tuple)) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        # the OpenAI chat format's content parts: [{"type": "text", "text": "..."}, ...]
        return "".join(_cell(p.get("text"), where, what) for p in value)
    if isinstance(value, (list, tuple, dict)):  # str() would train on "['a', 'b']"
        kind = "an object" if isinstance(value, dict) else "a list"
        raise ValueError(f"data: {where}: {what} is {kind}, not text; write it as a string")
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
                raise ValueError(
                    f"data: {where}: messages is not a JSON list; write it as "
                    '[{"role": "user", "content": "..."}, ...]'
                ) from None
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs)
        ):
            raise ValueError(f"data: {where}: messages must be a list of {{role, content}} objects")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
            raise ValueError(
                f"data: {where}: messages must end with a user turn followed by the assistant answer to learn"
            )
        answer = _cell(msgs[-1]["content"], where, "the answer's content")
        prompt = _cell(msgs[-2]["content"], where, "the prompt's content")
        history = [{"role": m["role"], "content": _cell(m["content"], where, "content")} for m in msgs[:-2]] or None
        ex = Example(prompt, answer, history, where)
    else:  # prompt/answer, Alpaca's instruction/input/output, or a mix of their names
        prompt = next((_cell(r[k], where, k) for k in PROMPT_KEYS if k in r), "").strip()
        extra = _cell(r.get("input"), where, "input").strip()
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        answer = next((_cell(r[k], where, k) for k in ANSWER_KEYS if k in r), "")
        system = _cell(r.get("system"), where, "system").strip()
        ex = Example(prompt, answer, [{"role": "system", "content": system}] if system else None, where)
    if not ex.prompt.strip():
        raise ValueError(f"data: {where} has an empty prompt; fill it in or remove the row")
    if not ex.answer.strip():
        raise ValueError(f"data: {where} has an empty answer; fill it in or remove the row")
    return ex


def examples_from_rows(
    rows: list[tuple[str, dict]], name: str, *, skip_bad_rows: bool = False
) -> tuple[list[Example] | TextSource, int]:
    """Rows -> examples (or one TextSource for a text column); returns (data, rows skipped)."""
    if not rows:
        raise ValueError(f"data: {name} holds no examples; add rows to it")
    keys: set[str] = set().union(*(r.keys() for _, r in rows))
    schema = _schema(keys, name)
    if schema == "text":
        parts = [_cell(r.get("text"), where, "text") for where, r in rows]
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


def load_examples(
    source: Any, *, columns: str | dict | None = None, skip_bad_rows: bool = False
) -> tuple[list[Example] | TextSource, int]:
    """Any supported source -> (examples or TextSource, rows skipped)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():  # before the extension: a folder has none, and "unknown extension" would mislead
            raise ValueError(f"data: {path} is a folder; give a .jsonl, .json, .csv or .txt file")
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
