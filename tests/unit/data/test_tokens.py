"""Tokenising (data.tokens): the chat template, answer-only labels, truncation, batches, plain text cut into
blocks, the length report that says what training would drop, and the preview of what the model sees."""

from __future__ import annotations

import torch
from helpers import byte_tokenizer

from workbench import data
from workbench.data import IGNORE_INDEX, Example, TextSource

SYSTEM = {"role": "system", "content": "Be brief."}


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


def test_preview_shows_the_templated_prompt_and_answer():
    tok = byte_tokenizer()
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
