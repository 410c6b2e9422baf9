"""`workbench export`: a run's adapter merged, and the gap it prints."""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from workbench import cli


def test_the_cli_exports_and_prints_the_gap(finished_run, tmp_path, capsys):
    assert (
        cli.main(["export", str(finished_run.path), "--variant", "qlora", "--merge", "--out", str(tmp_path / "m")]) == 0
    )
    out = capsys.readouterr().out
    assert "merged, bfloat16" in out and "merge gap: on" in out and "next token agrees" in out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m") is not None
