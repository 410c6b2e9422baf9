"""Reading a study back: each trial's point and result, a table of the trials (state, worker, person), the
counts by state, the finished points, the trials' CSV, and the studies under a runs folder.
"""

from __future__ import annotations

from pathlib import Path

from workbench.experiments.study.storage import (
    STUDY_FILE,
    dashboard_command,
    default_storage,
    open_storage,
    quiet_optuna,
)
from workbench.experiments.sweep import PointResult, SweepPoint
from workbench.records.results import VariantResult, first_line


def trial_point(t) -> PointResult | None:
    """A trial as the sweep's row: its settings, its status and (finished) its result, from the study alone, so
    a study whose folders are on other machines still reads."""
    from optuna.trial import TrialState

    a = t.user_attrs
    if "point" not in a:
        return None
    d = dict(a["point"])
    d["targets"] = d["targets"] if isinstance(d["targets"], str) else tuple(d["targets"])
    point = SweepPoint(**d)
    result = VariantResult.from_dict(a["result"]) if a.get("result") else None
    state = {
        TrialState.COMPLETE: a.get("status", "trained"),
        TrialState.RUNNING: "running",
        TrialState.WAITING: "queued",
        TrialState.PRUNED: a.get("status", "pruned"),
        TrialState.FAIL: "failed",
    }[t.state]
    error = None
    if t.state == TrialState.FAIL:
        status = a.get("status", "")
        error = status.split(": ", 1)[1] if ": " in status else "its worker stopped answering (queued again)"
    seconds = t.duration.total_seconds() if t.duration else 0.0
    return PointResult(point, Path(a["out"]), state, result, error, seconds, a.get("seed"))


def trials_frame(study):
    """The study's trial log: number, state, run, seed, who ran it where, its objectives and how long it took."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "run": a.get("run", ""),
                "seed": a.get("seed"),
                "worker": a.get("worker", ""),
                "person": a.get("person", ""),
                "status": a.get("status", ""),
                "score": None if not t.values else round(t.values[0], 4),
                "cost": None if not t.values else round(t.values[1], 1),
                "started": t.datetime_start.strftime("%H:%M:%S") if t.datetime_start else "",
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
            }
        )
    return pd.DataFrame(rows)


def counts(study) -> dict[str, int]:
    """Trials by state: running, finished, failed, queued, pruned."""
    names = {"COMPLETE": "finished", "RUNNING": "running", "FAIL": "failed", "WAITING": "queued", "PRUNED": "pruned"}
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = names[t.state.name]
        out[key] = out.get(key, 0) + 1
    return out


def finished_points(study) -> list[PointResult]:
    """One row per run that finished (the trial that did it), in the order they finished."""
    from optuna.trial import TrialState

    seen, out = set(), []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete):
        p = trial_point(t)
        if p is not None and p.label not in seen:
            seen.add(p.label)
            out.append(p)
    return out


def write_trials(out_dir: str | Path, study) -> Path:
    """The study's trial log as trials.csv beside the sweep's table, written whole."""
    from workbench.core.files import write_csv

    frame = trials_frame(study)
    return write_csv(Path(out_dir) / "trials.csv", frame.to_dict("records"), list(frame.columns))


def studies_in(runs_dir: str | Path) -> list[dict]:
    """The sweeps' studies kept in a runs folder (a study.sqlite3 one folder down): each one's folder, name,
    trials by state and the optuna-dashboard command. A file that is not a readable study is named as such."""
    files = sorted(Path(runs_dir).glob(f"*/{STUDY_FILE}"))
    if not files:
        return []  # Optuna is not even imported
    import optuna

    found = []
    for path in files:
        url = default_storage(path.parent)
        command = dashboard_command(url)
        try:
            with quiet_optuna():
                store = open_storage(url)
                for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
                    st = optuna.load_study(study_name=summary.study_name, storage=store)
                    found.append(
                        {
                            "folder": path.parent.name,
                            "study": summary.study_name,
                            "trials": counts(st),
                            "command": command,
                        }
                    )
        except Exception as exc:  # anything in a shared folder may be damaged: it is named, and the view goes on
            found.append(
                {"folder": path.parent.name, "study": "", "trials": {}, "command": command, "error": first_line(exc)}
            )
    return found
