"""The Compare tab (ui.compare): Generate before any run and after a restart, the prompt template, answers
streamed side by side and seeded, Evaluate ticking each example, reading kept scores and scoring in rounds."""

from __future__ import annotations

import html
import re
import shutil

import pytest
from helpers import one_step_config, run_saying, tiny_config

from workbench.core.config import VARIANTS
from workbench.core.stats import accuracy_interval
from workbench.engine import score_cache, session
from workbench.experiments import run_setup
from workbench.records import runs
from workbench.ui import Workbench
from workbench.ui import compare as compare_ui


@pytest.mark.usefixtures("cold_home")
def test_the_compare_tabs_evaluate_of_a_finished_run_scores_nothing_and_says_so(
    tiny_model_dir, tiny_jsonl, tmp_path, scored
):
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import AppState

    cfg = one_step_config(tiny_model_dir, tiny_jsonl, variants="base,lora")
    run_saying(cfg, tmp_path / "runs" / "run")
    scored.clear()
    c = ComparePanel(AppState(cfg, runs_dir=tmp_path / "runs"))  # picks the newest run with adapters
    assert c.evaluate() is None and c.wait(120)
    assert scored == [] and set(c.evaluation) == {"base", "lora"}
    assert "from the score cache, not scored again: base scored " in c.status.value
    assert ", lora scored " in c.status.value and "qlora: no adapter" in c.status.value
    c.state.session().release()


@pytest.mark.usefixtures("cold_home")
def test_an_evaluate_with_nothing_kept_scores_in_rounds_keeps_the_whole_split_and_says_how_it_stopped(
    tiny_model_dir, tiny_jsonl, tmp_path, scored
):
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import AppState

    cfg = one_step_config(tiny_model_dir, tiny_jsonl, variants="base,lora")
    run_saying(cfg, tmp_path / "runs" / "run")
    examples = run_setup.setup(cfg).eval_set
    shutil.rmtree(score_cache.cache_dir())  # another machine's run, say: nothing of it kept here
    scored.clear()
    c = ComparePanel(AppState(cfg, runs_dir=tmp_path / "runs"))
    assert c.evaluate() is None and c.wait(120)
    assert "wb-error" not in c.status.value, c.status.value
    assert sorted(v for v, _ in scored) == ["session", "session"]  # base and lora, each scored once
    assert c.rounds is not None and c.rounds.n == len(examples) and not c.rounds.early
    assert f"on {len(examples)} of the {len(examples)} held-out examples (" in c.status.value
    sentences = c.verdict_sentences(c.state.session().base_dtype)  # titled as the columns are
    assert sentences[0].startswith("Base model") and "examples" in sentences[0]
    assert all(html.escape(x) in c.verdicts.value for x in sentences)
    # the whole split was scored, so it was kept: the next Evaluate reads it back and scores nothing
    scored.clear()
    assert c.evaluate() is None and c.wait(120)
    assert scored == [] and c.rounds is None and "not scored again: base scored " in c.status.value
    c.state.session().release()


