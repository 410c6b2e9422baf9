"""Reading people's data (data.formats): every format (JSONL, JSON, CSV/TSV, DataFrame, datasets, lists of dicts,
chat messages, Alpaca, plain text), column mappings, and the errors a user can cause: each names the file, the
line and the fix, or the bad rows are skipped and counted."""

from __future__ import annotations

import json

import pytest
from helpers import byte_tokenizer, sentiment_rows, value_error, write_csv, write_jsonl, write_latin1_csv

from workbench import data
from workbench.data import Example, TextSource

SYSTEM = {"role": "system", "content": "Be brief."}


# =========================================================================== 1. formats
@pytest.mark.parametrize("key", ["answer", "response", "completion"])
def test_jsonl_prompt_and_answer_names(tmp_path, key):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "Capital of France?", key: "Paris"}, {"prompt": "2+2?", key: "4", "extra": "ignored"}],
    )
    examples, skipped = data.load_examples(path)
    assert skipped == 0
    assert examples == [Example("Capital of France?", "Paris"), Example("2+2?", "4")]
    assert examples[0].history is None
    assert [e.where for e in examples] == [f"{path} line 1", f"{path} line 2"]


def test_alpaca_instruction_input_output(tmp_path):
    path = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Translate to French.", "input": "hello", "output": "bonjour"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Name a colour.", "output": "red"},  # no input key at all
        ],
    )
    examples, _ = data.load_examples(path)
    assert examples == [
        Example("Translate to French.\n\nhello", "bonjour"),
        Example("Say hi.", "hi"),
        Example("Name a colour.", "red"),
    ]


def test_messages_system_user_assistant(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    SYSTEM,
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris"},
                ]
            }
        ],
    )
    [ex], _ = data.load_examples(path)
    assert ex == Example("Capital of France?", "Paris", [SYSTEM])


def test_messages_multi_turn(tmp_path):
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
    ]
    [ex], _ = data.load_examples([{"messages": [SYSTEM] + turns}])
    assert ex.prompt == "Capital of Italy?" and ex.answer == "Rome"
    assert ex.history == [SYSTEM] + turns[:2]
    # and the history is what the chat template puts before the prompt
    tok_text = data.prompt_text(byte_tokenizer(), ex.prompt, ex.history)
    assert tok_text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_json_file_with_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([{"prompt": "a?", "answer": "x"}, {"instruction": "b?", "output": "y"}], indent=2), encoding="utf-8"
    )
    examples, _ = data.load_examples(path)
    assert examples == [Example("a?", "x"), Example("b?", "y")]
    assert examples[1].where == f"{path} item 2"


def test_json_file_must_hold_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"prompt": "a", "answer": "b"}), encoding="utf-8")
    msg = value_error(data.load_examples, path)
    assert msg == f"data: {path} must hold a JSON list of objects, one per example"


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'prompt,answer\n"Hello, world",greeting\n"line one\nline two","yes, two lines"\nplain,ok\n', encoding="utf-8"
    )
    examples, _ = data.load_examples(path)
    assert examples == [
        Example("Hello, world", "greeting"),
        Example("line one\nline two", "yes, two lines"),
        Example("plain", "ok"),
    ]
    assert examples[2].where == f"{path} line 5"  # physical lines: the quoted cell spans lines 3-4


def test_csv_alpaca_columns_and_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffinstruction,input,output\nSum these.,2 and 3,5\nSay no.,,no\n".encode("utf-8"))
    examples, _ = data.load_examples(path)
    assert examples == [Example("Sum these.\n\n2 and 3", "5"), Example("Say no.", "no")]


def test_csv_messages_column_holds_json(tmp_path):
    msgs = [SYSTEM, {"role": "user", "content": "Say yes, please"}, {"role": "assistant", "content": "yes"}]
    path = write_csv(tmp_path / "chat.csv", ["messages"], [[json.dumps(msgs)]])
    [ex], _ = data.load_examples(path)
    assert ex == Example("Say yes, please", "yes", [SYSTEM])


def test_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"instruction": ["Translate.", "Say hi."], "input": ["hello", None], "output": ["bonjour", "hi"]})
    examples, _ = data.load_examples(df)
    assert examples == [Example("Translate.\n\nhello", "bonjour"), Example("Say hi.", "hi")]  # NaN input: none
    assert examples[1].where == "DataFrame row 1"


