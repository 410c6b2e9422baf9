"""The process killed (SIGKILL) while an adapter, the metrics or the results are being written.

support/kill_child.py writes run folders into one root the way the workbench does (runs.MetricsCSV, runs.save_adapter
with a train.TrainState, runs.write_results, files.write_json, files.save_figure), many times over, in folders that
are mostly being rewritten. This test kills it at seeded random moments, 0.05-1.5 s after it reports it is
writing; after every kill it reads every file of the folders the killed worker wrote in (the others have not
changed), and at the end every folder: nothing under a final name may be half-written.

KILL_WRITES_KILLS sets the number of kills (default 30, ~45 s); KILL_WRITES_SUMMARY names a JSON file to write
the counts to (docs/reliability.md quotes a 200-kill run).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from helpers import SUPPORT

from workbench.core import files
from workbench.core.events import MetricEvent
from workbench.records import runs, scan

KILLS = int(os.environ.get("KILL_WRITES_KILLS", "30"))
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


class Child:
    """support/kill_child.py, its stdout read by a thread (so no read can hang the test)."""

    def __init__(self, root: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(SUPPORT / "kill_child.py"), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.worker: int | None = None  # the pid of the worker writing now
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 60) -> str:
        line = self.lines.get(timeout=timeout)
        assert not line.startswith("ERR"), line  # the worker failed on its own: a bug in the writers or the child
        return line

    def close(self) -> None:
        if self.worker is not None:  # a failed check or a timeout left one writing: it must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker, signal.SIGKILL)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def kill_once(child: Child, seed: int, delay: float) -> list[str]:
    """Start a worker, let it write for `delay` s after its first write begins, SIGKILL it; its B/E lines."""
    child.proc.stdin.write(f"go {seed}\n")
    child.proc.stdin.flush()
    pid = child.worker = int(child.next_line().split()[1])
    events = [child.next_line()]  # its first "B ...": it is writing
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    while not (line := child.next_line()).startswith("dead"):
        events.append(line)
    assert line == f"dead {pid} {int(signal.SIGKILL)}", line  # killed by us, not ended by an error
    child.worker = None
    return events


def in_flight(events: list[str]) -> tuple[str, str] | None:
    """(what, path) of the write the kill cut short, None when it fell between writes."""
    last = events[-1].split(" ", 2)
    return (last[1], last[2]) if last[0] == "B" else None


# --------------------------------------------------------------------------- the checks
def check_results(folder: Path, cut: bool, found: Counter) -> list[str]:
    """results.json parses and results.csv holds the same variants. `cut`: a kill fell in this folder's last
    write_results, whose two files are each atomic but not together, so the csv may be one write behind (or
    absent)."""
    problems = []
    doc = None
    if (folder / "results.json").exists():
        found["files"] += 1
        try:
            doc = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        except ValueError as e:
            return [f"{folder}/results.json does not parse: {e}"]
    if (folder / "results.csv").exists():
        found["files"] += 1
        text = (folder / "results.csv").read_text(encoding="utf-8")
        rows = list(csv.reader(text.splitlines()))
        if not text.endswith("\n") or rows[0] != runs.RESULT_FIELDS or any(len(r) != len(rows[0]) for r in rows):
            return [f"{folder}/results.csv is cut short"]
        if doc is not None:
            want = [[str(files.csv_cell(v.get(k))) for k in runs.RESULT_FIELDS] for v in doc["variants"]]
            if rows[1:] != want:
                if not cut:
                    problems.append(f"{folder}: results.csv does not match results.json")
                found["results.csv one write behind results.json"] += 1
    elif doc is not None:
        if not cut:
            problems.append(f"{folder}: results.json without results.csv")
        found["results.json without results.csv"] += 1
    return problems


def check_adapter(path: Path, found: Counter) -> list[str]:
    import torch
    from safetensors.torch import load_file

    from workbench.engine.train import TrainState

    found["adapters"] += 1
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        weights = load_file(path / "adapter_model.safetensors")
        found["files"] += 2
    except (OSError, ValueError) as e:
        return [f"{path}: adapter does not load: {e!r}"]
    ranks = {t.shape[0] for k, t in weights.items() if "lora_A" in k}
    problems = [] if ranks == {config["r"]} else [f"{path}: config r={config['r']} but weights of rank {ranks}"]
    if (path / runs.TRAINING_STATE).exists():
        found["files"] += 1
        try:
            state = TrainState.from_dict(torch.load(path / runs.TRAINING_STATE, weights_only=True))
        except Exception as e:  # whatever a damaged file raises
            return problems + [f"{path}: training_state.pt does not load: {e!r}"]
        if len(state.optimizer["state"]) != len(weights):  # the state is of this adapter: one entry per tensor
            problems.append(
                f"{path}: training state of {len(state.optimizer['state'])} tensors, adapter {len(weights)}"
            )
    return problems


def check_metrics(folder: Path, found: Counter) -> list[str]:
    """Every row parses but possibly a last one cut short (no newline), and Run.metrics gives exactly the whole
    rows. An empty file (killed right after it was opened) is allowed."""
    path = folder / "metrics.csv"
    if not path.exists():
        return []
    found["files"] += 1
    text = path.read_text(encoding="utf-8")
    if not text:
        found["metrics.csv empty (killed as it was opened)"] += 1
        return []
    lines = text.splitlines(keepends=True)
    whole = [line for line in lines if line.endswith("\n")]
    if len(whole) < len(lines):
        found["metrics.csv rows cut short"] += 1
    if not whole:
        return []
    rows = list(csv.reader(whole))
    if rows[0] != runs.MetricsCSV.FIELDS:
        return [f"{path}: header is {rows[0]}"]
    try:
        expected = [MetricEvent(r[0], int(r[1]), int(r[2]), *map(float, r[3:6]), int(r[6]), int(r[7]), float(r[8]))
                    for r in rows[1:]]  # fmt: skip
    except (ValueError, IndexError) as e:
        return [f"{path}: a whole row does not parse: {e}"]
    found["metrics rows"] += len(expected)
    got = runs.Run(folder).metrics()
    return [] if got == expected else [f"{path}: Run.metrics gives {len(got)} rows, the file {len(expected)} whole"]


def temp_entries(root: Path) -> Counter:
    """The temp files and folders kills left beside their targets (what is inside a temp folder is not counted)."""
    out = Counter()
    folders = [root]
    while folders:
        for path in folders.pop().iterdir():
            if not path.name.startswith("."):
                folders += [path] if path.is_dir() else []
            elif path.is_dir():
                out["temp folders (.old: an adapter's previous copy)" if ".old." in path.name else "temp folders"] += 1
            else:
                out["temp files"] += 1
    return out


def run_folders(root: Path) -> list[Path]:
    found = [*root.glob("*"), *root.glob("sweep/*")]
    return [p for p in found if p.is_dir() and p.name != "sweep" and not p.name.startswith(".")]


def check_folders(root: Path, folders: list[Path], out_of_step: set[Path], found: Counter) -> list[str]:
    """Every file of every folder in `folders`; then find_runs and all_results over the whole root."""
    problems = []
    for folder in folders:
        found["folders"] += 1
        problems += check_results(folder, folder in out_of_step, found)
        problems += check_metrics(folder, found)
        if (folder / "predictions.json").exists():
            found["files"] += 1
            try:
                json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
            except ValueError:
                problems.append(f"{folder}/predictions.json does not parse")
        if (folder / "loss.png").exists():
            found["files"] += 1
            png = (folder / "loss.png").read_bytes()
            if not (png.startswith(PNG_START) and png.endswith(PNG_END)):
                problems.append(f"{folder}/loss.png is cut short")
        adapters = folder / "adapters"
        for path in sorted(adapters.glob("*")) if adapters.is_dir() else []:
            if not path.name.startswith("."):
                problems += check_adapter(path, found)
    scan.find_runs(root)  # neither may raise on what a kill left
    scan.all_results(root)
    return problems


# --------------------------------------------------------------------------- the test
def test_killed_writers_never_leave_a_half_written_file(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    rng = random.Random(1234)
    child = Child(root)
    totals, where, problems, adapters = Counter(), Counter(), [], set()
    out_of_step: set[Path] = set()  # folders whose last write_results a kill cut short
    try:
        assert child.next_line(timeout=120) == "ready"
        for k in range(KILLS):
            events = kill_once(child, seed=k, delay=rng.uniform(0.05, 1.5))
            flight = in_flight(events)
            where[flight[0] if flight else "between writes"] += 1
            for line in events:
                if line.startswith(("B results", "E results")):
                    (out_of_step.add if line[0] == "B" else out_of_step.discard)(Path(line.split(" ", 2)[2]))
            # only the folders this worker wrote in can have changed since the last check
            touched = sorted({Path(line.split(" ", 2)[2].split("/adapters/")[0]) for line in events})
            found = Counter()
            problems += [f"kill {k} ({flight}): {p}" for p in check_folders(root, touched, out_of_step, found)]
            for key, n in found.items():
                totals[f"{key} checked" if key in ("folders", "files", "adapters", "metrics rows") else key] += n
            now = {p for p in root.glob("**/adapters/*") if not p.name.startswith(".")}
            # an adapter being replaced is moved aside before the new one takes its name: a kill between the two
            # renames leaves neither under the final name (the old one is in a .old temp folder)
            totals["adapters gone after a kill mid-replace"] += len(adapters - now)
            adapters = now
    finally:
        child.close()
    left = temp_entries(root)
    # what the kills left is removed (none of it is young), and every final file reads as well as before
    removed = files.remove_stale_temps(root, older_than_s=0)
    found = Counter()
    problems += [f"after the cleanup: {p}" for p in check_folders(root, run_folders(root), out_of_step, found)]
    summary = {"kills": KILLS, "kill landed in": dict(where), **totals, "folders at the end": found["folders"]}
    summary |= {**left, "temp entries removed by files.remove_stale_temps": len(removed), "problems": len(problems)}
    print(json.dumps(summary, indent=2))
    if os.environ.get("KILL_WRITES_SUMMARY"):
        Path(os.environ["KILL_WRITES_SUMMARY"]).write_text(json.dumps(summary, indent=2) + "\n")
    assert not problems, "\n".join(problems[:20])
    assert where["adapter"] > 0 and totals["adapters checked"] > 0  # the kills did land in the writes they test
    assert sum(left.values()) == len(removed) and not temp_entries(root)
