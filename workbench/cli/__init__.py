"""`workbench compare | sweep | estimate | gap | preview | train | model-path | export | notebooks | app | worker`:
the same work as the notebook panels, headless. One module per command (its add_parser and run); the options they
share are in options.py, Ctrl-C and the terminal's bars and lines in stopping.py.

Input a user can get wrong exits with status 2 and one line that names the field. Importing this package (and
`workbench --help`) loads no torch: every command imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys

from workbench.cli import app, compare, estimate, export, gap, model_path, notebooks, preview, sweep, train, worker

EXIT_USAGE = 2
# in the order `workbench --help` lists them
COMMANDS = {
    "compare": compare,
    "sweep": sweep,
    "estimate": estimate,
    "gap": gap,
    "preview": preview,
    "train": train,
    "model-path": model_path,
    "export": export,
    "notebooks": notebooks,
    "app": app,
    "worker": worker,
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse reads only -1 and -.5 as numbers: "--lr -1e-3" and "--dropout -inf" ended in "expected one
        # argument" instead of the field's own message about the value
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)

    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(EXIT_USAGE, f"workbench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description="Explore LoRA and QLoRA fine-tuning, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: start again with the fast allocator when it is installed
        from workbench.machine.allocator import reexec_with_fast_allocator

        reexec_with_fast_allocator(["-m", "workbench.cli", *sys.argv[1:]])
    logging.basicConfig(level=os.environ.get("WORKBENCH_LOG", "WARNING"), format="%(message)s")
    args = build_parser().parse_args(argv)
    args.command_line = "workbench " + shlex.join(sys.argv[1:] if argv is None else argv)  # for the model card
    try:
        return COMMANDS[args.command].run(args)
    except ValueError as exc:  # one line even when a library's message has several
        print(f"workbench: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("workbench: aborted", file=sys.stderr)
        return 130
