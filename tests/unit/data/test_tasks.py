"""Tasks and splits (data.tasks): the shipped tasks, a data file's seeded split, a separate eval file, plain text
held out at a line break, the prompt template the training prompts share, a preset's eval size."""

from __future__ import annotations

import json

import pytest
from helpers import sentiment_rows, value_error, write_csv, write_jsonl

from workbench import data
from workbench.data import Example


# --------------------------------------------------------------------------- files and tasks
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_builtin_tasks_include_sentiment():
    assert "sentiment" in data.builtin_tasks()


def test_load_task_sentiment():
    task = data.load_task("sentiment")
    assert task.name == "sentiment"
    assert len(task.train) == 400 and len(task.eval) == 600
    assert {e.answer for e in task.train} == {"positive", "negative"}
    assert {e.answer for e in task.eval} <= {"positive", "negative"}
    train_prompts = {e.prompt for e in task.train}
    assert not train_prompts & {e.prompt for e in task.eval}
    assert task.sample_prompts and len(task.sample_prompts) <= 3
    assert task.scoring == "exact_match"


def test_load_task_unknown_lists_builtins():
    with pytest.raises(ValueError) as info:
        data.load_task("nope")
    assert str(info.value).startswith("task:") and "sentiment" in str(info.value)


def test_load_task_from_workbench_data(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    root.mkdir()
    _write(root / "train.jsonl", [json.dumps({"prompt": "p", "answer": "a"})])
    _write(root / "eval.jsonl", [json.dumps({"prompt": "q", "answer": "b"})])
    (root / "task.json").write_text(json.dumps({"description": "d", "sample_prompts": ["s"]}), encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data.builtin_tasks() == ["mine"]
    task = data.load_task("mine")
    assert task.description == "d" and task.sample_prompts == ["s"]


def test_load_file_task_split_is_repeatable(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": f"p{i}", "answer": f"a{i}"}) for i in range(40)])
    a = data.load_file_task(path, seed=1)
    b = data.load_file_task(path, seed=1)
    c = data.load_file_task(path, seed=2)
    assert a.train == b.train and a.eval == b.eval
    assert len(a.eval) == 6 and len(a.train) == 34  # 15% of 40
    assert {e.prompt for e in a.train}.isdisjoint({e.prompt for e in a.eval})
    assert {e.prompt for e in a.train} | {e.prompt for e in a.eval} == {f"p{i}" for i in range(40)}
    assert a.eval != c.eval
    assert a.name == "d" and a.sample_prompts == [e.prompt for e in a.eval[:3]]
    assert data.get_task("sentiment", str(path), seed=1).eval == a.eval  # data wins over task
    assert data.get_task("sentiment", None).name == "sentiment"


def test_load_file_task_needs_four_rows(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"prompt": "p", "answer": "a"})] * 3)
    with pytest.raises(ValueError, match="at least 4"):
        data.load_file_task(path)


def test_prompt_template_is_the_frame_the_training_prompts_share():
    from workbench.data.tasks import load_task, prompt_template

    assert load_task("sentiment").prompt_template == "Review: {text}\nIs this review positive or negative?"
    assert load_task("dates").prompt_template == "ISO 8601 date: {text}"
    assert load_task("shakespeare").prompt_template is None  # plain text is continued as it is
    # cut back to whole words, never overlapping, and none where the prompts share nothing
    assert prompt_template(["Q: sunny day?", "Q: sundown?"]) == "Q: {text}"
    assert prompt_template(["ab", "ab"]) is None or "{text}" in prompt_template(["ab", "ab"])
    assert prompt_template(["one thing", "another"]) is None
    assert prompt_template(["only one"]) is None
    task = load_task("sentiment")
    framed = task.wrap("  Loved the ferry.  ")
    assert framed == "Review: Loved the ferry.\nIs this review positive or negative?"
    assert task.wrap(framed) == framed


def test_a_presets_eval_size_over_a_small_split_scores_all_of_it_and_a_users_is_refused(tmp_path):
    rows = [json.dumps({"prompt": f"p{i}", "answer": f"a{i}"}) for i in range(60)]
    task = data.load_file_task(_write(tmp_path / "colours.jsonl", rows))
    assert len(task.eval) == 9  # 15% of 60
    assert task.eval_split(60, preset=True) == task.eval and task.eval_split(60, preset=True) == task.eval
    said = "eval: the preset's 60 examples, but colours has 9 held-out examples: scoring all 9"
    assert task.notes == [said]  # said once, however often the split is asked for
    with pytest.raises(ValueError, match="colours has 9 held-out examples; ask for at most that many"):
        task.eval_split(60)  # a number the user gave
    assert task.eval_split(4, preset=True) == task.eval[:4] and task.preset_size_note(9) == ""


def test_empty_text_rows_are_noted(tmp_path):
    path = write_jsonl(
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
    msg = value_error(data.load_data_task, path)
    assert msg.startswith(f"data: {path} is too short to hold out 15%") and "eval file" in msg


def test_seeded_split(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(20)])
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
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(6)])
    ev_path = write_csv(tmp_path / "held.csv", ["prompt", "answer"], [["q1", "b1"], ["q2", "b2"]])
    task = data.load_data_task(path, eval_source=ev_path)
    assert task.train == [Example(f"p{i}", f"a{i}") for i in range(6)]  # all of it, in file order
    assert task.eval == [Example("q1", "b1"), Example("q2", "b2")]
    assert task.sample_prompts == ["q1", "q2"]
    tiny = write_jsonl(tmp_path / "two.jsonl", [{"prompt": "p", "answer": "a"}] * 2)
    assert len(data.load_data_task(tiny, eval_source=ev_path).train) == 2  # no 4-row minimum with an eval file


@pytest.mark.parametrize("train_kind", ["text", "instruction"])
def test_eval_source_of_the_other_kind(tmp_path, train_kind):
    text = tmp_path / "t.txt"
    text.write_text(_numbered_text(10), encoding="utf-8")
    rows = write_jsonl(tmp_path / "r.jsonl", sentiment_rows(4))
    train, ev = (text, rows) if train_kind == "text" else (rows, text)
    msg = value_error(data.load_data_task, train, eval_source=ev)
    assert "same kind" in msg and "plain text" in msg


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_eval_fraction_out_of_range(tiny_jsonl, fraction):
    msg = value_error(data.load_data_task, tiny_jsonl, eval_fraction=fraction)
    assert msg.startswith("eval_fraction must be between 0 and 1") and str(fraction) in msg


def test_get_task_passes_everything_through(tmp_path):
    path = write_csv(tmp_path / "qa.csv", ["question", "label"], [[f"q{i}", "yes"] for i in range(8)])
    task = data.get_task("sentiment", str(path), seed=1, eval_fraction=0.5, columns="prompt=question,answer=label")
    assert task.name == "qa" and len(task.eval) == 4 and len(task.train) == 4


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
    msg = value_error(data.load_task, "half")
    assert msg == "task: unknown task 'half'; built-in tasks are poems"


def test_text_without_blank_lines_still_gives_sample_prompts(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(
        "\n".join(f"Line number {i} of a text with no paragraphs at all." for i in range(200)), encoding="utf-8"
    )
    task = data.load_data_task(path)
    assert len(task.sample_prompts) == 3 and all(p.startswith("Line number") for p in task.sample_prompts)
