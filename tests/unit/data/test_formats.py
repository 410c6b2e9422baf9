"""Bring your own data: every format workbench.data reads, plain text, the split, the choice of
scoring, the errors a user can cause, length checks, preview, and compare/CLI on such data."""

import csv
import json
import math
import statistics
import time

import pytest
import torch
from conftest import CHAT_TEMPLATE, NEGATIVE_WORDS, POSITIVE_WORDS

from workbench import cli, data
from workbench.core.config import LoraSettings, TrainSettings
from workbench.data import Example, TextSource
from workbench.engine import models
from workbench.engine.generate import evaluate
from workbench.engine.train import seed_everything, train
from workbench.records import runs

SYSTEM = {"role": "system", "content": "Be brief."}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path, header, rows):
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _error(fn, *args, **kw) -> str:
    """The ValueError message of fn(*args); it must be one line."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def _sentiment_rows(n):
    words = [w for pair in zip(POSITIVE_WORDS, NEGATIVE_WORDS) for w in pair]
    return [
        {"prompt": f"Review: {w}", "answer": "positive" if w in POSITIVE_WORDS else "negative"} for w in (words * 3)[:n]
    ]


# =========================================================================== 1. formats


@pytest.mark.parametrize("key", ["answer", "response", "completion"])
def test_jsonl_prompt_and_answer_names(tmp_path, key):
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "Capital of France?", key: "Paris"}, {"prompt": "2+2?", key: "4", "extra": "ignored"}],
    )
    examples, skipped = data.load_examples(path)
    assert skipped == 0
    assert examples == [Example("Capital of France?", "Paris"), Example("2+2?", "4")]
    assert examples[0].history is None
    assert [e.where for e in examples] == [f"{path} line 1", f"{path} line 2"]


def test_alpaca_instruction_input_output(tmp_path):
    path = _jsonl(
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
    path = _jsonl(
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
    tok_text = data.prompt_text(_ByteTok.get(), ex.prompt, ex.history)
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
    msg = _error(data.load_examples, path)
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
    path = _csv(tmp_path / "chat.csv", ["messages"], [[json.dumps(msgs)]])
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
    task = data.load_data_task(FakeDataset(_sentiment_rows(8)), eval_fraction=0.25)
    assert task.name == "data" and len(task.train) == 6 and len(task.eval) == 2


def test_unsupported_object():
    msg = _error(data.load_examples, 42)
    assert msg.startswith("data: give a file path") and "got int" in msg


def test_column_mapping_string_on_csv(tmp_path):
    path = _csv(tmp_path / "qa.csv", ["id", "question", "label"], [["1", "Is it red?", "yes"], ["2", "Is it?", "no"]])
    examples, _ = data.load_examples(path, columns="prompt=question,answer=label")
    assert examples == [Example("Is it red?", "yes"), Example("Is it?", "no")]
    # without the mapping the columns are not understood, and the message says how to map them
    msg = _error(data.load_examples, path)
    assert "has columns id, label, question" in msg and "--columns" in msg


def test_column_mapping_dict():
    rows = [{"q": "Is it red?", "a": "yes", "sys": "Answer yes or no."}]
    [ex], _ = data.load_examples(rows, columns={"prompt": "q", "answer": "a", "system": "sys"})
    assert ex == Example("Is it red?", "yes", [{"role": "system", "content": "Answer yes or no."}])


@pytest.mark.parametrize("columns", ["prmpt=question,answer=label", {"prmpt": "question", "answer": "label"}])
def test_column_mapping_unknown_field(tmp_path, columns):
    path = _csv(tmp_path / "qa.csv", ["question", "label"], [["Is it red?", "yes"]])
    msg = _error(data.load_examples, path, columns=columns)
    assert msg.startswith("columns: unknown field prmpt; map any of ")
    assert "prompt" in msg and "answer" in msg and "messages" in msg


@pytest.mark.parametrize("columns", ["prompt=quest,answer=label", {"prompt": "quest", "answer": "label"}])
def test_column_mapping_missing_column(tmp_path, columns):
    path = _csv(tmp_path / "qa.csv", ["question", "label"], [["Is it red?", "yes"]])
    msg = _error(data.load_examples, path, columns=columns)
    assert msg == f"columns: {path} has no column 'quest'; its columns are label, question"


def test_column_mapping_not_pairs():
    msg = _error(data.parse_columns, "prompt")
    assert msg.startswith("columns: write FIELD=COLUMN pairs") and "'prompt'" in msg


def test_column_mapping_row_without_the_column(tmp_path):
    """JSONL rows may differ; a row lacking the mapped column is named (was a KeyError)."""
    path = _jsonl(tmp_path / "d.jsonl", [{"q": "a", "label": "b"}, {"label": "c"}])
    msg = _error(data.load_examples, path, columns="prompt=q,answer=label")
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
        path = _csv(tmp_path / "t.csv", ["text"], [[c] for c in cells])
    else:
        path = _jsonl(tmp_path / "t.jsonl", [{"text": c} for c in cells])
    source, skipped = data.load_examples(path)
    assert isinstance(source, TextSource) and skipped == 0
    assert source.text == "First passage.\nStill first.\n\nSecond passage.\n\nThird, with a comma."


def test_empty_text_rows_are_noted(tmp_path):
    path = _jsonl(
        tmp_path / "t.jsonl",
        [
            {"text": "First passage."},
            {"text": "  "},
            {"text": "Second passage."},
            {"text": "Third passage, the held-out one."},
        ],
    )
    task = data.load_data_task(path, eval_fraction=0.3)
    assert task.kind == "text" and task.skipped == 1
    assert task.notes == ["data: skipped 1 unusable row(s) of t (empty text)"]  # skip_bad_rows was off
    full = "First passage.\n\nSecond passage.\n\nThird passage, the held-out one."
    assert task.train.text + task.eval.text == full and task.train.text.startswith("First passage.\n\nSecond")


def test_text_blocks(tiny_tokenizer):
    tok = tiny_tokenizer
    # 17 x 3 = 51 word tokens: blocks of 16, 16, 16 and a last one of 3 < 16 // 4, which is dropped
    text = TextSource(" ".join(["red green blue"] * 17))
    ids = tok(text.text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 51
    blocks = data.text_blocks(tok, text, 16)
    assert [len(b["input_ids"]) for b in blocks] == [16, 16, 16]
    assert [b["input_ids"] for b in blocks] == [ids[0:16], ids[16:32], ids[32:48]]
    assert all(b["labels"] == b["input_ids"] for b in blocks)
    # 20 x 3 = 60 tokens: the last block of 12 >= 4 is kept
    blocks = data.text_blocks(tok, TextSource(" ".join(["red green blue"] * 20)), 16)
    assert [len(b["input_ids"]) for b in blocks] == [16, 16, 16, 12]
    assert data.encode_split(tok, TextSource(" ".join(["red green blue"] * 20)), 16) == blocks


def _numbered_text(n):
    return "".join(f"line {i} red green blue apple\n" for i in range(n))


def test_text_task_holds_out_the_end_at_a_line_break(tmp_path):
    path = tmp_path / "poem.txt"
    full = _numbered_text(100)
    path.write_text(full, encoding="utf-8")
    task = data.load_data_task(path, eval_fraction=0.2)
    assert task.kind == "text" and not task.chat and task.scoring == "perplexity" and task.name == "poem"
    assert task.train.text + task.eval.text == full
    assert task.eval.text.startswith("\n") and task.train.text.endswith("apple")  # cut at a line break
    train_lines = set(task.train.text.split("\n"))
    eval_lines = [line for line in task.eval.text.split("\n") if line]
    assert eval_lines and not train_lines & set(eval_lines)
    assert eval_lines[-1] == "line 99 red green blue apple"
    assert 0.15 < len(task.eval.text) / len(full) < 0.25
    # no blank lines in this text: the sample prompts are held-out lines, three of them
    assert len(task.sample_prompts) == 3 and all(p in eval_lines for p in task.sample_prompts)


@pytest.mark.parametrize(
    "body, starts",
    [
        (_numbered_text(100), "\n"),  # cut at a line break
        (" ".join(["red green blue"] * 100), " "),
    ],
)  # one line: at a word
def test_text_split_ignores_a_paragraph_break_far_from_the_cut(tmp_path, body, starts):
    """A title and blank line at the top must not move the cut there (it held out ~all the text)."""
    path = tmp_path / "book.txt"
    path.write_text("Title\n\n" + body, encoding="utf-8")
    task = data.load_data_task(path, eval_fraction=0.2)
    share = len(task.eval.text) / (len(task.train.text) + len(task.eval.text))
    assert 0.15 < share < 0.25 and task.train.text.startswith("Title\n\n")
    assert task.eval.text.startswith(starts) and task.train.text + task.eval.text == "Title\n\n" + body


def test_text_too_short_to_split(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello\n", encoding="utf-8")  # the held-out end would be only the line break
    msg = _error(data.load_data_task, path)
    assert msg.startswith(f"data: {path} is too short to hold out 15%") and "eval file" in msg


def test_evaluate_text_returns_perplexity_only(load_tiny, tiny_tokenizer):
    tok, model = tiny_tokenizer, load_tiny(16)
    source = TextSource(" ".join(["red green blue apple banana cherry"] * 4))  # 24 tokens: one block
    ev = evaluate(model, tok, source, seq_len=32)
    assert ev.accuracy is None and ev.predictions == []
    assert ev.perplexity == pytest.approx(math.exp(ev.eval_loss))
    ids = torch.tensor([tok(source.text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item()  # every token counts for plain text
    assert ev.eval_loss == pytest.approx(reference, rel=1e-4)


def test_train_on_text_lowers_the_loss(load_tiny, tiny_tokenizer):
    model = load_tiny(16)
    seed_everything(0)
    model = models.attach_lora(model, LoraSettings(rank=8, alpha=16.0, dropout=0.0), 16)
    source = TextSource(" ".join(["red green blue apple banana cherry ."] * 30))
    settings = TrainSettings(steps=10, lr=3e-2, batch_size=2, seq_len=32, warmup_steps=0)
    result = train(model, tiny_tokenizer, source, settings)
    assert result.steps_done == 10 and not result.stopped
    first, last = statistics.mean(result.losses[:3]), statistics.mean(result.losses[-3:])
    assert last < 0.7 * first, result.losses


# =========================================================================== 3. split


def test_seeded_split(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(20)])
    a = data.load_data_task(path, eval_fraction=0.25, seed=3)
    b = data.load_data_task(path, eval_fraction=0.25, seed=3)
    c = data.load_data_task(path, eval_fraction=0.25, seed=4)
    assert len(a.eval) == 5 and len(a.train) == 15
    assert a.train == b.train and a.eval == b.eval
    assert [e.prompt for e in a.eval] != [e.prompt for e in c.eval]
    train, ev = {e.prompt for e in a.train}, {e.prompt for e in a.eval}
    assert train.isdisjoint(ev) and train | ev == {f"p{i}" for i in range(20)}
    for e in a.train + a.eval:  # rows keep their own answers through the shuffle
        assert e.answer == "a" + e.prompt[1:]


def test_eval_source(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(6)])
    ev_path = _csv(tmp_path / "held.csv", ["prompt", "answer"], [["q1", "b1"], ["q2", "b2"]])
    task = data.load_data_task(path, eval_source=ev_path)
    assert task.train == [Example(f"p{i}", f"a{i}") for i in range(6)]  # all of it, in file order
    assert task.eval == [Example("q1", "b1"), Example("q2", "b2")]
    assert task.sample_prompts == ["q1", "q2"]
    tiny = _jsonl(tmp_path / "two.jsonl", [{"prompt": "p", "answer": "a"}] * 2)
    assert len(data.load_data_task(tiny, eval_source=ev_path).train) == 2  # no 4-row minimum with an eval file


@pytest.mark.parametrize("train_kind", ["text", "instruction"])
def test_eval_source_of_the_other_kind(tmp_path, train_kind):
    text = tmp_path / "t.txt"
    text.write_text(_numbered_text(10), encoding="utf-8")
    rows = _jsonl(tmp_path / "r.jsonl", _sentiment_rows(4))
    train, ev = (text, rows) if train_kind == "text" else (rows, text)
    msg = _error(data.load_data_task, train, eval_source=ev)
    assert "same kind" in msg and "plain text" in msg


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_eval_fraction_out_of_range(tiny_jsonl, fraction):
    msg = _error(data.load_data_task, tiny_jsonl, eval_fraction=fraction)
    assert msg.startswith("eval_fraction must be between 0 and 1") and str(fraction) in msg


def test_get_task_passes_everything_through(tmp_path):
    path = _csv(tmp_path / "qa.csv", ["question", "label"], [[f"q{i}", "yes"] for i in range(8)])
    task = data.get_task("sentiment", str(path), seed=1, eval_fraction=0.5, columns="prompt=question,answer=label")
    assert task.name == "qa" and len(task.eval) == 4 and len(task.train) == 4


# =========================================================================== 4. scoring choice


def test_scoring_by_answer_length(tmp_path):
    n = data.SHORT_ANSWER_WORDS
    short = [{"prompt": f"p{i}", "answer": " ".join(["word"] * n)} for i in range(4)]
    assert data.load_data_task(_jsonl(tmp_path / "s.jsonl", short)).scoring == "exact_match"
    long = short + [{"prompt": "p9", "answer": " ".join(["word"] * (n + 1))}]
    # the long answer is found whichever side of the split it lands on in training
    task = data.load_data_task(_jsonl(tmp_path / "l.jsonl", long), eval_source=_jsonl(tmp_path / "e.jsonl", short))
    assert task.scoring == "perplexity"
    assert data.choose_scoring([Example("p", "yes")]) == "exact_match"
    assert data.choose_scoring(TextSource("x")) == "perplexity"


def test_evaluate_by_perplexity_skips_generation(load_tiny, tiny_tokenizer, tiny_task):
    model = load_tiny(16)
    examples = tiny_task[:4]
    by_ppl = evaluate(model, tiny_tokenizer, examples, seq_len=32, scoring="perplexity")
    assert by_ppl.accuracy is None and by_ppl.predictions == []
    assert by_ppl.perplexity == pytest.approx(math.exp(by_ppl.eval_loss))
    by_em = evaluate(model, tiny_tokenizer, examples, seq_len=32, scoring="exact_match")
    assert by_em.eval_loss == pytest.approx(by_ppl.eval_loss)  # same loss, only the scoring differs
    assert by_em.accuracy is not None and len(by_em.predictions) == 4


# =========================================================================== 5. bad input


def _latin1(path):
    path.write_bytes("prompt,answer\nhi,yes\ncaf\xe9,no\n".encode("latin-1"))


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
    "not utf-8": ("d.csv", _latin1, ["is not UTF-8", "byte 0xe9 on line 3", "re-save it as UTF-8"]),
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
    msg = _error(data.load_data_task, path)
    assert msg.startswith(f"data: {path}"), msg
    for part in parts:
        assert part in msg, msg


def _mixed_rows(tmp_path):
    good = _sentiment_rows(5)
    bad = [
        {"prompt": "x", "answer": ""},
        {"prompt": "", "answer": "y"},
        {"messages": [{"role": "user", "content": "no answer"}]},
    ]
    return _jsonl(tmp_path / "mixed.jsonl", [good[0], bad[0], good[1], bad[1], good[2], good[3], bad[2], good[4]])


def test_skip_bad_rows(tmp_path):
    path = _mixed_rows(tmp_path)
    assert "line 2 has an empty answer" in _error(data.load_data_task, path)
    task = data.load_data_task(path, skip_bad_rows=True, eval_fraction=0.2)
    assert task.skipped == 3 and len(task.train) + len(task.eval) == 5
    assert task.notes == ["data: skipped 3 unusable row(s) of mixed (skip_bad_rows is on)"]
    assert all(e.prompt.startswith("Review:") for e in task.train + task.eval)


def test_skip_bad_rows_csv(tmp_path):
    path = _csv(
        tmp_path / "d.csv",
        ["prompt", "answer"],
        [["a", "yes"], ["b", ""], ["c", "no"], ["d", "yes"], ["", "no"], ["e", "no"]],
    )
    task = data.load_data_task(path, skip_bad_rows=True)
    assert task.skipped == 2 and "skipped 2" in task.notes[0]
    assert sorted(e.prompt for e in task.train + task.eval) == ["a", "c", "d", "e"]


def test_skip_bad_rows_all_bad(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "answer": ""}, {"prompt": "y", "answer": " "}])
    msg = _error(data.load_data_task, path, skip_bad_rows=True)
    assert msg == f"data: {path}: every row was unusable; fix the rows"


def test_clean_data_has_no_skip_note(tiny_jsonl):
    task = data.load_data_task(tiny_jsonl)
    assert task.skipped == 0 and task.notes == []


# =========================================================================== 6. length checks


def _lengths(tok, ex):
    p = len(tok(data.prompt_text(tok, ex.prompt, ex.history), add_special_tokens=False)["input_ids"])
    a = len(tok(ex.answer + data.answer_suffix(tok), add_special_tokens=False)["input_ids"])
    return p, a


def _length_examples():
    return [
        Example("Review: superb", "positive", where="f line 1"),
        Example("Review: awful", "negative", where="f line 2"),
        Example("Review: " + "red " * 11, "green blue", where="f line 3"),  # prompt fits, answer cut
        Example("Review: great", "positive", where="f line 4"),
        Example("Review: " + "blue " * 21, "red", where="f line 5"),
    ]  # prompt alone fills seq_len


def test_length_report(tiny_tokenizer):
    tok, examples = tiny_tokenizer, _length_examples()
    lens = [_lengths(tok, e) for e in examples]
    assert lens[0] == (8, 2)  # <|im_start|> user Review : superb <|im_end|> <|im_start|> assistant | positive eos
    assert lens[2] == (18, 3) and lens[4] == (28, 2)
    assert data.length_report(tok, examples, 32) == []
    assert data.length_report(tok, TextSource("red " * 500), 8) == []
    assert data.length_report(tok, examples, 20) == [
        "data: 2 of 5 examples are longer than seq_len 20 tokens (longest 30, first at f line 3) and will be cut; "
        "1 lose their whole answer and are skipped in training; raise seq_len to 30 to keep them whole"
    ]
    assert data.length_report(tok, examples, 29) == [
        "data: 1 of 5 examples are longer than seq_len 29 tokens (longest 30, first at f line 5) and will be cut; "
        "raise seq_len to 30 to keep them whole"
    ]
    # boundaries: exactly seq_len tokens fits; a prompt of exactly seq_len tokens leaves no answer
    assert data.length_report(tok, examples[:4], 21) == [] and data.length_report(tok, examples, 30) == []
    assert data.length_report(tok, examples[4:], 28) == [
        "data: 1 of 1 examples are longer than seq_len 28 tokens (longest 30, first at f line 5) and will be cut; "
        "1 lose their whole answer and are skipped in training; raise seq_len to 30 to keep them whole"
    ]


def test_length_report_matches_what_training_drops(tiny_tokenizer):
    rows = data.encode_split(tiny_tokenizer, _length_examples(), 20)
    no_answer = [r for r in rows if all(lab == data.IGNORE_INDEX for lab in r["labels"])]
    assert len(no_answer) == 1 and all(len(r["input_ids"]) <= 20 for r in rows)


# =========================================================================== 7. preview


class _ByteTok:
    """A byte-level BPE tokenizer (one token per byte, lossless decode) with the tiny ChatML template:
    with it, decoded token ids are exactly the text that was tokenised, which the word-level tiny
    tokenizer (no decoder: tokens come back joined by spaces) cannot show."""

    _tok = None

    @classmethod
    def get(cls):
        if cls._tok is None:
            from tokenizers import Tokenizer, decoders, pre_tokenizers
            from tokenizers import models as tok_models
            from transformers import PreTrainedTokenizerFast

            vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
            core = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
            core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            core.decoder = decoders.ByteLevel()
            cls._tok = PreTrainedTokenizerFast(
                tokenizer_object=core,
                eos_token="<|im_end|>",
                pad_token="<|im_end|>",
                additional_special_tokens=["<|im_start|>"],
                chat_template=CHAT_TEMPLATE,
                clean_up_tokenization_spaces=False,
            )
        return cls._tok


def test_preview_shows_the_templated_prompt_and_answer():
    tok = _ByteTok.get()
    train = [
        Example("Capital of France?", "Paris", [SYSTEM]),
        Example("Héllo,  wörld!\nTwo lines.", "yes  sir"),
        Example("third", "not shown"),
    ]
    task = data.Task("mine", train, [Example("q", "a")])
    pv = data.preview(tok, task, seq_len=256, n=2)
    assert len(pv.examples) == 2
    for shown, ex in zip(pv.examples, train):
        templated = data.prompt_text(tok, ex.prompt, ex.history)
        assert shown["prompt"] == templated
        assert shown["answer"] == ex.answer + "<|im_end|>" and shown["answer"].endswith(tok.eos_token)
        assert shown["prompt_tokens"] == len(tok(templated, add_special_tokens=False)["input_ids"])
        assert shown["answer_tokens"] == len(tok(ex.answer + tok.eos_token, add_special_tokens=False)["input_ids"])
        assert shown["truncated"] is False
    assert pv.examples[0]["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert pv.examples[0]["answer_tokens"] == 6  # P a r i s + eos


def test_preview_stats_and_text(tiny_tokenizer):
    tok = tiny_tokenizer
    train = _length_examples()
    task = data.Task(
        "mine",
        train,
        [Example("q", "a")] * 3,
        scoring="exact_match",
        notes=["data: skipped 1 unusable row(s) of mine (skip_bad_rows is on)"],
    )
    pv = data.preview(tok, task, seq_len=20, n=3)
    full = sorted(p + a for p, a in (_lengths(tok, e) for e in train))
    assert full == [10, 10, 10, 21, 30]
    s = pv.stats
    assert (s["train"], s["eval"], s["unit"]) == (5, 3, "examples")
    assert (s["min"], s["median"], s["p90"], s["max"]) == (10, 10, 21, 30)
    assert s["truncated"] == 2 and "2 of 5 examples" in data.length_report(tok, train, 20)[0]
    assert sum(count for _, _, count in s["histogram"]) == 5
    assert s["histogram"][0][0] == 10 and s["histogram"][-1][1] >= 30
    assert [e["truncated"] for e in pv.examples] == [False, False, True]
    for shown, ex in zip(pv.examples, train):
        p, a = _lengths(tok, ex)
        assert (shown["prompt_tokens"], shown["answer_tokens"]) == (p, a)
        assert shown["answer"].endswith("<|im_end|>")
    assert pv.notes[0] == task.notes[0] and pv.notes[1].startswith("data: 2 of 5 examples are longer")
    text = pv.to_text()
    assert text.startswith(
        "task mine: instruction data, scored by exact match\n"
        "train 5 examples, eval 3 examples; tokens per example: min 10, median 10, "
        "90th percentile 21, max 30; 2 of 5 longer than seq_len 20"
    )
    assert text.count("[prompt, no loss]") == 3 and text.count("[answer, trained on]") == 3
    assert "--- example 3: 18 prompt tokens + 3 answer tokens (cut at seq_len)" in text
    assert str(pv) == text and text.rstrip().endswith("to keep them whole")
    whole = data.preview(tok, task, seq_len=30, n=1)  # the longest is exactly 30 tokens: nothing is cut
    assert whole.stats["truncated"] == 0 and whole.notes == task.notes
    assert "0 of 5 longer than seq_len 30" in whole.to_text()


def test_preview_text_shows_blocks(tiny_tokenizer):
    tok = tiny_tokenizer
    task = data.Task(
        "prose",
        TextSource(" ".join(["red green blue"] * 20)),
        TextSource(" ".join(["apple banana"] * 10)),
        scoring="perplexity",
    )
    pv = data.preview(tok, task, seq_len=16, n=2)
    assert (pv.kind, pv.stats["unit"]) == ("text", "blocks")
    assert pv.stats["train"] == 4 and pv.stats["eval"] == 2  # 60 tokens -> 16,16,16,12; 20 -> 16,4
    assert (pv.stats["min"], pv.stats["max"], pv.stats["truncated"]) == (12, 16, 0)
    assert sum(c for _, _, c in pv.stats["histogram"]) == 4
    assert len(pv.examples) == 2
    assert all(e["prompt"] == "" and e["prompt_tokens"] == 0 and e["answer_tokens"] == 16 for e in pv.examples)
    assert pv.examples[0]["answer"].split()[:3] == ["red", "green", "blue"]
    text = pv.to_text()
    assert "[prompt, no loss]" not in text and text.count("[answer, trained on]") == 2
    assert "train 4 blocks, eval 2 blocks" in text and "scored by perplexity" in text


# =========================================================================== 8. built-in tasks


def test_builtin_tasks_include_sentiment():
    assert "sentiment" in data.builtin_tasks()


def test_builtin_text_task(tmp_path, monkeypatch):
    root = tmp_path / "poems"
    root.mkdir()
    (root / "train.txt").write_text(_numbered_text(30), encoding="utf-8")
    (root / "eval.txt").write_text(
        "The evening sun went down over the quiet harbour town.\n\n"
        "Boats came home one by one and the lamps were lit.\n",
        encoding="utf-8",
    )
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.txt").write_text("no eval file here", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data.builtin_tasks() == ["poems"]
    task = data.load_task("poems")
    assert task.kind == "text" and task.scoring == "perplexity"
    assert task.train.text == _numbered_text(30)
    assert task.sample_prompts == [
        "The evening sun went down over the quiet harbour town.",
        "Boats came home one by one and the lamps were lit.",
    ]
    msg = _error(data.load_task, "half")
    assert msg == "task: unknown task 'half'; built-in tasks are poems"


# =========================================================================== 9. compare and the CLI

CLI_SMALL = [
    "--device",
    "cpu",
    "--variants",
    "base,lora",
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--seq-len",
    "48",
    "--rank",
    "2",
    "--lr",
    "0.01",
]


def _compare(tiny_model_dir, out, *args):
    return cli.main(["compare", "--model", str(tiny_model_dir), *args, *CLI_SMALL, "--out", str(out)])


def _results(out):
    doc = runs.Run(out).read()
    return doc, {v["name"]: v for v in doc["variants"]}


def test_cli_compare_jsonl(tiny_model_dir, tmp_path, capsys):
    path = _jsonl(tmp_path / "reviews.jsonl", _sentiment_rows(20))
    out = tmp_path / "run"
    assert _compare(tiny_model_dir, out, "--data", str(path)) == 0, capsys.readouterr().err
    doc, by_name = _results(out)
    assert doc["scoring"] == "exact_match" and doc["task"] == "reviews"
    assert list(by_name) == ["base", "lora"]
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in by_name.values())
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds["base"]) == 3 and len(preds["lora"]) == 3  # 15% of 20


def test_cli_compare_csv_with_columns_and_eval_data(tiny_model_dir, tmp_path, capsys):
    rows = [[r["prompt"], r["answer"]] for r in _sentiment_rows(16)]
    path = _csv(tmp_path / "reviews.csv", ["review", "label"], rows)
    held = _csv(tmp_path / "held.csv", ["review", "label"], rows[:5])
    out = tmp_path / "run"
    rc = _compare(
        tiny_model_dir, out, "--data", str(path), "--eval-data", str(held), "--columns", "prompt=review,answer=label"
    )
    assert rc == 0, capsys.readouterr().err
    doc, by_name = _results(out)
    assert doc["scoring"] == "exact_match" and doc["config"]["columns"] == "prompt=review,answer=label"
    assert all(v["accuracy"] is not None for v in by_name.values())
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds["base"]) == 5  # the eval file's rows, not a split of the data
    assert [p["prompt"] for p in preds["base"]] == [r[0] for r in rows[:5]]


def test_cli_compare_text(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "prose.txt"
    path.write_text("".join("red green blue apple banana cherry . yes no\n" for _ in range(40)), encoding="utf-8")
    out = tmp_path / "run"
    assert _compare(tiny_model_dir, out, "--data", str(path)) == 0, capsys.readouterr().err
    doc, by_name = _results(out)
    assert doc["scoring"] == "perplexity" and doc["task"] == "prose"
    assert list(by_name) == ["base", "lora"]
    for v in by_name.values():
        assert v["accuracy"] is None
        assert v["perplexity"] == pytest.approx(math.exp(v["eval_loss"]))
    for png in ("loss.png", "memory.png", "accuracy_vs_memory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def _bad_csv_columns(path):
    path.write_text("question,label\nhi,yes\n", encoding="utf-8")


@pytest.mark.parametrize(
    "case, write, part",
    [
        ("missing", None, "does not exist"),
        ("csv columns", _bad_csv_columns, "--columns"),
        ("not utf-8", _latin1, "not UTF-8"),
    ],
)
@pytest.mark.parametrize("command", ["compare", "preview"])
def test_cli_bad_data_fails_before_the_model(tmp_path, capsys, monkeypatch, case, write, part, command):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.csv"
    if write:
        write(path)
    start = time.perf_counter()
    # the model folder does not exist: the data is checked first, so its error is the one reported
    rc = cli.main([command, "--model", str(tmp_path / "no-such-model"), "--data", str(path)])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert rc == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"workbench: error: data: {path}") and part in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert elapsed < 5


def test_cli_preview(tiny_model_dir, tmp_path, capsys):
    path = _jsonl(tmp_path / "reviews.jsonl", _sentiment_rows(10))
    assert cli.main(["preview", "--model", str(tiny_model_dir), "--data", str(path), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("task reviews: instruction data, scored by exact match")
    assert "train 8 examples, eval 2 examples" in out  # preview splits like compare does
    assert out.count("[prompt, no loss]") == 2 and out.count("[answer, trained on]") == 2
    assert out.count("--- example") == 2


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


def test_text_without_blank_lines_still_gives_sample_prompts(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(
        "\n".join(f"Line number {i} of a text with no paragraphs at all." for i in range(200)), encoding="utf-8"
    )
    task = data.load_data_task(path)
    assert len(task.sample_prompts) == 3 and all(p.startswith("Line number") for p in task.sample_prompts)


def test_a_data_error_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["compare", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)])
    assert rc == 2 and not out.exists()