@pytest.mark.usefixtures("cold_home")
def test_evaluate_after_a_run_of_fewer_examples_reads_them_and_scores_on_only_where_unsettled(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The run scored the first 20 of sentiment's 600; Evaluate's budget is all 600: its first looks are the
    run's scores, and only what the comparisons still need is scored, each slice once."""
    from workbench.ui.compare import ComparePanel
    from workbench.ui.state import AppState

    cfg = tiny_config(tiny_model_dir, None, variants="base,lora", steps=1, eval_examples=20)
    cfg.data, cfg.task = None, "sentiment"
    run_saying(cfg, tmp_path / "runs" / "run")
    slices: list[tuple[str, int]] = []
    real = session.evaluate

    def counting(model, tok, examples, *a, base=False, **k):
        slices.append(("base" if base else "lora", len(examples)))
        return real(model, tok, examples, *a, base=base, **k)

    monkeypatch.setattr(session, "evaluate", counting)
    c = ComparePanel(AppState(cfg, runs_dir=tmp_path / "runs"))
    c.eval_scope.value = "all"  # up to all 600, past the run's 20
    assert c.evaluate() is None and c.wait(300)
    assert "wb-error" not in c.status.value, c.status.value
    assert "of the 600 held-out examples (" in c.status.value
    assert c.rounds is not None and c.rounds.budget == 600
    # looks at 60, 120, ...: the first 20 of each came from the run, never scored again
    assert slices and slices[0][1] == 40 and sum(n for _, n in slices) == sum(c.rounds.scored.values())
    for v in ("base", "lora"):
        assert len(c.evaluation[v]["predictions"]) == 20 + c.rounds.scored[v]
    c.state.session().release()


def test_generate_before_any_run_answers_with_base_and_says_what_to_do(app, monkeypatch):
    app.compare.prompt.value = "Review: superb"
    app.compare.max_new_tokens.value = 4
    assert app.compare.generate() is None
    assert app.wait(60)
    cols = app.compare.columns
    assert cols["base"].answer != "" and re.search(r"\d+ tokens? in", cols["base"].stats.value)
    assert "tok/s" not in cols["base"].stats.value  # 4 tokens: too short an answer to quote a speed
    assert cols["lora"].answer == "" and "train one first" in cols["lora"].stats.value
    # before any run the picker shows its one choice selected, and says what answers
    assert app.compare.run.value == compare_ui.BASE_ONLY and app.compare.run.label == compare_ui.NO_RUN


def test_the_run_picker_shows_what_answers_after_a_restart(trained):
    """A new kernel (a new Workbench on the same runs folder) answers with the newest run, and shows it."""
    again = Workbench(trained.state.config, runs_dir=trained.state.runs_dir)
    c = again.compare
    assert c.run.value is not None and c.run.value == again.state.last_run
    assert again.state.last_run.resolve() == trained.state.last_run.resolve()
    assert c.run.label and c.run.label != compare_ui.NO_RUN
    c.run.value = compare_ui.BASE_ONLY  # chosen on purpose: shown as chosen, and base alone answers
    assert again.state.last_run is None and c.run.label == compare_ui.NO_RUN_CHOSEN
    assert c.run.value == compare_ui.BASE_ONLY


def test_the_prompt_template_is_shown_and_wraps_a_free_form_prompt(app):
    c = app.compare
    assert "Review: {text}" in c.template.value and not c.wrap_button.disabled
    c.prompt.value = "superb"
    c.wrap_button.click()
    assert c.prompt.value == "Review: superb"
    c.wrap_button.click()  # already in the template: left alone
    assert c.prompt.value == "Review: superb"


def test_generate_streams_three_answers_side_by_side(trained, monkeypatch):
    c = trained.compare
    assert c.run.value == trained.state.last_run
    updates: dict[str, int] = {}
    for v, col in c.columns.items():
        col.text.observe(lambda ch, v=v: updates.__setitem__(v, updates.get(v, 0) + 1), "value")
    c.prompt.value = "Review: superb"
    c.max_new_tokens.value = 6
    c.generate_button.click()
    assert trained.wait(60)
    assert "wb-error" not in c.status.value, c.status.value
    for v in ("base", "lora", "qlora"):
        col = c.columns[v]
        assert col.answer.strip(), v
        assert re.search(r"\d+ tokens? in", col.stats.value)
    # streamed: each column's text was redrawn once per new token, not only once at the end
    for v in ("base", "lora", "qlora"):
        tokens = int(re.search(r"(\d+) tokens? in", c.columns[v].stats.value).group(1))
        assert updates.get(v, 0) >= tokens >= 1, (v, updates, tokens)
    assert updates["base"] >= 3
    assert [type(ch).__name__ for ch in c.answers_box.children] == ["AnswerColumn"] * 3
    # QLoRA's slower answers on a CPU say why, beside them; the other columns carry no such note
    assert "dequantizes" in c.columns["qlora"].stats.value and "dequantizes" not in c.columns["lora"].stats.value


def test_generate_is_repeatable_with_a_seed(trained):
    c = trained.compare
    c.prompt.value = "Review: awful"
    c.max_new_tokens.value = 5
    c.temperature.value = 1.0
    c.seed.value = 3
    texts = []
    for _ in range(2):
        c.generate()
        assert trained.wait(60)
        texts.append([c.columns[v].answer for v in ("base", "lora", "qlora")])
    assert texts[0] == texts[1]


def test_evaluate_ticks_each_example_and_scores_each_variant(trained):
    c = trained.compare
    c.evaluate_button.click()
    assert trained.wait(120)
    assert "wb-error" not in c.status.value, c.status.value
    assert set(c.evaluation) == {"base", "lora", "qlora"}
    res = {v["name"]: v for v in runs.Run(trained.state.last_run).read()["variants"]}
    dtype = trained.state.session().base_dtype
    for v, e in c.evaluation.items():
        assert 0.0 <= e["accuracy"] <= 1.0
        assert e["accuracy"] == pytest.approx(res[v]["accuracy"])  # the same adapter, reloaded from disk
        # each accuracy with its Wilson interval over the examples scored, as the run on disk has it
        right, n_scored = sum(e["scores"]["correct"]), len(e["scores"]["correct"])
        ci = accuracy_interval(right, n_scored)
        assert (ci.low, ci.high) == pytest.approx((res[v]["accuracy_low"], res[v]["accuracy_high"]))
        assert f"{e['accuracy']:.1%}</b> ({100 * ci.low:.1f}–{100 * ci.high:.1f})" in c.eval_summary.value
        # the summary titles each variant as its answer column does (a float32 base is no 16-bit one)
        title = VARIANTS[v].title_for(dtype)
        assert f"<b>{title}</b>" in c.columns[v].title.value and f"<b>{title}</b>" in c.eval_summary.value
    if dtype == "float32":
        assert "LoRA (32-bit base)" in c.eval_summary.value and "16-bit" not in c.eval_summary.value
    # under it, the paired verdicts: base against each adapter, LoRA against QLoRA, on accuracy and eval loss
    sentences = c.verdict_sentences(dtype)
    assert len(sentences) == 6 and "Is the difference real?" in c.verdicts.value
    assert c.verdicts.value.count("class='wb-verdict'") == 6
    assert sentences[0].startswith("Base model") and VARIANTS["lora"].title_for(dtype) in sentences[0]
    assert all(html.escape(s) in c.verdicts.value for s in sentences)
    assert any("chance" in s or "exactly the same" in s for s in sentences)
    n = len(c.evaluation["base"]["predictions"])
    assert c.eval_table.value.count("<tr>") == n + 1
    assert c.eval_table.value.count(">✓") + c.eval_table.value.count(">✗") == 3 * n  # a mark per cell
    assert "overflow:auto" in c.eval_table.value and "white-space:nowrap" in c.eval_table.value
    # the table and the best/worst wrap under one another rather than overlap: each claims a width and scrolls
    assert c.eval_area.layout.flex_flow == "row wrap" and c.eval_area.children == (c.eval_table, c.extremes)
    for box in c.eval_area.children:
        assert box.layout.overflow == "auto" and box.layout.flex.endswith("px")
    # beside the table, each variant's worst and best held-out examples by answer loss
    for v in ("base", "lora", "qlora"):
        assert f"<b>{v}</b>" in c.extremes.value
    assert c.extremes.value.count(">worst<") == c.extremes.value.count(">best<") == 3 * min(n, 3)
    assert c.progress_text.value.startswith("[3/3] evaluating qlora: ")  # progress, variant by variant
    assert f"{n} of {n} examples" in c.progress_text.value
