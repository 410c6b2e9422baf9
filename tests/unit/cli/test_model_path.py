"""`workbench model-path`: the folder a model name resolves to."""

from __future__ import annotations

from workbench import cli


def test_cli_model_path(tiny_model_dir, capsys):
    assert cli.main(["model-path", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir.resolve())