def test_list_of_dicts():
    examples, _ = data.load_examples([{"prompt": "a", "completion": "b"}, {"question": "c", "response": "d"}])
    assert examples == [Example("a", "b"), Example("c", "d")]
    assert examples[1].where == "row 1"


class FakeDataset:
    """A stand-in for datasets.Dataset, which is not installed here. workbench.data duck-types it: all it
    uses is `column_names` and `to_list()`, so this class is enough to exercise that path."""

    def __init__(self, rows):
        self._rows = rows

    @property
    def column_names(self):
        return list(self._rows[0])

    def to_list(self):
        return [dict(r) for r in self._rows]


def test_datasets_dataset_like_object():
    ds = FakeDataset([{"question": "Is the sky blue?", "label": "yes"}, {"question": "Is fire cold?", "label": "no"}])
    examples, _ = data.load_examples(ds, columns="prompt=question,answer=label")
    assert examples == [Example("Is the sky blue?", "yes"), Example("Is fire cold?", "no")]
    assert examples[0].where == "Dataset row 0"
    task = data.load_data_task(FakeDataset(sentiment_rows(8)), eval_fraction=0.25)
    assert task.name == "data" and len(task.train) == 6 and len(task.eval) == 2


def test_unsupported_object():
    msg = value_error(data.load_examples, 42)
    assert msg.startswith("data: give a file path") and "got int" in msg


def test_column_mapping_string_on_csv(tmp_path):
    path = write_csv(
        tmp_path / "qa.csv", ["id", "question", "label"], [["1", "Is it red?", "yes"], ["2", "Is it?", "no"]]
    )
    examples, _ = data.load_examples(path, columns="prompt=question,answer=label")
    assert examples == [Example("Is it red?", "yes"), Example("Is it?", "no")]
    # without the mapping the columns are not understood, and the message says how to map them
    msg = value_error(data.load_examples, path)
    assert "has columns id, label, question" in msg and "--columns" in msg


def test_column_mapping_dict():
    rows = [{"q": "Is it red?", "a": "yes", "sys": "Answer yes or no."}]
    [ex], _ = data.load_examples(rows, columns={"prompt": "q", "answer": "a", "system": "sys"})
    assert ex == Example("Is it red?", "yes", [{"role": "system", "content": "Answer yes or no."}])


@pytest.mark.parametrize("columns", ["prmpt=question,answer=label", {"prmpt": "question", "answer": "label"}])
def test_column_mapping_unknown_field(tmp_path, columns):
    path = write_csv(tmp_path / "qa.csv", ["question", "label"], [["Is it red?", "yes"]])
    msg = value_error(data.load_examples, path, columns=columns)
    assert msg.startswith("columns: unknown field prmpt; map any of ")
    assert "prompt" in msg and "answer" in msg and "messages" in msg


@pytest.mark.parametrize("columns", ["prompt=quest,answer=label", {"prompt": "quest", "answer": "label"}])
def test_column_mapping_missing_column(tmp_path, columns):
    path = write_csv(tmp_path / "qa.csv", ["question", "label"], [["Is it red?", "yes"]])
    msg = value_error(data.load_examples, path, columns=columns)
    assert msg == f"columns: {path} has no column 'quest'; its columns are label, question"


def test_column_mapping_not_pairs():
    msg = value_error(data.parse_columns, "prompt")
    assert msg.startswith("columns: write FIELD=COLUMN pairs") and "'prompt'" in msg


def test_column_mapping_row_without_the_column(tmp_path):
    """JSONL rows may differ; a row lacking the mapped column is named (was a KeyError)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "a", "label": "b"}, {"label": "c"}])
    msg = value_error(data.load_examples, path, columns="prompt=q,answer=label")
    assert msg.startswith(f"data: {path} line 2 has columns answer but needs")
    examples, skipped = data.load_examples(path, columns="prompt=q,answer=label", skip_bad_rows=True)
    assert examples == [Example("a", "b")] and skipped == 1


def test_jsonl_line_separator_inside_a_string(tmp_path):
    """U+2028 and U+0085 are legal raw inside JSON strings; only \\n ends a JSONL line."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"prompt": "a\u2028b\x85c", "answer": "d"}, ensure_ascii=False)
        + "\r\n"
        + json.dumps({"prompt": "e", "answer": "f"})
        + "\n",
        encoding="utf-8",
    )
    examples, _ = data.load_examples(path)
    assert examples == [Example("a\u2028b\x85c", "d"), Example("e", "f")]
    assert examples[1].where == f"{path} line 2"


