"""`workbench notebooks DIR` (cli/notebooks.py): the shipped notebooks copied into a folder; a notebook already
there is someone's work and is kept, and a folder that cannot be made is one line."""

from __future__ import annotations

from workbench import cli
from workbench.core.paths import notebooks_dir


def test_the_shipped_notebooks_are_copied_and_one_already_there_is_kept(tmp_path, capsys):
    shipped = sorted(p.name for p in notebooks_dir().glob("*.ipynb"))
    assert shipped  # the package ships them
    out = tmp_path / "mine"
    assert cli.main(["notebooks", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == shipped
    assert all((out / n).read_bytes() == (notebooks_dir() / n).read_bytes() for n in shipped)
    said = capsys.readouterr().out
    assert said.count("wrote ") == len(shipped) and f"jupyter lab {out}" in said

    (out / shipped[0]).write_text("my edits")
    assert cli.main(["notebooks", str(out)]) == 0
    said = capsys.readouterr().out
    assert (out / shipped[0]).read_text() == "my edits"  # never overwritten
    assert f"kept {out / shipped[0]} (already there)" in said and said.count("wrote ") == 0


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["notebooks", str(blocker / "notebooks")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("workbench: error: dir:") and "is a file" in err[0]
