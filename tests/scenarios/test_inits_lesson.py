"""The inits lesson (bench/inits_lesson.py, docs/guide/inits.md, notebook 07) read from run folders and from its
export, on runs made up here (nothing trains): the settings named and pooled by seed, the verdicts paired by seed,
forgetting measured against the base the run started from (not the residual a moved-base init leaves), the export
re-deriving the same table, and the published file re-deriving the page's figures once it is there."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import REPO, good_doc, is_png, write_doc

from bench import inits_lesson
from workbench.core.events import MetricEvent
from workbench.records.results import interval_fields

N = 60  # eval examples
BLOCKS = 5  # general-text blocks
BASE_GENERAL = [3.0, 3.5, 4.0, 3.2, 3.8]
PUBLISHED = REPO / "docs" / "data" / "inits-dates.json"


def write_run(root, name: str, variant: str, seed: int, right: float, init: str = "gaussian", residual: bool = False):
    """A finished run of one variant: `right` of its N examples answered right (its seed shifts which), a general
    text it forgot 0.1 nats of; `residual`: its "adapter off" was a moved base's residual (losses near 16)."""
    rng = np.random.default_rng([seed, *map(ord, name)])
    doc = good_doc()
    doc["config"]["variants"] = [variant]
    doc["config"]["train"]["seed"] = seed
    doc["config"]["train"]["eval_examples"] = N
    if init != "gaussian":
        doc["config"]["lora"]["init"] = init
    correct = [bool(x) for x in rng.random(N) < right]
    losses = [0.05 if c else 1.5 + rng.random() for c in correct]
    scores = {"keys": [f"e{i}" for i in range(N)], "tokens": [4] * N, "losses": losses, "correct": correct}
    general = {
        "keys": [f"g{i}" for i in range(BLOCKS)],
        "tokens": [100] * BLOCKS,
        "losses": [b + 0.1 + 0.02 * seed for b in BASE_GENERAL],
        "base_losses": [16.0] * BLOCKS if residual else BASE_GENERAL,
    }
    row = doc["variants"][1]
    row.update(name=variant, bits=4 if variant == "qlora" else 16, accuracy=sum(correct) / N, eval_examples=N)
    row.update(init=init, eval_loss=float(np.mean(losses)), **interval_fields(scores, general))
    row.update(general_loss=3.6, forgetting=float(np.mean(general["losses"]) - np.mean(general["base_losses"])))
    if init != "gaussian":
        row.update(init_seconds=2.0 + seed, init_error_before=0.094, init_error_after=0.090)
    doc["variants"] = [row]
    folder = root / name
    write_doc(folder, doc)
    (folder / "scores.json").write_text(json.dumps({variant: {"eval": scores, "general": general}}))
    rows = [MetricEvent(variant, s, 4, 2.0 / s + 0.01 * seed, 1e-3, 1.0, 1, 1, float(s)) for s in range(1, 5)]
    (folder / "metrics.csv").write_text(
        ",".join(MetricEvent.field_names())
        + "\n"
        + "".join(",".join(str(v) for v in m.to_dict().values()) + "\n" for m in rows)
    )


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, f"lora-{seed}", "lora", seed, 0.95)
        write_run(root, f"qlora-{seed}", "qlora", seed, 0.45)
        write_run(root, f"pissa-{seed}", "qlora", seed, 0.46, init="pissa", residual=True)
    return root


def test_the_lesson_from_run_folders_and_from_its_export_says_the_same(runs, tmp_path):
    les = inits_lesson.from_runs(runs)
    assert list(les.settings) == ["LoRA", "QLoRA", "QLoRA + PiSSA"]
    assert all(g.n == 3 and g.seeds == [0, 1, 2] for g in les.settings.values())
    lines = inits_lesson.table(les).splitlines()
    pissa = next(line for line in lines if line.startswith("| QLoRA + PiSSA |"))
    # forgetting against the base the run started from (0.12 over seeds 0-2), not the residual's -12.3 the run recorded
    assert "| 0.120 (" in pissa and "-12" not in pissa
    assert "| 3.0 | 9.40% → 9.00% |" in pissa  # the mean init time and 4-bit error before and after
    assert "9.40% (left as loaded)" in next(line for line in lines if line.startswith("| QLoRA |"))

    out = tmp_path / "lesson.json"
    inits_lesson.export(les.found, out, "made up", les.measured, les.spread, les.held)
    again = inits_lesson.from_file(out)
    assert inits_lesson.table(again) == inits_lesson.table(les)
    assert inits_lesson.verdict_table(again) == inits_lesson.verdict_table(les)
    assert again.measured["wall_minutes"] >= 0 and "cores" in again.measured["machine"]

    fig = tmp_path / "curves.png"
    assert inits_lesson.main([str(out), "--figure", str(fig)]) == 0 and is_png(fig)


def test_the_verdicts_pair_the_seeds_and_say_what_the_eval_cannot_see(runs):
    les = inits_lesson.from_runs(runs)
    titles = [t for t, _ in les.comparisons()]
    assert titles == ["what 4 bits cost: QLoRA against LoRA", "QLoRA + PiSSA against plain QLoRA"]
    cost, pissa = (p for _, p in les.comparisons())
    acc = cost.get("accuracy")
    assert acc.unit == "runs" and acc.runs == (3, 3) and acc.n == N and acc.gap < -0.3 and acc.real
    assert not pissa.get("accuracy").real  # 1 point apart on 60 examples: could be chance
    said = "\n".join(inits_lesson.sentences(les))
    assert "over 3 seeds each on the same 60 examples" in said
    won = "\n".join(inits_lesson.won_back(les))
    # accuracy: 4 bits cost a real gap, so each init's share of it is said with its range
    assert re.search(
        r"accuracy: 4 bits cost -\d+\.\d points, p .*: real; of that, won back: QLoRA \+ PiSSA [+-]\d+%", won
    )
    # forgetting is the same in every setting here: no cost the eval can see
    assert "forgetting: this eval cannot see what 4 bits cost" in won
    assert "3 seeds of each setting on 60 examples" in inits_lesson.resolves(les)


def test_a_name_that_would_pool_two_settings_is_refused(runs):
    doc = json.loads((runs / "qlora-0" / "results.json").read_text())
    doc["config"]["lora"]["rank"] = 4  # QLoRA still, but another rank
    (runs / "qlora-0" / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="QLoRA differ in more than the seed"):
        inits_lesson.from_runs(runs)


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="the measurement is not published yet")
def test_the_published_lesson_is_derived_from_its_scores():
    les = inits_lesson.from_file(PUBLISHED)
    assert len(les.found) == 35 and les.seeds == 5 and les.n == 300
    page = (REPO / "docs" / "guide" / "inits.md").read_text(encoding="utf-8")
    for row in inits_lesson.table(les).splitlines()[2:] + inits_lesson.verdict_table(les).splitlines()[2:]:
        assert row in page, f"docs/guide/inits.md no longer says what its scores give:\n{row}"
