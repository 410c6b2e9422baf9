import json

import pytest
import torch

from workbench import data
from workbench.data import IGNORE_INDEX, Example

# --------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Positive", "positive"),
        ("  POSITIVE!  ", "positive"),
        ("The answer is: a cat.", "answer is cat"),
        ("An apple, the  banana", "apple banana"),
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert data.normalize(text) == expected


@pytest.mark.parametrize(
    "pred, answer, same",
    [
        ("positive", "positive", True),
        ("Positive.", "positive", True),
        ("the Positive!", "positive", True),
        ("  negative ", "Negative", True),
        ("a blue car", "Blue car", True),
        ("positive", "negative", False),
        ("positive negative", "positive", False),
        ("", "positive", False),
    ],
)
def test_exact_match(pred, answer, same):
    assert data.exact_match(pred, answer) is same


# --------------------------------------------------------------------------- tokenising


def test_prompt_text_uses_chat_template(tiny_tokenizer):
    text = data.prompt_text(tiny_tokenizer, "Review: superb")
    assert text == "<|im_start|>user\nReview: superb<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_text_without_template(tiny_model_dir):
    from workbench.engine.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = None
    assert data.prompt_text(tok, "hello") == "hello\n"


def test_encode_example_masks_the_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = Example("Review: superb", "very positive")
    row = data.encode_example(tok, ex, seq_len=64)
    p_ids = tok(data.prompt_text(tok, ex.prompt), add_special_tokens=False)["input_ids"]
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(p_ids) + 3  # "very", "positive", eos
    assert ids[: len(p_ids)] == p_ids
    assert labels[: len(p_ids)] == [IGNORE_INDEX] * len(p_ids)
    answer_part = labels[len(p_ids) :]
    assert answer_part == ids[len(p_ids) :]
    assert tok.convert_ids_to_tokens(answer_part) == ["very", "positive", "<|im_end|>"]
    assert answer_part[-1] == tok.eos_token_id


def test_encode_example_truncates(tiny_tokenizer):
    full = data.encode_example(tiny_tokenizer, Example("Review: superb", "very positive"), seq_len=64)
    cut = data.encode_example(tiny_tokenizer, Example("Review: superb", "very positive"), seq_len=8)
    assert len(cut["input_ids"]) == len(cut["labels"]) == 8
    assert cut["input_ids"] == full["input_ids"][:8]
    assert all(lab == IGNORE_INDEX for lab in cut["labels"])  # the prompt alone fills 8 tokens


def test_collate_pads_right(tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = data.collate(rows, pad)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_real_examples(tiny_tokenizer, tiny_task):
    rows = [data.encode_example(tiny_tokenizer, ex, 64) for ex in tiny_task[:4]]
    batch = data.collate(rows, tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (4, max(len(r["input_ids"]) for r in rows))
    assert int(batch["attention_mask"].sum()) == sum(len(r["input_ids"]) for r in rows)
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == 4 * 2  # label word + eos each


# --------------------------------------------------------------------------- files and tasks


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