# =========================================================================== 2. plain text
def test_txt_file_is_text(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time.\n\nThe end.\n", encoding="utf-8")
    source, skipped = data.load_examples(path)
    assert isinstance(source, TextSource) and skipped == 0
    assert source.text == "Once upon a time.\n\nThe end.\n" and source.where == str(path)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_text_column_is_joined_with_blank_lines(tmp_path, kind):
    cells = ["First passage.\nStill first.", "Second passage.", "Third, with a comma."]
    if kind == "csv":
        path = write_csv(tmp_path / "t.csv", ["text"], [[c] for c in cells])
    else:
        path = write_jsonl(tmp_path / "t.jsonl", [{"text": c} for c in cells])
    source, skipped = data.load_examples(path)
    assert isinstance(source, TextSource) and skipped == 0
    assert source.text == "First passage.\nStill first.\n\nSecond passage.\n\nThird, with a comma."


BAD_FILES = {
    # name: (file name, writer or None for no file, [expected parts of the message])
    "missing": ("gone.jsonl", None, ["does not exist; check the path"]),
    "empty": ("blank.jsonl", lambda p: p.write_text("  \n\n\t\n"), ["is empty; add examples"]),
    "bad json line": (
        "d.jsonl",
        lambda p: p.write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "a",\n'),
        ["line 3 is not valid JSON", "fix or remove that line"],
    ),
    "bad .json": (
        "d.json",
        lambda p: p.write_text('[{"prompt": "a", "answer": "b"},\n {"prompt": "a" "x": 1}]'),
        ["is not valid JSON (line 2:", "use JSONL"],
    ),
    "json list line": (
        "d.jsonl",
        lambda p: p.write_text('{"prompt": "a", "answer": "b"}\n["a", "b"]\n'),
        ["line 2 is not a JSON object", "each line must be one {...} example"],
    ),
    "csv columns": (
        "d.csv",
        lambda p: p.write_text("question,label\nhi,yes\n"),
        ["has columns label, question but needs", "--columns prompt=COLUMN,answer=COLUMN"],
    ),
    "csv extra cell": (
        "d.csv",
        lambda p: p.write_text("prompt,answer\nhi,yes\nhi, there,no\n"),
        ["line 3 has more cells than the header", "quote cells that contain commas"],
    ),
    "csv empty answer": (
        "d.csv",
        lambda p: p.write_text('prompt,answer\n"two\nlines",yes\nhi,\n'),
        ["line 4 has an empty answer", "fill it in or remove the row"],
    ),
    "empty prompt": (
        "d.jsonl",
        lambda p: p.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": " ", "answer": "b"}\n'),
        ["line 2 has an empty prompt", "fill it in or remove the row"],
    ),
    "not utf-8": ("d.csv", write_latin1_csv, ["is not UTF-8", "byte 0xe9 on line 3", "re-save it as UTF-8"]),
    "extension": (
        "d.xlsx",
        lambda p: p.write_bytes(b"PK\x03\x04"),
        ["has an unknown extension", "use .jsonl, .json, .csv, .tsv or .txt"],
    ),
    "messages end": (
        "c.jsonl",
        lambda p: p.write_text(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "bye"},
                    ]
                }
            )
            + "\n"
        ),
        ["line 1: messages must end with a user turn followed by the assistant answer"],
    ),
    "messages not json": (
        "c.csv",
        lambda p: p.write_text('messages\n"[{role: user}]"\n'),
        ["line 2: messages is not a JSON list", '[{"role": "user"'],
    ),
    "header only": ("d.csv", lambda p: p.write_text("prompt,answer\n"), ["holds no examples; add rows"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_input_names_file_line_and_fix(tmp_path, case):
    name, write, parts = BAD_FILES[case]
    path = tmp_path / name
    if write:
        write(path)
    msg = value_error(data.load_data_task, path)
    assert msg.startswith(f"data: {path}"), msg
    for part in parts:
        assert part in msg, msg


def _mixed_rows(tmp_path):
    good = sentiment_rows(5)
    bad = [
        {"prompt": "x", "answer": ""},
        {"prompt": "", "answer": "y"},
        {"messages": [{"role": "user", "content": "no answer"}]},
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", [good[0], bad[0], good[1], bad[1], good[2], good[3], bad[2], good[4]])


def test_skip_bad_rows(tmp_path):
    path = _mixed_rows(tmp_path)
    assert "line 2 has an empty answer" in value_error(data.load_data_task, path)
    task = data.load_data_task(path, skip_bad_rows=True, eval_fraction=0.2)
    assert task.skipped == 3 and len(task.train) + len(task.eval) == 5
    assert task.notes == ["data: skipped 3 unusable row(s) of mixed (skip_bad_rows is on)"]
    assert all(e.prompt.startswith("Review:") for e in task.train + task.eval)


def test_skip_bad_rows_csv(tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        ["prompt", "answer"],
        [["a", "yes"], ["b", ""], ["c", "no"], ["d", "yes"], ["", "no"], ["e", "no"]],
    )
    task = data.load_data_task(path, skip_bad_rows=True)
    assert task.skipped == 2 and "skipped 2" in task.notes[0]
    assert sorted(e.prompt for e in task.train + task.eval) == ["a", "c", "d", "e"]


def test_skip_bad_rows_all_bad(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "answer": ""}, {"prompt": "y", "answer": " "}])
    msg = value_error(data.load_data_task, path, skip_bad_rows=True)
    assert msg == f"data: {path}: every row was unusable; fix the rows"


def test_clean_data_has_no_skip_note(tiny_jsonl):
    task = data.load_data_task(tiny_jsonl)
    assert task.skipped == 0 and task.notes == []


# =========================================================================== 7. preview
# --------------------------------------------------------------------------- shapes people's files really have
def test_explicit_mapping_wins_over_a_column_with_a_known_name(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer,label\nhi,ignored,used\n", encoding="utf-8")
    examples, _ = data.load_examples(path, columns="response=label")
    assert examples == [Example("hi", "used")]


def test_dataframe_whole_numbers_stay_whole():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "answer": [1, None, 3]})  # the gap makes pandas use floats
    with pytest.raises(ValueError, match="row 1 has an empty answer"):
        data.load_examples(df)
    examples, skipped = data.load_examples(df, skip_bad_rows=True)
    assert [e.answer for e in examples] == ["1", "3"] and skipped == 1


