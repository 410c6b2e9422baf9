"""Compare: the same prompt answered by base, LoRA and QLoRA side by side, and a scored evaluation."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .. import data as data_mod
from .. import runs
from ..config import VARIANTS, RunConfig
from ..generate import DecodeSettings
from .common import Quiet, error_html, message
from .state import AppState

COLUMNS = ["base", "lora", "qlora"]
NO_RUN = "(no run yet: base model only)"


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
        self.status = widgets.HTML()
        self.columns = {v: AnswerColumn(v) for v in COLUMNS}
        self.answers_box = widgets.HBox(list(self.columns.values()))
        self.eval_summary = widgets.HTML()
        self.eval_table = widgets.HTML()
        super().__init__(
            [
                self.run,
                self.prompt,
                widgets.HBox([self.max_new_tokens, self.temperature, self.seed]),
                widgets.HBox([self.generate_button, self.evaluate_button]),
                self.status,
                self.answers_box,
                self.eval_summary,
                self.eval_table,
            ]
        )
        self.add_class("wb-compare")
        self.generate_button.on_click(lambda _: self.generate())
        self.evaluate_button.on_click(lambda _: self.evaluate())
        self._quiet = Quiet()
        self.run.observe(self._on_run, "value")
        self.state.subscribe(self._on_state)
        self.evaluation: dict[str, dict] = {}
        self._refresh_runs()
        self._default_prompt()

    # ------------------------------------------------------------------ which run, which task

    def _refresh_runs(self) -> None:
        found = [r.path for r in runs.find_runs(self.state.runs_dir) if r.trained_variants()]
        last = self.state.last_run
        if last is not None and last not in found and runs.Run(last).finished:
            found.insert(0, last)
        options = [(NO_RUN, None)] + [
            (str(p.relative_to(self.state.runs_dir)) if p.is_relative_to(self.state.runs_dir) else str(p), p)
            for p in found
        ]
        with self._quiet():
            self.run.options = options
            self.run.value = last if last in found else None

    def _on_run(self, change) -> None:
        if self._quiet:
            return
        self.state.use_run(change["new"])

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
            prompts = self.task().sample_prompts
        except (ValueError, OSError):
            return
        if prompts and (not self.prompt.value or self.prompt.value in getattr(self, "_defaults", ())):
            self.prompt.value = prompts[0]
        self._defaults = set(prompts)

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
                tokens = f"{g.new_tokens} token{'s' if g.new_tokens != 1 else ''}"
                col.note("ok", f"{tokens} in {g.seconds:.1f} s · {g.tokens_per_second:.1f} tok/s")
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
        try:
            task = self.task()
        except ValueError as exc:
            self.status.value = error_html(exc)
            return str(exc)
        cfg = self.run_config()
        examples = task.eval
        if cfg.train.eval_examples and not isinstance(examples, data_mod.TextSource):
            examples = examples[: cfg.train.eval_examples]
        self.evaluation = {}
        self.eval_summary.value = self.eval_table.value = ""

        def work() -> None:
            session = self.state.session()
            ready = [v for v in self._variants() if session.missing_reason(v) is None]
            for i, v in enumerate(ready, 1):
                self.status.value = message("info", f"evaluating {v} ({i}/{len(ready)})…")
                ev = session.evaluate(v, examples, seq_len=cfg.train.seq_len, scoring=task.scoring)
                self.evaluation[v] = {**ev.to_dict(), "predictions": ev.predictions}
                self._show_evaluation(task)
            skipped = [v for v in self._variants() if v not in ready]
            self.status.value = message(
                "ok",
                f"evaluated {', '.join(ready)} on {len(examples)} held-out "
                "examples" + (f" ({', '.join(skipped)}: no adapter)" if skipped else ""),
            )

        return self._start("evaluating", work)

    def _show_evaluation(self, task: data_mod.Task) -> None:
        names = list(self.evaluation)
        cells = []
        for v in names:
            e = self.evaluation[v]
            score = (
                f"accuracy <b>{e['accuracy']:.1%}</b>"
                if e["accuracy"] is not None
                else f"perplexity <b>{e['perplexity']:.2f}</b>"
            )
            cells.append(f"<td><b>{VARIANTS[v].title}</b><br>{score}<br>eval loss {e['eval_loss']:.4f}</td>")
        self.eval_summary.value = f"<table class='wb-eval-summary'><tr>{''.join(cells)}</tr></table>"
        preds = {v: self.evaluation[v]["predictions"] for v in names if self.evaluation[v]["predictions"]}
        if not preds:
            self.eval_table.value = message(
                "info", "This task is scored by perplexity, so there are no per-example answers to tick."
            )
            return
        first = next(iter(preds.values()))
        head = "<tr><th>prompt</th><th>expected</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in preds) + "</tr>"
        rows = []
        for i, p in enumerate(first):
            cols = "".join(
                f"<td>{'✓' if preds[v][i]['correct'] else '✗'} {html.escape(preds[v][i]['prediction'][:80])}</td>"
                for v in preds
            )
            rows.append(f"<tr><td>{html.escape(p['prompt'][:120])}</td><td>{html.escape(p['answer'])}</td>{cols}</tr>")
        self.eval_table.value = f"<table class='wb-eval' style='font-size:90%'>{head}{''.join(rows)}</table>"
