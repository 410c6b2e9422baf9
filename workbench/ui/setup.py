"""Setup: which model, which task (or your own file), which device."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from workbench import data as data_mod
from workbench.core.config import DEFAULT_MODEL, DTYPES, ModelSettings, RunConfig
from workbench.core.files import write_bytes
from workbench.core.paths import data_dir
from workbench.engine import models
from workbench.engine.resolve import EMBEDDED_NAMES, resolve_model
from workbench.records.runs import check_user
from workbench.ui.common import WIDE, error_html, helped, message
from workbench.ui.state import AppState, model_layout

# the 150 px label plus room for a hub name as long as the default's 35 characters and a local path's start
MODEL_BOX = widgets.Layout(width="600px")

UPLOAD_LABEL = "(your uploaded file)"


def model_presets() -> list[str]:
    """The embedded default first, then every model whose config ships in data/model_configs."""
    names = [DEFAULT_MODEL]
    folder = data_dir() / "model_configs"
    for path in sorted(folder.glob("*.json")):
        name = path.stem.replace("__", "/")
        if name not in names:
            names.append(name)
    return names


def allocator_line() -> str:
    """Which C allocator this kernel runs on, and what it means for the CPU peaks (workbench.machine.allocator)."""
    from workbench.machine import allocator

    name = allocator.in_use()
    if name in ("tcmalloc", "mimalloc"):
        return f" Allocator: {name}, preloaded when this kernel started: CPU peaks stay close to the estimate."
    if name != "glibc":
        return f" Allocator: {name}."
    if allocator.fast_path() and allocator.choice() == "auto":
        return (
            " Allocator: glibc, which keeps freed activations: this kernel was not started by `make lab` or "
            "`workbench app`, which preload a faster one; the estimates count what glibc keeps."
        )
    return " Allocator: glibc, which keeps freed activations; the estimates count what it keeps."


class SetupPanel(widgets.VBox):
    """Model, task or uploaded data, and device. Shown alone: SetupPanel()."""

    def __init__(self, state: AppState | None = None):
        self.state = state or AppState()
        cfg = self.state.config
        self.model = helped(
            widgets.Combobox(
                value=cfg.model.name,
                options=model_presets(),
                ensure_option=False,
                description="Model",
                continuous_update=False,
                layout=MODEL_BOX,
            ),
            ModelSettings,
            "name",
        )
        self.model_info = widgets.HTML()
        self.device = helped(
            widgets.Dropdown(options=["auto", "cpu", "cuda", "mps"], value=cfg.model.device, description="Device"),
            ModelSettings,
            "device",
        )
        self.dtype = helped(
            widgets.Dropdown(options=list(DTYPES), value=cfg.model.dtype, description="Dtype"), ModelSettings, "dtype"
        )
        self.device_info = widgets.HTML()
        tasks = data_mod.builtin_tasks()
        self.task = helped(
            widgets.Dropdown(options=tasks, value=cfg.task if cfg.task in tasks else tasks[0], description="Task"),
            RunConfig,
            "task",
        )
        self.upload = widgets.FileUpload(
            accept=".jsonl,.json,.csv,.tsv,.txt", multiple=False, description="Upload data"
        )
        self.upload.tooltip = RunConfig.__dataclass_fields__["data"].metadata["help"]
        self.columns = helped(
            widgets.Text(
                value=cfg.columns or "",
                description="Column map",
                placeholder="prompt=question,answer=label",
                continuous_update=False,
                layout=WIDE,
            ),
            RunConfig,
            "columns",
        )
        self.data_info = widgets.HTML()
        self.preview_button = widgets.Button(
            description="Preview data",
            icon="eye",
            tooltip="Show examples as the model will see them, with token counts",
        )
        self.preview_out = widgets.HTML()
        self.user = widgets.Text(
            value=self.state.user,
            description="Your name",
            continuous_update=False,
            tooltip="Recorded with every run you make: a class sharing one runs folder sees whose run is whose",
        )
        self.user.style.description_width = "150px"
        self.user_info = widgets.HTML()
        super().__init__(
            [
                widgets.HBox([self.user, self.user_info]),
                widgets.HTML("<b>Model</b>"),
                self.model,
                self.model_info,
                widgets.HTML("<b>Device</b>"),
                widgets.HBox([self.device, self.dtype]),
                self.device_info,
                widgets.HTML("<b>Task</b> (a built-in task, or upload a JSONL/CSV/JSON/TXT file)"),
                self.task,
                widgets.HBox([self.upload, self.columns]),
                self.data_info,
                self.preview_button,
                self.preview_out,
            ]
        )
        self.add_class("wb-setup")
        self._pending: Path | None = None  # an uploaded file refused so far (a column map may fix it)
        self.model.observe(self._on_model, "value")
        self.device.observe(self._on_device, "value")
        self.dtype.observe(self._on_dtype, "value")
        self.task.observe(self._on_task, "value")
        self.upload.observe(self._on_upload, "value")
        self.columns.observe(self._on_columns, "value")
        self.preview_button.on_click(lambda _: self.preview())
        self.user.observe(self._on_user, "value")
        self._show_model()
        self._show_device()
        self._show_data()

    # ------------------------------------------------------------------ model and device

    def _show_model(self) -> None:
        try:
            layout = model_layout(self.state.config.model.name)
        except ValueError as exc:
            self.model_info.value = error_html(exc)
            return
        note = ""
        if self.state.config.model.name.lower() in EMBEDDED_NAMES:
            note = (
                " Embedded default: a dequantized Q4_1 copy of SmolLM2-135M-Instruct, so its "
                "'16-bit' baseline is that dequantized model."
            )
        self.model_info.value = message("info", layout.describe() + "." + note)

    def _on_user(self, change) -> None:
        try:
            self.state.user = check_user(change["new"])
        except ValueError as exc:
            self.user_info.value = error_html(exc)
            return
        self.user_info.value = ""

    def _on_model(self, change) -> None:
        name = (change["new"] or "").strip()
        try:
            model_layout(name)  # config only: fails fast, before anything loads
            self.state.update("model", name=name)
        except ValueError as exc:
            self.model_info.value = error_html(exc)
            return
        self._show_model()

    def _show_device(self) -> None:
        try:
            choice = models.pick_device(self.device.value, self.state.config.model.dtype)
            hint = ""
            if choice.type == "cpu" and models.native_bf16_cpu():
                hint = (
                    " bfloat16 because this CPU multiplies it natively: LoRA trained 1.19x faster than in float32, "
                    "with no accuracy, eval-loss or forgetting cost 5 seeds could see (docs/benchmarks.md); 4- and "
                    "8-bit bases compute in float32. Dtype float32 turns it off."
                    if choice.dtype_name == "bfloat16"
                    else " This CPU multiplies bfloat16 natively: Dtype auto or bfloat16 trains LoRA 1.19x faster, "
                    "with no accuracy cost 5 seeds could see (docs/benchmarks.md)."
                )
            where = allocator_line() if choice.type == "cpu" else ""
            self.device_info.value = message("info", "Runs on " + choice.describe() + "." + where + hint)
        except ValueError as exc:
            self.device_info.value = error_html(exc)

    def _on_device(self, change) -> None:
        if change["new"] == self.state.config.model.device:
            return
        try:
            models.pick_device(change["new"], self.state.config.model.dtype)
            self.state.update("model", device=change["new"])
        except ValueError as exc:
            self.device.value = self.state.config.model.device  # back to the device in use
            self.device_info.value = error_html(exc)
            return
        self._show_device()

    def _on_dtype(self, change) -> None:
        try:
            self.state.update("model", dtype=change["new"])
        except ValueError as exc:
            self.dtype.value = self.state.config.model.dtype
            self.device_info.value = error_html(exc)
            return
        self._show_device()

    # ------------------------------------------------------------------ data

    def _show_data(self, extra: str = "") -> None:
        try:
            task = data_mod.task_for(self.state.config)  # the very split a run will train and score on
        except ValueError as exc:
            self.data_info.value = error_html(exc)
            return
        n_train = len(task.train) if not isinstance(task.train, data_mod.TextSource) else None
        size = (
            f"{n_train} training and {len(task.eval)} held-out examples"
            if n_train is not None
            else f"{len(task.train.text):,} characters of training text and {len(task.eval.text):,} held out"
        )
        scoring = "exact match of the answer" if task.scoring == "exact_match" else "perplexity"
        self.data_info.value = message("ok", f"{task.name}: {size}, scored by {scoring}.{extra}")

    def _on_task(self, change) -> None:
        if change["new"] == UPLOAD_LABEL:
            return
        self._pending = None
        try:
            self.state.update(task=change["new"], data=None, eval_data=None, columns=None)
        except ValueError as exc:
            self.data_info.value = error_html(exc)
            return
        self._show_data()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        name = Path(item["name"]).name
        target = self.state.runs_dir / "uploads" / name
        write_bytes(target, bytes(item["content"]))
        self.use_data(target)

    def use_data(self, path: str | Path) -> bool:
        """Train on a data file (what an upload does). False, with the reason shown, when it is unusable."""
        path = Path(path)
        cfg = self.state.config
        try:  # check the file before it becomes the setting, so a bad file never replaces a good one
            candidate = RunConfig.from_dict(
                {**cfg.to_dict(), "task": None, "data": str(path), "columns": self.columns.value or None}
            )
            data_mod.task_for(candidate)
            self.state.update(task=None, data=str(path), columns=self.columns.value or None)
        except ValueError as exc:
            self._pending = path
            self.data_info.value = error_html(exc)
            return False
        self._pending = None
        if UPLOAD_LABEL not in self.task.options:
            self.task.options = [*self.task.options, UPLOAD_LABEL]
        self.task.value = UPLOAD_LABEL
        self._show_data(f" File: {path}")
        return True

    def _on_columns(self, change) -> None:
        # a file refused for its columns is the one the user is mapping now
        path = self._pending or self.state.config.data
        if path is None:
            self.data_info.value = message("info", "The column map applies to uploaded files.")
            return
        self.use_data(path)

    def preview(self) -> None:
        """Show a few examples exactly as templated and tokenised (loads the tokenizer only)."""
        cfg = self.state.config

        def work() -> None:
            self.preview_out.value = message("info", "loading the tokenizer…")
            tok = models.load_tokenizer(resolve_model(cfg.model.name))
            task = data_mod.task_for(cfg)
            text = data_mod.preview(tok, task, seq_len=cfg.train.seq_len).to_text()
            self.preview_out.value = f"<pre class='wb-preview'>{html.escape(text)}</pre>"

        refused = self.state.jobs.start(
            "preview", work, on_error=lambda e, tb: setattr(self.preview_out, "value", error_html(e, tb))
        )
        if refused:
            self.preview_out.value = message("warn", refused)
