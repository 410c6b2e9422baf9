"""`workbench preview`: examples as the model sees them, split as compare splits them."""

from __future__ import annotations

from helpers import sentiment_rows, write_jsonl

from workbench import cli


def test_cli_preview(tiny_model_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(10))
    assert cli.main(["preview", "--model", str(tiny_model_dir), "--data", str(path), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("task reviews: instruction data, scored by exact match")
    assert "train 8 examples, eval 2 examples" in out  # preview splits like compare does
    assert out.count("[prompt, no loss]") == 2 and out.count("[answer, trained on]") == 2
    assert out.count("--- example") == 2
