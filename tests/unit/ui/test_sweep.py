"""The Sweep tab (ui.sweep): a grid planned, run and charted, seeds pooled, a search as a study, Stop."""

from __future__ import annotations

import html


def test_the_sweep_tab_plans_runs_and_charts_a_grid(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {2, 4}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16, 4})):
        for value, box in boxes.items():
            box.value = value in keep
    assert "4 points: 0 already on disk, 4 to train" in s.plan_info.value
    assert s.plan_table.value.count("<tr>") == 5 and "4bit-nf4-r4-q_proj+v_proj" in s.plan_table.value
    assert "wb-eval-plan" in s.plan_info.value and "eval: 3 of the task&#x27;s 3 held-out examples" in s.plan_info.value
    s.bits[16].value = s.bits[4].value = s.bits[8].value = False  # nothing to sweep: said, and Start is off
    assert "bits" in s.plan_info.value and s.start_button.disabled
    s.bits[16].value = s.bits[4].value = True
    app.state.update("train", steps=2)
    assert s.start() is None
    assert s.wait(180)
    assert [p.status for p in s.points] == ["trained"] * 4, s.status.value
    assert s.table.value.count("</tr>") == 5 and bytes(s.chart.value).startswith(b"\x89PNG")
    assert s.progress_text.value.startswith("done · ") and "4 trained" in s.progress_text.value
    assert "frontier" in s.status.value and s.frontier()
    assert "accuracy 95% CI" in s.table.value and s.pooled.value == ""  # one seed: no pooled table
    assert {r.run.split("/")[-1] for r in app.results.rows} >= {p.label for p in s.points}  # Results has them
    assert "4 already on disk, 0 to train" in s.plan_info.value  # the same grid again: nothing to train
    s.start()
    assert s.wait(60) and [p.status for p in s.points] == ["loaded"] * 4


def test_sweep_seeds_repeat_each_point_and_pool_them(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {2}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16, 4})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    s.seeds.value = 2
    assert "4 points (2 settings × 2 seeds): 0 already on disk" in s.plan_info.value
    labels = [p.label for p in s.plan.points]
    assert labels == [
        "16bit-r2-q_proj+v_proj",
        "16bit-r2-q_proj+v_proj-seed1",
        "4bit-nf4-r2-q_proj+v_proj",
        "4bit-nf4-r2-q_proj+v_proj-seed1",
    ]
    assert all(f">{html.escape(label)}<" in s.plan_table.value for label in labels)
    assert s.start() is None and s.wait(240)
    assert [p.status for p in s.points] == ["trained"] * 4, s.status.value
    assert s.table.value.count("</tr>") == 5 and "accuracy 95% CI" in s.table.value
    # one row a setting: 2 seeds each, the mean and its interval
    assert s.pooled.value.count("</tr>") == 3 and s.pooled.value.count("<td>2</td>") == 2
    assert "16bit-r2-q_proj+v_proj</td>" in s.pooled.value
    # the frontier through the means: every name it gives is a setting (no -seed folder)
    front = s.frontier()
    assert front and all(not name.endswith("-seed1") for name in front)
    assert "frontier (each setting&#x27;s mean over its seeds)" in s.status.value
    assert bytes(s.chart.value).startswith(b"\x89PNG")


def test_the_sweep_tab_searches_as_a_study_and_lists_its_trials(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {1, 8}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    s.search.value = 3
    assert "search: 3 settings" in s.plan_info.value and "rank 1–8" in s.plan_info.value and s.plan_table.value == ""
    assert "optuna-dashboard" in s.study_info.value and s.out_dir.name == "search"
    assert s.start() is None and s.wait(240)
    assert len(s.points) == 3 and {p.status for p in s.points} == {"trained"}, s.status.value
    assert all(1 <= p.point.rank <= 8 and p.point.lr is not None for p in s.points)
    assert "3 finished" in s.study_info.value and s.trials.value.count("</tr>") == 4
    assert "complete" in s.trials.value and "worker" in s.trials.value and "person" in s.trials.value
    assert (s.out_dir / "trials.csv").is_file() and (s.out_dir / "sweep.png").is_file()
    assert bytes(s.chart.value).startswith(b"\x89PNG")
    # Results reads the study too: its folder, its trials by state and the dashboard command
    app.results.refresh()
    assert "search · study" in app.results.studies.value and "3 finished" in app.results.studies.value
    assert "optuna-dashboard" in app.results.studies.value
    (s.out_dir.parent / "broken").mkdir()
    (s.out_dir.parent / "broken" / "study.sqlite3").write_bytes(b"not a database at all" * 100)
    app.results.refresh()  # someone's damaged file is named, and everything else still shows
    assert "broken: not a readable study" in app.results.studies.value and "3 finished" in app.results.studies.value


def test_sweep_stop_starts_no_new_point_then_stops_the_running_one(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {1, 2, 4}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16})):
        for value, box in boxes.items():
            box.value = value in keep
    app.state.update("train", steps=2)
    assert s.start() is None
    s.stop()  # the first press: nothing new starts; the point going (if any) finishes
    assert "no new point will start" in s.status.value and not s.stop_button.disabled
    assert s.wait(120)
    assert len([p for p in s.points if p.status == "trained"]) <= 1 and not app.state.jobs.stop.is_set()
    assert "stopped" in s.progress_text.value


def test_the_sweep_tab_puts_the_init_on_an_axis_and_leaves_out_what_cannot_start(app):
    s = app.sweep
    for boxes, keep in ((s.ranks, {4}), (s.targets, {"q_proj,v_proj"}), (s.bits, {16, 4})):
        for value, box in boxes.items():
            box.value = value in keep
    assert [n for n, b in s.inits.items() if b.value] == ["gaussian"] and s.grid().inits is None  # no axis
    before = s.definition.default_name()
    s.inits["pissa"].value = s.inits["loftq"].value = True
    labels = [p.label for p in s.plan.points]
    assert labels == [
        "16bit-r4-q_proj+v_proj",
        "16bit-r4-q_proj+v_proj-pissa",
        "4bit-nf4-r4-q_proj+v_proj",
        "4bit-nf4-r4-q_proj+v_proj-loftq",
        "4bit-nf4-r4-q_proj+v_proj-pissa",
    ]
    assert "left out: loftq at 16 bits" in s.plan_info.value
    assert "init pissa: one fast SVD per layer (4 layers)" in s.plan_info.value
    assert s.definition.default_name() != before
    s.bits[4].value = False  # loftq has no bits left: refused in one line, Start off
    assert "inits: loftq works on 4-bit bases only" in s.plan_info.value and s.start_button.disabled
    s.bits[4].value = True
    s.search.value = 3
    assert s.definition.space.inits == ["gaussian", "loftq", "pissa"]
    for name in ("pissa", "loftq"):
        s.inits[name].value = False
    s.search.value = 0
    assert s.definition.default_name() == before  # gaussian alone again: the same study as before the row
