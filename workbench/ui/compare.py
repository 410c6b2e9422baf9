"""Compare: the same prompt answered by base, LoRA and QLoRA side by side, and a scored evaluation.

Long because: answering (streamed, column by column) and evaluating (the ✓/✗ table, the best and worst
examples, each score's interval and the paired verdicts) share the run picker, the session and the one job;
split, each half would reach into the other for them.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench import data as data_mod
from workbench.analysis.eval_plan import seed_spread
from workbench.analysis.sequential import all_settled, plan, rounds, score_until_settled
from workbench.analysis.verdicts import variant_pairs, verdicts_what, within_run
from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import Progress, Stages
from workbench.engine.generate import DecodeSettings
from workbench.engine.models import CPU_4BIT_SPEED_NOTE
from workbench.records import runs, scan
from workbench.records.results import VariantResult, best_and_worst, interval_fields
from workbench.ui.common import Quiet, error_html, message, verdicts_html
from workbench.ui.state import AppState

COLUMNS = ["base", "lora", "qlora"]
BASE_ONLY = "base-only"  # the picker's value for "no run": a string, since a None value shows as no selection
NO_RUN = "(no run yet: base model only)"
NO_RUN_CHOSEN = "(none: base model only)"


def _cell(text: str, width: int) -> str:
    """A table cell on one line: the text cut to `width` characters, all of it on hover."""
    flat = " ".join(text.split())
    shown = flat if len(flat) <= width else flat[: width - 1] + "…"
    return f"<td title='{html.escape(flat, quote=True)}'>{html.escape(shown)}</td>"


def _answer_html(text: str, cls: str = "wb-answer-text") -> str:
    return (
        f"<div class='{cls}' style='white-space:pre-wrap;border:1px solid #ddd;padding:6px;"
        f"min-height:4em'>{html.escape(text)}</div>"
    )


class AnswerColumn(widgets.VBox):
    def __init__(self, variant: str):
        self.variant = variant
        self.title = widgets.HTML(f"<b>{VARIANTS[variant].title}</b>")
        self.text = widgets.HTML(_answer_html(""))
        self.stats = widgets.HTML()
        self.answer = ""
        super().__init__([self.title, self.text, self.stats], layout=widgets.Layout(width="32%", margin="0 4px"))
        self.add_class("wb-answer")
        self.add_class(f"wb-answer-{variant}")

    def show(self, text: str) -> None:
        self.answer = text
        self.text.value = _answer_html(text)

    def note(self, kind: str, text: str) -> None:
        self.stats.value = message(kind, text)


class ComparePanel(widgets.VBox):
    """Prompt, decoding settings, Generate and Evaluate. Shown alone: ComparePanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        self.run = widgets.Dropdown(
            description="Run",
            layout=widgets.Layout(width="520px"),
            tooltip="Which run's adapters answer (newest first)",
        )
        self.prompt = widgets.Textarea(
            description="Prompt",
            layout=widgets.Layout(width="640px", height="70px"),
            tooltip="Asked of every variant with the same settings and seed",
        )
        self.template = widgets.HTML()
        self.wrap_button = widgets.Button(
            description="Wrap in template",
            icon="indent",
            tooltip="Put the prompt in the task's prompt template: the form the adapters were trained to answer",
        )
        self.max_new_tokens = widgets.IntSlider(
            value=48,
            min=1,
            max=512,
            description="Max new tokens",
            continuous_update=False,
            tooltip="Longest answer, in tokens",
        )
        self.temperature = widgets.FloatSlider(
            value=0.0,
            min=0.0,
            max=2.0,
            step=0.05,
            description="Temperature",
            continuous_update=False,
            tooltip="0 = greedy (the same answer every time); above 0 samples, more varied as it rises",
        )
        self.seed = widgets.BoundedIntText(
            value=0,
            min=0,
            max=2**31 - 1,
            description="Seed",
            tooltip="Sampling seed: the same seed gives the same answers",
        )
        for w in (self.max_new_tokens, self.temperature, self.seed):
            w.style.description_width = "110px"
        self.generate_button = widgets.Button(
            description="Generate",
            icon="comments",
            button_style="primary",
            tooltip="Answer the prompt with every variant, side by side",
        )
        self.evaluate_button = widgets.Button(
            description="Evaluate", icon="check", tooltip="Score every variant on the task's held-out examples"
        )
        self.eval_scope = widgets.Dropdown(
            options=[("the run's examples", "run"), ("until settled, up to all held-out", "all")],
            value="run",
            description="Evaluate on",
            tooltip="The run's examples: read back from the score cache after a run. Up to all: scored in rounds "
            "past them, stopping once every comparison is settled",
            layout=widgets.Layout(width="340px"),
        )
        self.eval_scope.style.description_width = "90px"
        self.status = widgets.HTML()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="300px"))
        self.progress_text = widgets.Label()
        self.progress_box = widgets.HBox([self.progress, self.progress_text], layout=widgets.Layout(display="none"))
        self.columns = {v: AnswerColumn(v) for v in COLUMNS}
        self.answers_box = widgets.HBox(list(self.columns.values()))
        self.eval_summary = widgets.HTML()
        self.verdicts = widgets.HTML()
        # the ✓/✗ table and the best/worst examples side by side where both fit whole (about 1,200 px), else one
        # under the other: each box claims its width before it wraps and scrolls inside itself, so neither is drawn
        # over the other, and at JupyterLab's default width the ✓/✗ table gets the whole width for its columns
        self.eval_table = widgets.HTML(layout=widgets.Layout(flex="1 1 760px", min_width="0", overflow="auto"))
        self.extremes = widgets.HTML(
            layout=widgets.Layout(flex="1 1 420px", min_width="0", overflow="auto", margin="0 0 0 12px")
        )
        self.eval_area = widgets.Box(
            [self.eval_table, self.extremes], layout=widgets.Layout(flex_flow="row wrap", width="100%")
        )
        self.eval_area.add_class("wb-eval-area")
        super().__init__(
            [
                self.run,
                self.prompt,
                widgets.HBox([self.wrap_button, self.template]),
                widgets.HBox([self.max_new_tokens, self.temperature, self.seed]),
                widgets.HBox([self.generate_button, self.evaluate_button, self.eval_scope]),
                self.status,
                self.progress_box,
                self.answers_box,
                self.eval_summary,
                self.verdicts,
                self.eval_area,
            ]
        )
        self.add_class("wb-compare")
        self.generate_button.on_click(lambda _: self.generate())
        self.evaluate_button.on_click(lambda _: self.evaluate())
        self.wrap_button.on_click(lambda _: self.wrap())
        self._base_only = False  # the user chose "no run" while runs exist
        self._quiet = Quiet()
        self.run.observe(self._on_run, "value")
        self.state.subscribe(self._on_state)
        self.evaluation: dict[str, dict] = {}
        self.rounds = None  # the last Evaluate's rounds (sequential.Scored), when it scored in rounds
        self._refresh_runs()
        self._default_prompt()

    # ------------------------------------------------------------------ which run, which task

    def _refresh_runs(self) -> None:
        """The picker always shows what answers: the run in use, else (after a kernel restart, say) the newest
        run with adapters, else the base model alone."""
        root = self.state.runs_dir.resolve()
        found = [r.path.resolve() for r in scan.find_runs(self.state.runs_dir) if r.trained_variants()]
        last = self.state.last_run.resolve() if self.state.last_run is not None else None
        if last is not None and last not in found and runs.Run(last).finished:
            found.insert(0, last)
        if last is None and found and not self._base_only:
            last = found[0]
            self.state.use_run(last)  # notifies "run": this picker is refreshed again, with the run chosen
            return
        options = [(NO_RUN_CHOSEN if found else NO_RUN, BASE_ONLY)] + [
            (str(p.relative_to(root)) if p.is_relative_to(root) else str(p), p) for p in found
        ]
        with self._quiet():
            self.run.options = options
            self.run.value = last if last in found else BASE_ONLY

    def _on_run(self, change) -> None:
        if self._quiet:
            return
        self._base_only = change["new"] == BASE_ONLY
        self.state.use_run(None if self._base_only else change["new"])

    def _on_state(self, what: str) -> None:
        if what in ("run", "runs"):
            self._refresh_runs()
            self._default_prompt()
        elif what == "config" and self.state.last_run is None:
            self._default_prompt()

    def run_config(self) -> RunConfig:
        """Settings of the selected run (its task and model), or the current ones before any run."""
        if self.state.last_run is not None and runs.Run(self.state.last_run).finished:
            return runs.Run(self.state.last_run).config()
        return self.state.config

    def task(self) -> data_mod.Task:
        return data_mod.task_for(self.run_config())

    def _default_prompt(self) -> None:
        try:
            task = self.task()
        except (ValueError, OSError):
            return
        prompts = task.sample_prompts
        template = task.prompt_template
        self.wrap_button.disabled = template is None
        self.template.value = (
            f"<span class='wb-template'>the task's prompts read: <code style='white-space:pre-wrap'>"
            f"{html.escape(template)}</code></span>"
            if template
            else "<span class='wb-template'>this task continues text: any prompt is asked as it is</span>"
        )
        if prompts and (not self.prompt.value or self.prompt.value in getattr(self, "_defaults", ())):
            self.prompt.value = prompts[0]
        self._defaults = set(prompts)

    def wrap(self) -> str:
        """Put the prompt box's text in the task's prompt template (what the adapters learned to answer)."""
        self.prompt.value = self.task().wrap(self.prompt.value)
        return self.prompt.value

    def _variants(self) -> list[str]:
        session = self.state.session()
        extra = [v for v in session.variants() if v not in COLUMNS]
        for v in extra:
            if v not in self.columns:
                self.columns[v] = AnswerColumn(v)
        for v, col in self.columns.items():  # the base's true width: a float32 base is no 16-bit one
            col.title.value = f"<b>{VARIANTS[v].title_for(session.base_dtype)}</b>"
        self.answers_box.children = [self.columns[v] for v in [*COLUMNS, *extra]]
        return [*COLUMNS, *extra]

    # ------------------------------------------------------------------ generate

    def decode(self) -> DecodeSettings:
        return DecodeSettings(
            max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value, seed=self.seed.value
        )

    def generate(self) -> str | None:
        """Answer the prompt with every variant in turn, each streamed into its column."""
        prompt = self.prompt.value.strip()
        if not prompt:
            self.status.value = message("warn", "Type a prompt first.")
            return "empty prompt"
        try:
            decode = self.decode()
            chat = self.task().chat
        except ValueError as exc:
            self.status.value = error_html(exc)
            return str(exc)
        variants = self._variants()
        for col in self.columns.values():
            col.show("")
            col.note("info", "waiting…")

        def work() -> None:
            session = self.state.session()
            for v in variants:
                col = self.columns[v]
                reason = session.missing_reason(v)
                if reason:
                    col.note("warn", reason)
                    continue
                col.note("info", "loading the model…")
                session.model_for(v)
                col.note("info", "generating…")
                g = session.answer(v, prompt, decode, chat=chat, on_text=col.show)
                col.show(g.text)
                note = g.summary()
                if VARIANTS[v].bits == 4 and session.device_type == "cpu":
                    note += " · " + CPU_4BIT_SPEED_NOTE
                col.note("ok", note)
            self.status.value = message("ok", "done: same prompt, settings and seed for every column")

        return self._start("generating", work)

    def _start(self, name: str, work) -> str | None:
        self.status.value = message("info", f"{name}…")
        self.generate_button.disabled = self.evaluate_button.disabled = True
        refused = self.state.jobs.start(name, work, on_error=self._on_error, on_done=self._on_done)
        if refused:
            self._on_done()
            self.status.value = message("warn", refused)
        return refused

    def _on_error(self, exc: BaseException, details: str) -> None:
        self.status.value = error_html(exc, details)

    def _on_done(self) -> None:
        self.generate_button.disabled = self.evaluate_button.disabled = False

    def wait(self, timeout: float | None = None) -> bool:
        return self.state.jobs.join(timeout)

    # ------------------------------------------------------------------ evaluate

    def evaluate(self) -> str | None:
        """Score each variant on the eval split: a ✓/✗ table per example and the accuracy per variant."""
        cfg = self.run_config()
        try:
            task = self.task()
            # the examples the run scored (a preset's size over a smaller split is all of it), so its scores pair
            # with these and the score cache has them
            examples = task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
        except ValueError as exc:
            self.status.value = error_html(exc)
            return str(exc)
        self.evaluation = {}
        self.rounds = None
        self.eval_summary.value = self.eval_table.value = self.extremes.value = self.verdicts.value = ""
        common = dict(seq_len=cfg.train.seq_len, scoring=task.scoring)

        def show(v: str, ev) -> None:
            self.evaluation[v] = {**ev.to_dict(), "predictions": ev.predictions, "scores": ev.scores()}

        # the budget scoring in rounds may spend: the run's examples, or the whole split (the run's are its first looks)
        whole = task.eval_split(0) if self.eval_scope.value == "all" else examples

        def work() -> None:
            session = self.state.session()
            ready = [v for v in self._variants() if session.missing_reason(v) is None]
            self.progress_box.layout.display = "flex"
            kept, notes = {}, []  # what the score cache has on the first examples, and when it was scored
            for v in ready:
                entry = session.kept(v, examples, **common)
                if entry is not None:
                    kept[v] = entry.result
                    notes.append(f"{v} scored {entry.when}")
            pairs = variant_pairs(ready)
            answers = task.scoring == "exact_match" and not isinstance(examples, data_mod.TextSource)
            if answers:  # the whole split kept (an earlier Evaluate, a run of all of it) is read whole
                for v in ready:
                    entry = session.kept(v, whole, **common) if len(whole) > len(examples) else None
                    if entry is not None:
                        kept[v] = entry.result
            todo = [v for v in ready if len(kept[v].losses if v in kept else []) < len(whole)]
            if not (todo and pairs and answers):  # nothing to score, nothing to compare, or no right answers
                split = whole if answers and not todo else examples  # all of it kept: shown whole
                stages = Stages(self._on_progress, len(ready))
                for i, v in enumerate(ready, 1):
                    progress = stages.begin("evaluate", v, len(split), "examples")
                    if v in kept and len(kept[v].losses) == len(split):  # read above: not read or encoded again
                        progress(len(split), len(split), "examples")  # counted as a scoring counts it: all done
                        ev = kept[v]
                    else:
                        self.status.value = message("info", f"evaluating {v} ({i}/{len(ready)})…")
                        ev, _ = session.scored(v, split, progress=progress, **common)
                    show(v, ev)
                    self._show_evaluation(task, session.base_dtype)
                scope = f"all {len(split)} held-out examples" if split is whole else f"{len(split)} held-out examples"
            else:  # in rounds of the same examples, until every comparison is settled (workbench.analysis.sequential)
                stages = Stages(self._on_progress, len(todo) * len(rounds(len(whole))))
                known = [r.accuracy for r in kept.values() if r.accuracy is not None]
                how = plan(len(whole), sum(known) / len(known) if known else 0.8)  # near the run's own accuracies

                def score(v: str, start: int, stop: int):
                    self.status.value = message(
                        "info", f"evaluating {v}: examples {start + 1}–{stop} of {len(whole)} ({how})…"
                    )
                    part = whole[start:stop]
                    progress = stages.begin("evaluate", v, len(part), "examples")
                    return session.scored(v, part, progress=progress, keep=False, **common)[0]

                def on_look(state) -> None:
                    self.rounds = state
                    for v, ev in state.results.items():
                        show(v, ev)
                    self._show_evaluation(task, session.base_dtype)

                state = score_until_settled(score, ready, len(whole), pairs, kept=kept, on_look=on_look)
                for v, n in state.scored.items():  # the whole split scored now: kept for the next Evaluate
                    if n and len(state.results[v].losses) == len(whole):
                        session.keep(v, whole, state.results[v], **common)
                done = sorted({len(r.losses) for r in state.results.values()})
                reached = f"{done[-1]}" if len(done) == 1 else f"{done[0]} to {done[-1]}"
                why = (
                    "every comparison was settled"
                    if all_settled(state.pairs)
                    else "the budget was spent with a comparison not settled"
                )
                scope = f"{reached} of the {len(whole)} held-out examples ({why})"
            skipped = [v for v in self._variants() if v not in ready]
            self.status.value = message(
                "ok",
                f"evaluated {', '.join(ready)} on {scope}"
                + (f" ({', '.join(skipped)}: no adapter)" if skipped else "")
                + (f"; from the score cache, not scored again: {', '.join(notes)}" if notes else ""),
            )

        return self._start("evaluating", work)

    @staticmethod
    def _extremes_html(preds: dict[str, list[dict]]) -> str:
        """Per variant, the held-out examples it scored worst and best by answer loss."""
        parts = []
        for v, rows in preds.items():
            best, worst = best_and_worst(rows)
            if not best:
                continue
            lines = "".join(
                f"<tr><td>{kind}</td><td>{p['loss']:.3f}</td>{_cell(p['prompt'], 34)}"
                f"{_cell(('✓ ' if p['correct'] else '✗ ') + p['prediction'], 22)}</tr>"
                for kind, group in (("worst", worst), ("best", best))
                for p in group
            )
            parts.append(
                f"<b>{html.escape(v)}</b><table class='wb-extremes' style='font-size:90%;white-space:nowrap'>"
                f"<tr><th></th><th>loss</th><th>prompt</th><th>answer</th></tr>{lines}</table>"
            )
        return "<div class='wb-extremes-box'>" + "".join(parts) + "</div>" if parts else ""

    def _on_progress(self, p: Progress) -> None:
        self.progress.max = max(1, p.total)
        self.progress.value = min(p.done, self.progress.max)
        self.progress_text.value = p.describe()

    def scored(self, v: str) -> VariantResult:
        """Variant v's evaluation as a result with its 95% intervals (what the summary and the Results tab show)."""
        e = self.evaluation[v]
        return VariantResult(
            name=v,
            bits=VARIANTS[v].bits,
            accuracy=e["accuracy"],
            eval_loss=e["eval_loss"],
            perplexity=e["perplexity"],
            **interval_fields(e["scores"]),
        )

    def verdict_sentences(self, dtype: str | None = None) -> list[str]:
        """The paired comparisons of the evaluated variants (base against each adapter, LoRA against QLoRA) on
        the examples just scored, by the titles the columns show."""
        names = list(self.evaluation)
        titles = {v: VARIANTS[v].title_for(dtype) for v in names}
        if self.rounds is not None:  # scored in rounds: each verdict by its sequential test, looks counted
            return [*self.rounds.sentences(titles), verdicts_what(1)]
        scores = {v: {"eval": self.evaluation[v]["scores"]} for v in names}
        spread = seed_spread(self.run_config().to_dict(), self.state.runs_dir)
        return [s for p in within_run(scores, names, titles, spread) for s in p.sentences()]

    def _show_evaluation(self, task: data_mod.Task, dtype: str | None = None) -> None:
        names = list(self.evaluation)
        cells = []
        for v in names:
            r = self.scored(v)
            n = r.eval_examples or len(self.evaluation[v]["predictions"])
            ci = r.interval("accuracy")
            score = (
                f"accuracy <b>{r.accuracy:.1%}</b>" + (f" ({100 * ci.low:.1f}–{100 * ci.high:.1f})" if ci else "")
                if r.accuracy is not None
                else f"perplexity <b>{r.with_text('perplexity', 1, 2)}</b>"
            )
            cells.append(
                f"<td><b>{html.escape(VARIANTS[v].title_for(dtype))}</b><br>{score}<br>"
                f"eval loss {r.with_text('eval_loss', 1, 4)}<br><small>95% intervals, {n} examples</small></td>"
            )
        self.eval_summary.value = f"<table class='wb-eval-summary'><tr>{''.join(cells)}</tr></table>"
        self.verdicts.value = verdicts_html(self.verdict_sentences(dtype))
        preds = {v: self.evaluation[v]["predictions"] for v in names if self.evaluation[v]["predictions"]}
        if not preds:
            self.eval_table.value = message(
                "info", "This task is scored by perplexity, so there are no per-example answers to tick."
            )
            return
        # scored in rounds, a variant whose comparisons settled stops early: its later cells stay empty
        first = max(preds.values(), key=len)
        head = "<tr><th>prompt</th><th>expected</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in preds) + "</tr>"
        rows = []
        for i, p in enumerate(first):
            cols = "".join(
                _cell(f"{'✓' if preds[v][i]['correct'] else '✗'} {preds[v][i]['prediction']}", 60)
                if i < len(preds[v])
                else _cell("", 60)
                for v in preds
            )
            rows.append(f"<tr>{_cell(p['prompt'], 70)}{_cell(p['answer'], 30)}{cols}</tr>")
        # a box that scrolls, rows one line each (the full text on hover), the header kept in view
        self.extremes.value = self._extremes_html(preds)
        self.eval_table.value = (
            "<div class='wb-eval-scroll' style='max-height:320px;overflow:auto;border:1px solid #ddd'>"
            "<style>.wb-eval th{position:sticky;top:0;background:#fff}</style>"
            f"<table class='wb-eval' style='font-size:90%;white-space:nowrap'>{head}{''.join(rows)}</table></div>"
        )
