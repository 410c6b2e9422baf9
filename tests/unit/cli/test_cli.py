"""The `workbench` command itself (cli/__init__.py, python -m workbench.cli): a bad option exits 2 with one line,
in-process and as a process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import error_lines

from workbench import cli


@pytest.mark.parametrize(
    "args, field",
    [
        (["compare", "--rank", "0"], "rank"),
        (["compare", "--dropout", "1.5"], "dropout"),
        (["compare", "--variants", "foo"], "variants"),
        (["compare", "--variants", "lora,lora"], "variants"),
        (["compare", "--data", "missing.jsonl"], "data"),
        (["compare", "--preset", "nope"], "preset"),
        (["compare", "--steps", "-1"], "steps"),
        (["compare", "--seq-len", "2"], "seq_len"),
        (["compare", "--targets", ","], "targets"),
        (["compare", "--rank", "many"], "--rank"),  # argparse's own errors are one line too
        (["compare", "--device", "tpu"], "--device"),
        (["estimate", "--bits", "5"], "bits"),
        (["estimate", "--rank", "0"], "rank"),
        (["estimate", "--model", "nobody-here/no-such-model-xyz"], "model"),
        (["model-path", "nobody-here/no-such-model-xyz"], "model"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, field, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    try:
        rc = cli.main(args)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == 2
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("workbench: error:") and field in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_cli_subprocess_exit_status(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WORKBENCH_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "compare", "--rank", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "workbench: error: rank must be at least 1; got 0"
    assert proc.stdout == ""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "compare", "--no-such-flag"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == ["workbench: error: unrecognized arguments: --no-such-flag"]
