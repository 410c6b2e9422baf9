"""Results (records.results): VariantResult's fields and the schema a results.json is checked against, intervals
from scores, the Pareto frontier, long names shortened, the best and worst examples."""

from __future__ import annotations

import math

import pytest

from workbench.core import stats
from workbench.experiments import sweep
from workbench.records.results import DOC_CHECKS, ROW_CHECKS, VariantResult, interval_fields, pareto_front


def test_the_layout_table_covers_what_every_writer_writes():
    """DOC_CHECKS is the one list of results.json's keys: CompareResult's and ExperimentResult's all in it."""
    from workbench.experiments.experiment import ExperimentResult

    made = ExperimentResult(config={}, device="cpu", device_type="cpu", model_path="m", task="t")
    assert set(made.to_json()) == set(DOC_CHECKS)
    assert set(ROW_CHECKS) == set(VariantResult.field_names())


def test_long_names_are_cut_in_the_middle():
    from workbench.records.results import shorten

    name = "20261201-135300-lora+qlora-r8-all-linear"
    short = shorten(name, 28)
    assert len(short) == 28 and short.startswith("20261201-1353") and short.endswith("all-linear") and "…" in short
    assert shorten("short", 28) == "short"


def test_best_and_worst_examples_by_loss():
    from workbench.records.results import best_and_worst

    preds = [{"prompt": str(i), "loss": loss} for i, loss in enumerate([0.5, 0.1, 2.0, 0.3, 1.0])]
    best, worst = best_and_worst(preds, n=2)
    assert [p["prompt"] for p in best] == ["1", "3"] and [p["prompt"] for p in worst] == ["2", "4"]
    assert best_and_worst([{"prompt": "x"}]) == ([], [])  # runs from before per-example losses


def test_interval_fields_from_scores():
    scores = {"keys": ["a", "b", "c", "d"], "losses": [0.1, 0.3, 0.2, 0.6], "tokens": [2, 2, 2, 2]}
    fields = interval_fields({**scores, "correct": [True, True, False, True]})
    assert fields["eval_examples"] == 4
    ci = stats.accuracy_interval(3, 4)
    assert (fields["accuracy_low"], fields["accuracy_high"]) == (ci.low, ci.high)
    assert fields["eval_loss_low"] <= 0.3 <= fields["eval_loss_high"]
    assert fields["perplexity_low"] == pytest.approx(math.exp(fields["eval_loss_low"]))
    general = {"keys": ["g0", "g1"], "losses": [2.0, 2.4], "tokens": [64, 64], "base_losses": [1.9, 2.0]}
    both = interval_fields({**scores, "correct": None}, general)
    assert "accuracy_low" not in both and both["forgetting_low"] <= 0.25 <= both["forgetting_high"]


def test_pareto_front():
    # (memory, accuracy): 1 beats 2 (less memory, more accuracy); 3 costs more but scores higher
    pts = [(100, 50), (90, 60), (120, 55), (200, 90), (200, 80), (150, 60)]
    assert pareto_front(pts) == [1, 3]
    assert pareto_front([(1, 5.0), (2, 4.0), (3, 4.5)], higher_is_better=False) == [0, 1]
    assert pareto_front([]) == [] and pareto_front([(1, 1)]) == [0]
    assert pareto_front([(1, 1), (1, 1)]) == [0]  # a tie is not a second point on the frontier
    assert sweep.targets_label(["q_proj", "v_proj"]) == "q_proj+v_proj"


def test_a_results_table_shows_what_the_adapters_start_did_only_where_an_init_ran():
    import pandas as pd

    from workbench.records.results import VariantResult, results_frame

    plain = results_frame([VariantResult("base", 16), VariantResult("qlora", 4, init="gaussian")])
    assert "init" not in plain.columns
    started = results_frame(
        [
            VariantResult("lora", 16, init="pissa", init_seconds=2.84),
            VariantResult(
                "qlora", 4, init="pissa", init_seconds=8.6, init_error_before=0.0936, init_error_after=0.0896
            ),
        ]
    )
    assert list(started.loc["qlora", ["init", "init s", "4-bit error as loaded %", "4-bit error at step 0 %"]]) == [
        "pissa",
        8.6,
        9.36,
        8.96,
    ]
    assert pd.isna(started.loc["lora", "4-bit error as loaded %"])  # a 16-bit base has no rounding to take back