@pytest.mark.parametrize("suffix, sep", [(".csv", ";"), (".tsv", "\t")])
def test_semicolon_csv_and_tsv(tmp_path, suffix, sep):
    path = tmp_path / f"d{suffix}"
    path.write_text(f"prompt{sep}answer\nHello, you{sep}hi\n", encoding="utf-8")
    examples, _ = data.load_examples(path)
    assert examples == [Example("Hello, you", "hi")]


def test_jsonl_saved_as_json_gets_a_rename_hint(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": "d"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="rename it to .jsonl"):
        data.load_examples(path)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_jsonl_ok(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        [
            json.dumps({"prompt": "p1", "answer": "a1"}),
            "",
            json.dumps({"instruction": "p2", "response": "a2"}),
            json.dumps({"prompt": "p3", "output": "a3", "extra": 1}),
        ],
    )
    assert data.read_jsonl(path) == [Example("p1", "a1"), Example("p2", "a2"), Example("p3", "a3")]


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(ValueError) as info:
        data.read_jsonl(tmp_path / "missing.jsonl")
    assert str(info.value).startswith("data:") and "missing.jsonl" in str(info.value)
    assert "does not exist" in str(info.value)


def test_read_jsonl_bad_json_names_the_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": "p", "answer": "a"})] * 2 + ["{not json"])
    with pytest.raises(ValueError) as info:
        data.read_jsonl(path)
    assert "line 3" in str(info.value) and "not valid JSON" in str(info.value)


def test_read_jsonl_empty_answer(tmp_path):
    path = _write(
        tmp_path / "d.jsonl", [json.dumps({"prompt": "p", "answer": "a"}), json.dumps({"prompt": "p", "answer": "   "})]
    )
    with pytest.raises(ValueError, match="line 2 has an empty answer"):
        data.read_jsonl(path)


def test_read_jsonl_missing_fields(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"query": "p", "answer": "a"})])
    with pytest.raises(ValueError, match="has columns answer, query but needs prompt/answer"):
        data.read_jsonl(path)


def test_read_jsonl_empty_file(tmp_path):
    path = _write(tmp_path / "d.jsonl", ["", "  "])
    with pytest.raises(ValueError, match="d.jsonl is empty; add examples"):
        data.read_jsonl(path)
