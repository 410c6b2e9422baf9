"""The README's table of what each setting does, re-derived from the published per-example scores of the seeded
dates sweep (docs/data/sweep-dates-seeds.json, written by `bench/sweep_effects.py --export`): anyone can check the
published claims, and the table cannot drift from the scores behind it, without training the 36 runs again."""

from __future__ import annotations

from helpers import REPO

from bench.sweep_effects import effects, from_file, table

SCORES = REPO / "docs" / "data" / "sweep-dates-seeds.json"


def test_the_readme_table_is_derived_from_the_published_scores():
    found = from_file(SCORES)
    assert len(found) == 36 and len({tuple(sorted(f.setting.items())) for f in found}) == 36
    assert {f.setting["seed"] for f in found} == {0, 1, 2}
    assert all(len(f.scores["eval"]["keys"]) == 300 and len(f.scores["general"]["keys"]) == 11 for f in found)
    rows = table(found).splitlines()[2:]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(rows) == 4
    for row in rows:
        assert row in readme, f"the README's table no longer says what its scores give:\n{row}"


def test_a_setting_effect_counts_the_matched_settings_not_the_examples():
    by_title = {e.title: e for e in effects(from_file(SCORES))}
    targets = by_title["q,v → all linear layers"]
    # 2 ranks × 3 bases matched, each averaged over its 3 seeds: the verdict speaks for 6 matched settings
    assert (targets.matched, targets.seeds) == (6, 3)
    acc = targets.verdicts["accuracy"]
    assert acc.unit == "runs" and acc.runs == (6, 6) and acc.n == 300
    assert by_title["16 bits → 4 bits (NF4)"].matched == 4 and by_title["rank 2 → 16"].matched == 6
