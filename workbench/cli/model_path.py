"""`workbench model-path`: the local folder a model name resolves to (the embedded default converted once)."""

from __future__ import annotations

import argparse

from workbench.core.config import DEFAULT_MODEL


def add_parser(sub) -> None:
    m = sub.add_parser("model-path", help="print the local folder a model name resolves to")
    m.add_argument("name", nargs="?", default=DEFAULT_MODEL)


def run(a: argparse.Namespace) -> int:
    from workbench.engine.resolve import resolve_model

    print(resolve_model(a.name))
    return 0
