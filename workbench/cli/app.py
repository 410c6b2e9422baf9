"""`workbench app`: the workbench served as a web page by Voilà (the panels, no code cells): see page.py."""

from __future__ import annotations

import argparse
import os

from workbench.cli import page


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="serve the workbench as a web page (Voila): the panels, no code cells")
    p.add_argument(
        "--port", type=int, default=page.DEFAULT_PORT, help=f"Port to serve on (default {page.DEFAULT_PORT})."
    )
    p.add_argument(
        "--runs",
        default=os.environ.get("WORKBENCH_RUNS") or "runs",
        help="Runs folder the page trains into and reads (default $WORKBENCH_RUNS, else runs): a class shares one.",
    )
    p.add_argument("--tabs", help=f"Comma list of tabs to show (default all): {','.join(page.TABS)}.")
    p.add_argument("--preset", default="quickstart", help="Preset the page starts from (default quickstart).")
    p.add_argument("--no-browser", action="store_true", help="Do not open a browser (the default with no screen).")
    p.add_argument(
        "--ip",
        default="127.0.0.1",
        help="Address to serve on (default 127.0.0.1: this machine only). Any other, e.g. 0.0.0.0 for a class on "
        "the network, is served with a token, printed in the link to give the class.",
    )
    p.add_argument("--token", help="The token the page asks for (default: one is made when --ip is not loopback).")


def run(a: argparse.Namespace) -> int:
    listen = page.check_listen(a.ip, a.token)
    env = page.check_options(a.port, a.runs, a.tabs, a.preset, listen.ip)  # before any server starts
    return page.serve(a.port, env, open_browser=not a.no_browser and page.has_screen(), listen=listen)
