"""MkDocs hooks (mkdocs.yml `hooks:`): the pages that must not drift from the code are generated at build time.

- reference/cli.md from the argparse parsers of workbench/cli/: the same text `workbench COMMAND --help` prints.
- reference/settings.md from the config dataclasses' help metadata (workbench/core/config.py): the panels' tooltips.
- index.md is the README, its links into docs/ made relative to the site.

A hook file rather than a plugin (mkdocs-gen-files and the like): nothing more to install or pin, and the build
imports the workbench it documents.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._StoreTrueAction):
        return ""
    return f"`{action.default}`"


def cli_reference() -> str:
    from workbench.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in subs._choices_actions}
    out = [
        "# Command-line reference",
        "",
        "Generated from the parsers in `workbench/cli/` when the site is built: the same text as",
        "`workbench COMMAND --help`. [The command line](../cli.md) shows them at work.",
        "",
    ]
    for name, sub in subs.choices.items():
        usage = " ".join(sub.format_usage().split())
        out += [f"## workbench {name}", "", f"{_cell(helps.get(name, ''))}.", "", "```text", usage, "```", ""]
        rows = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| option | what it does | default |", "|---|---|---|"]
            for a in rows:
                flag = ", ".join(a.option_strings) if a.option_strings else a.dest.upper()
                choices = f" One of: {', '.join(map(str, a.choices))}." if a.choices else ""
                text = (a.help or "").replace("%%", "%") + choices
                out.append(f"| `{flag}` | {_cell(text)} | {_default(a)} |")
            out.append("")
    return "\n".join(out)


def settings_reference() -> str:
    from workbench.core.config import SECTIONS, RunConfig

    out = [
        "# Settings reference",
        "",
        "Generated from the help metadata of the settings dataclasses in `workbench/core/config.py` when the site is",
        "built: the same text as the panels' tooltips and the CLI's `--help`. A run folder's `config.json` and an",
        "experiment's YAML file (`workbench train`) hold these sections and fields.",
        "",
    ]
    for section, cls in [*SECTIONS.items(), ("(top level)", RunConfig)]:
        out += [f"## {section}", "", f"`{cls.__name__}`", "", "| field | default | what it is |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS:
                continue
            if f.default is not dataclasses.MISSING:
                default = f"`{f.default!r}`"
            elif f.default_factory is not dataclasses.MISSING:
                default = f"`{f.default_factory()!r}`"
            else:
                default = ""
            out.append(f"| `{f.name}` | {_cell(default)} | {_cell(f.metadata.get('help', ''))} |")
        out.append("")
    return "\n".join(out)


def front_page() -> str:
    """The README as the site's home page: links into docs/ are relative to the site."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files, config):
    for path, content in (
        ("reference/cli.md", cli_reference()),
        ("reference/settings.md", settings_reference()),
        ("index.md", front_page()),
    ):
        files.append(File.generated(config, path, content=content))
    return files
