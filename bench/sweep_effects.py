"""What each setting of a sweep does, and how sure that is (the README's table, docs/guide/sweep.md).

For rank, targets, bits and the 4-bit type: the settings that differ in that one value alone (the same
everything else) are matched, each side's seeds averaged example by example, and the matched settings are
compared on the same eval examples with the runs crossed with the examples (workbench.analysis.crossed): a setting's
effect is real only where it stands out from how far the seeds, the other settings and the examples move it.

    python bench/sweep_effects.py runs/sweep-dates-seeds                 # the sweep's run folders
    python bench/sweep_effects.py docs/data/sweep-dates-seeds.json       # the published per-example scores
    python bench/sweep_effects.py runs/sweep-dates-seeds --export docs/data/sweep-dates-seeds.json

--export keeps every run's per-example scores in one compact file, so the published claims can be re-derived
without training the 36 runs again (tests/scenarios/test_published_sweep.py does, for one row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.analysis.crossed import compare_settings
from workbench.analysis.verdicts import score_tables
from workbench.core.files import write_json
from workbench.core.stats import Verdict
from workbench.records.runs import Run

# (name, the key a run's setting is read by, the value compared against, the value compared)
FACTORS = [
    ("q,v → all linear layers", "targets", "q_proj+v_proj", "all-linear"),
    ("16 bits → 4 bits (NF4)", "base", "16", "nf4"),
    ("NF4 → FP4", "base", "nf4", "fp4"),
    ("rank 2 → 16", "rank", 2, 16),
]
SETTING = ("rank", "targets", "base", "seed")
FORMAT = 1  # of the exported file


@dataclass
class Found:
    """One run of the sweep: its setting, its one variant's per-example scores (scores.json's shape), its peak."""

    setting: dict
    scores: dict
    peak_memory_bytes: int


def setting(config: dict) -> dict:
    targets = config["lora"]["target_modules"]
    bits = 4 if config["variants"][0] == "qlora" else 8 if config["variants"][0] == "lora8" else 16
    return {
        "rank": config["lora"]["rank"],
        "targets": targets if isinstance(targets, str) else "+".join(targets),
        "base": config["quant"]["quant_type"] if bits == 4 else str(bits),
        "seed": config["train"]["seed"],
    }


def from_folder(folder: Path) -> list[Found]:
    found = []
    for path in sorted(folder.glob("*/results.json")):
        run = Run(path.parent)
        if not run.finished:
            continue
        result = run.results()[0]
        scores = run.scores().get(result.name)
        if scores:
            found.append(Found(setting(run.read()["config"]), scores, result.peak_memory_bytes))
    return found


def export(found: list[Found], path: Path, source: str) -> None:
    """Every run's per-example scores in one file: the example keys once, each run's right/wrong as a string of
    0 and 1, its losses to 5 decimals (what the verdicts read; the 4th decimal of a p-value does not move)."""
    first = found[0].scores
    doc = {
        "format": FORMAT,
        "about": source,
        "eval_keys": first["eval"]["keys"],
        "eval_tokens": first["eval"]["tokens"],
        "general_keys": first["general"]["keys"],
        "general_tokens": first["general"]["tokens"],
        "runs": [],
    }
    for f in found:
        e, g = f.scores["eval"], f.scores["general"]
        order = {k: i for i, k in enumerate(e["keys"])}
        g_order = {k: i for i, k in enumerate(g["keys"])}
        at = [order[k] for k in doc["eval_keys"]]
        g_at = [g_order[k] for k in doc["general_keys"]]
        doc["runs"].append(
            {
                **f.setting,
                "peak_memory_bytes": f.peak_memory_bytes,
                "correct": "".join("1" if e["correct"][i] else "0" for i in at),
                "losses": [round(e["losses"][i], 5) for i in at],
                "general_losses": [round(g["losses"][i], 5) for i in g_at],
                "general_base_losses": [round(g["base_losses"][i], 5) for i in g_at],
            }
        )
    write_json(path, doc)


def from_file(path: Path) -> list[Found]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sweep's exported scores (format {FORMAT})")
    return [Found({k: r[k] for k in SETTING}, exported_scores(doc, r), r["peak_memory_bytes"]) for r in doc["runs"]]


def exported_scores(doc: dict, r: dict) -> dict:
    """One run's scores.json as an export holds it: the keys and tokens once for every run, its losses and
    right-or-wrong ("1"/"0") per example (bench/inits_lesson.py's export has the same form)."""
    return {
        "eval": {
            "keys": doc["eval_keys"],
            "tokens": doc["eval_tokens"],
            "losses": r["losses"],
            "correct": [c == "1" for c in r["correct"]],
        },
        "general": {
            "keys": doc["general_keys"],
            "tokens": doc["general_tokens"],
            "losses": r["general_losses"],
            "base_losses": r["general_base_losses"],
        },
    }


def load(source: Path) -> list[Found]:
    return from_file(source) if source.is_file() else from_folder(source)


@dataclass
class Effect:
    title: str
    matched: int  # settings matched on everything else
    seeds: int  # runs a setting was trained (and averaged over)
    verdicts: dict[str, Verdict]
    memory: tuple[float, float]  # the peak's change, lowest and highest over the matched settings (a share)


def effects(found: list[Found]) -> list[Effect]:
    tables = score_tables([f.scores for f in found])
    if tables is None:
        raise ValueError("the sweep's runs were not all scored on the same examples")
    out = []
    for title, key, before, after in FACTORS:
        groups: dict[tuple, dict[object, list[int]]] = {}
        for i, f in enumerate(found):
            if f.setting[key] in (before, after):
                rest = tuple((k, v) for k, v in sorted(f.setting.items()) if k not in (key, "seed"))
                groups.setdefault(rest, {}).setdefault(f.setting[key], []).append(i)
        matched = [g for g in groups.values() if before in g and after in g and len(g[before]) == len(g[after])]
        if len(matched) < 2:  # one matched setting has no spread to weigh its gap against
            continue
        verdicts = {}
        for score, table in tables.items():
            rows = np.asarray(table)
            a, b = (np.stack([rows[g[side]].mean(axis=0) for g in matched]) for side in (after, before))
            verdicts[score] = compare_settings(str(after), str(before), a, b, score=score, unit="matched setting")
        peaks = [
            statistics.median(found[i].peak_memory_bytes for i in g[after])
            / statistics.median(found[i].peak_memory_bytes for i in g[before])
            - 1
            for g in matched
        ]
        out.append(Effect(title, len(matched), len(matched[0][after]), verdicts, (min(peaks), max(peaks))))
    return out


def said(v: Verdict) -> str:
    """A table cell: the mean effect, how often chance makes it, and the verdict."""
    if v.score == "accuracy":
        gap = f"{100 * v.gap:+.1f} points"
    else:
        gap = f"{v.gap:+.3f}" if abs(v.gap) >= 0.001 else f"{v.gap:+.4f}"
    p = (
        "p < 0.1%"
        if v.p_value < 0.001
        else f"p = {100 * v.p_value:.1f}%"
        if v.p_value < 0.1
        else (f"p = {100 * v.p_value:.0f}%")
    )
    return f"{gap}, {p}: {'real' if v.real else 'could be chance'}"


def table(found: list[Found]) -> str:
    """The README's table: each setting's effect on accuracy, forgetting and peak memory."""
    lines = ["| change | accuracy | forgetting (general-text loss) | peak memory |", "|---|---|---|---|"]
    for e in effects(found):
        low, high = e.memory
        memory = (
            f"{100 * low:+.0f}%"
            if round(100 * low) == round(100 * high)
            else (f"{100 * low:+.0f} to {100 * high:+.0f}%")
        )
        acc, forgot = e.verdicts.get("accuracy"), e.verdicts.get("forgetting")
        lines.append(f"| {e.title} | {said(acc) if acc else ''} | {said(forgot) if forgot else ''} | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default="runs/sweep-dates-seeds", type=Path)
    parser.add_argument("--export", type=Path, help="write the runs' per-example scores to this file")
    a = parser.parse_args(argv)
    found = load(a.source)
    if not found:
        print(f"no finished runs in {a.source}", file=sys.stderr)
        return 2
    print(f"{len(found)} runs from {a.source}\n")
    if a.export:
        export(found, a.export, f"the seeded dates sweep, {len(found)} runs (bench/sweep_effects.py --export)")
        print(f"wrote {a.export}\n")
    print(table(found))
    for e in effects(found):
        print(f"\n## {e.title}: {e.matched} matched settings, {e.seeds} seed(s) each")
        for v in e.verdicts.values():
            # the sentence's "one run of a setting" would be a matched setting here: the figures alone
            more = f"; about {v.runs_needed} matched settings would show it" if v.runs_needed else ""
            print(f"- {v.score}: gap {v.gap:+.5f}, p {v.p_value:.4f} ({'real' if v.real else 'could be chance'}){more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
