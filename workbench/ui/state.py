"""What the panels share: the current settings, the one background job, the runs folder.

A panel changes the settings through `AppState.update`, which validates them by building a new
`RunConfig` (so an invalid value is refused with the config's own message and the old settings
stay), then tells every subscriber. Work that takes longer than a moment runs as a `Job` in a
background thread, one at a time, so the notebook's widgets stay responsive.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from workbench.core.config import RunConfig, preset_config
from workbench.engine.layout import ModelLayout
from workbench.records.runs import Run, default_user

Listener = Callable[[str], None]


class Jobs:
    """At most one background job at a time (training, generating or evaluating)."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self.name: str | None = None
        self.stop = threading.Event()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def refusal(self, name: str) -> str | None:
        """Why `name` cannot start now (another job is running), or None when it can."""
        if self.busy:
            return f"{self.name} is still running; wait for it to finish or press Stop before starting {name}."
        return None

    def start(
        self,
        name: str,
        work: Callable[[], None],
        *,
        on_error: Callable[[BaseException, str], None],
        on_done: Callable[[], None] | None = None,
    ) -> str | None:
        """Start `work` in a thread; returns a message instead when another job is running."""
        refused = self.refusal(name)
        if refused:
            return refused
        self.name = name
        self.stop = threading.Event()

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - shown in the panel, never lost
                on_error(exc, traceback.format_exc())
            finally:
                if on_done is not None:
                    try:
                        on_done()
                    except BaseException as exc:  # noqa: BLE001
                        on_error(exc, traceback.format_exc())

        self._thread = threading.Thread(target=run, name=f"workbench-{name}", daemon=True)
        self._thread.start()
        return None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the running job; True when none is left running."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy


class AppState:
    """Settings, jobs and runs shared by the panels of one Workbench (or one panel shown alone)."""

    def __init__(self, config: RunConfig | None = None, *, runs_dir: str | Path | None = None):
        self.config = config or preset_config("quickstart", {"model": {"device": "auto"}})
        # a class shares one folder: WORKBENCH_RUNS names it for every kernel started with it
        self.runs_dir = Path(runs_dir or os.environ.get("WORKBENCH_RUNS") or "runs")
        self.user = default_user()  # who the runs are recorded as made by (the Setup tab's name)
        self.jobs = Jobs()
        self.last_run: Path | None = None
        self._session = None
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ settings

    def subscribe(self, listener: Listener) -> None:
        """listener(what) is called after a change: 'config', 'run' (a run finished) or 'runs'."""
        self._listeners.append(listener)

    def notify(self, what: str) -> None:
        for listener in list(self._listeners):
            listener(what)

    def update(self, section: str | None = None, **values) -> None:
        """Change settings, e.g. update('lora', rank=16) or update(task='dates', data=None).

        Raises ValueError (the config's own one-line message) and keeps the old settings when the
        result is invalid."""
        d = self.config.to_dict()
        if section is None:
            d.update(values)
        else:
            d[section] = {**d[section], **values}
        new = RunConfig.from_dict(d)
        if new.to_dict() == self.config.to_dict():
            return
        model_changed = new.model != self.config.model or new.quant != self.config.quant
        self.config = new
        if model_changed:
            self.drop_session()
        self.notify("config")

    # ------------------------------------------------------------------ runs and models

    def session(self):
        """Models for answering: the last run's adapters, or the plain base model before any run."""
        from workbench.engine.session import Session  # transformers' streamer: imported when answering, not to appear

        if self._session is None:
            if self.last_run is not None and Run(self.last_run).finished:
                self._session = Session.from_run(self.last_run)
            else:
                m = self.config.model
                self._session = Session(m.name, device=m.device, dtype=m.dtype, quant=self.config.quant)
        return self._session

    def base_dtype(self) -> str | None:
        """The dtype the unquantized base gets with the current settings on this machine (None: no such device)."""
        from workbench.engine.models import pick_device

        try:
            return pick_device(self.config.model.device, self.config.model.dtype).dtype_name
        except ValueError:
            return None

    def drop_session(self) -> None:
        if self._session is not None:
            self._session.release()
            self._session = None

    def use_run(self, run_dir: Path | None) -> None:
        if run_dir != self.last_run:
            self.drop_session()
            self.last_run = run_dir
            self.notify("run")


_layouts: dict[str, ModelLayout] = {}


def model_layout(name: str) -> ModelLayout:
    """The core's ModelLayout, cached per model name; raises ValueError with a one-line message for an
    unknown model."""
    if name not in _layouts:
        _layouts[name] = ModelLayout.for_model(name)
    return _layouts[name]
