"""Run every bad input of tests/scenarios/support/bad_inputs.py through the CLI, for real, and print the markdown
table of docs/reliability.md ("## Bad input"): what each input is, the command, and the exact line it printed.

    .venv/bin/python tools/bad_inputs_table.py > /tmp/table.md

Offline and in-process, on the tiny test model (built here, in a temporary folder) and the embedded default
model's config; about ten seconds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ["HF_HUB_OFFLINE"] = "1"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def main() -> int:
    warnings.simplefilter("ignore")  # library warnings are not what a case prints
    scratch = Path(tempfile.mkdtemp(prefix="workbench-bad-inputs-"))
    os.environ["WORKBENCH_HOME"] = str(scratch / "home")  # like the tests: nothing of the user's is touched
    from helpers import build_tiny_model, build_tiny_tokenizer
    from scenarios.support.bad_inputs import CASES, run, unmet

    tiny = scratch / "tiny-model"
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)

    print("| input | command | what it does |")
    print("|---|---|---|")
    for case in CASES:
        command = f"`workbench {_cell(case.argv)}`"
        why = unmet(case)
        if why:
            print(f"| {case.what} | {command} | not tried here ({why}) |")
            continue
        where = scratch / case.id
        got = run(case, where, tiny)
        if got.code == 2 and len(got.errors) == 1 and not got.loaded:
            does = f"exit 2: `{_cell(got.errors[0])}`"
        else:
            last = got.lines[-1] if got.lines else "(nothing on stderr)"
            does = f"**{'a traceback' if got.code is None else f'exit {got.code}'}**: `{_cell(last)}`"
        does = does.replace(f"{where}/", "")  # the case's folder, where its files are: as a user's cwd
        if case.known:
            does += f" (to fix: {_cell(case.known)})"
        print(f"| {case.what} | {command} | {does} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
