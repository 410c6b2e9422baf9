"""`workbench notebooks`: the shipped notebooks copied into a folder, to open in JupyterLab."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from workbench.cli.options import folder


def add_parser(sub) -> None:
    n = sub.add_parser("notebooks", help="copy the shipped notebooks into a folder, to open in JupyterLab")
    n.add_argument("dir", type=folder, help="The folder to copy them into (made if missing; files there are kept).")


def run(a: argparse.Namespace) -> int:
    import shutil

    from workbench.core.files import check_writable_dir
    from workbench.core.paths import notebooks_dir

    out = check_writable_dir(Path(a.dir), "dir")
    out.mkdir(parents=True, exist_ok=True)
    for nb in sorted(notebooks_dir().glob("*.ipynb")):
        target = out / nb.name
        if target.exists():  # a notebook someone has worked in is theirs: never overwritten
            print(f"kept {target} (already there)")
            continue
        shutil.copyfile(nb, target)
        print(f"wrote {target}")
    print(f"open them with: jupyter lab {shlex.quote(str(out))}")
    return 0
