"""Bring your own data, end to end: a JSONL, a CSV with its own column names and a separate eval file, and
plain text, each through `workbench compare` to a run folder; data that cannot be read fails before any model
loads, for compare and preview alike."""

from __future__ import annotations

import json
import math
import time

import pytest
from helpers import sentiment_rows, write_csv, write_jsonl, write_latin1_csv

from workbench import cli
from workbench.records import runs

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
    path = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(20))
    out = tmp_path / "run"
    assert _compare(tiny_model_dir, out, "--data", str(path)) == 0, capsys.readouterr().err
    doc, by_name = _results(out)
    assert doc["scoring"] == "exact_match" and doc["task"] == "reviews"
    assert list(by_name) == ["base", "lora"]
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in by_name.values())
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds["base"]) == 3 and len(preds["lora"]) == 3  # 15% of 20


def test_cli_compare_csv_with_columns_and_eval_data(tiny_model_dir, tmp_path, capsys):
    rows = [[r["prompt"], r["answer"]] for r in sentiment_rows(16)]
    path = write_csv(tmp_path / "reviews.csv", ["review", "label"], rows)
    held = write_csv(tmp_path / "held.csv", ["review", "label"], rows[:5])
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
        ("not utf-8", write_latin1_csv, "not UTF-8"),
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
