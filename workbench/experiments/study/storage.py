"""Where a study lives: an SQLite file beside the sweep's points by default (nothing to install or start), any
SQLAlchemy URL (PostgreSQL, MySQL) so workers on several machines share it, or a journal file for a shared
filesystem; with heartbeats, so a trial whose worker died is queued again.
"""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from contextlib import contextmanager
from pathlib import Path

from workbench.records.results import first_line

STUDY_FILE = "study.sqlite3"
# seconds between heartbeats; a trial silent for GRACE_BEATS of them is taken for dead and queued again
HEARTBEAT_S = 30
GRACE_BEATS = 3
MAX_RETRY = 2  # a trial that killed its worker this often is not tried again (a crash, not a lost machine)


def default_storage(out_dir: str | Path) -> str:
    """The SQLite file in the sweep's folder: nothing to install, and it travels with the runs."""
    return f"sqlite:///{(Path(out_dir) / STUDY_FILE).resolve()}"


def heartbeat_s() -> int:
    return max(1, int(os.environ.get("WORKBENCH_HEARTBEAT_S", HEARTBEAT_S)))


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".log", ".journal", ".jsonl"))


def open_storage(url: str):
    """An Optuna storage for a URL: sqlite:///FILE, postgresql://..., mysql://..., or journal:FILE (also a path
    ending in .log or .journal). SQL storages get heartbeats and retry a dead worker's trial; Optuna's journal
    storage has no heartbeat, so there a killed worker's trial stays running until the study is cleaned up."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if is_journal(url):
        path = Path(url.removeprefix("journal:")).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ValueError(
                f"storage: cannot use the journal file {path} ({exc.strerror}); give a writable path"
            ) from None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgres://")):
        url = postgres_driver(url)
    beat = heartbeat_s()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with (
            warnings.catch_warnings()
        ):  # heartbeats are "experimental" in Optuna since 2.8; the workbench relies on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=beat,
                grace_period=beat * GRACE_BEATS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "driver"
        raise ValueError(
            f"storage: {redacted(url)} needs the Python package {missing!r} (its database driver); pip install it"
        ) from None
    except (optuna.exceptions.StorageInternalError, ValueError, OSError) as exc:
        raise ValueError(
            f"storage: cannot open {redacted(url)} ({first_line(exc.__cause__ or exc)}); check the URL, that the "
            "database server is running and that this user may connect"
        ) from None
    except Exception as exc:  # SQLAlchemy's own errors (a bad URL, a refused connection) share no base here
        if type(exc).__module__.startswith("sqlalchemy"):
            raise ValueError(
                f"storage: cannot open {redacted(url)} ({first_line(exc)}); check the URL, that the database server "
                "is running and that this user may connect"
            ) from None
        raise


def postgres_driver(url: str) -> str:
    """postgresql:// means psycopg2 to SQLAlchemy; the workbench installs psycopg 3, so name it where 2 is absent."""
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """A URL as printed: without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def dashboard_command(url: str) -> str:
    """The optuna-dashboard command line that shows this storage's studies in a browser."""
    target = url.removeprefix("journal:") if is_journal(url) else redacted(url)
    return f"optuna-dashboard {shlex.quote(target)}"


@contextmanager
def quiet_optuna():
    """Optuna's own log lines (a trial finished, a grid exhausted) are said by the workbench's status instead;
    its "experimental" warnings (heartbeats) are not the user's business."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def open_study_by_name(storage: str, name: str):
    """A study that is already in `storage`, by its name (what a worker joining it is given)."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(f"study: {name!r} is not in {redacted(storage)}; start the sweep there first") from None
