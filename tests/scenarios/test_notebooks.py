"""The example notebooks: committed without outputs, and each runs end to end in a fast setting.

A notebook runs in a fresh kernel (nbclient) from notebooks/, with a few lines appended to its one
"parameters" cell. The kernel inherits this session's environment, so it is offline and finds the
embedded model converted into the session's WORKBENCH_HOME.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from helpers import REPO

NOTEBOOKS = REPO / "notebooks"


def parameter_cells(nb) -> list:
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def error_outputs(nb) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def execute_notebook(name: str, params: str, tmp_path: Path):
    """Run notebooks/<name> with `params` appended to its parameters cell; fail listing any errors.

    The executed copy is written to tmp_path/<name> for a look after a failure. The kernel gets one
    OpenMP thread: on a 2-core machine busy with anything else, two threads spin-wait on each other
    and a run takes several times longer (the numbers are the same either way).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = parameter_cells(nb)
    assert len(cells) == 1, f"{name}: {len(cells)} cells tagged 'parameters'; want exactly one"
    cells[0].source += "\n\n# set by tests/test_notebooks.py\n" + params.strip() + "\n"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    except CellExecutionError:
        pass  # the error is in the cell's outputs, listed below
    finally:
        nbformat.write(nb, tmp_path / name)
    errors = error_outputs(nb)
    if errors:
        pytest.fail(f"{name} raised: " + "; ".join(errors) + f" (executed copy: {tmp_path / name})")
    return nb


def outputs(nb, kind: str) -> list:
    """Every display/result output of the notebook carrying the mime type `kind`, as its data."""
    return [
        o["data"][kind]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") in ("display_data", "execute_result") and kind in o.get("data", {})
    ]


def stream_text(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def progress_lines(nb) -> list[str]:
    """The sweep's one line per combination: "[i/n] <label> trained in ... / loaded ..."."""
    return [line for line in stream_text(nb).splitlines() if re.match(r"\[\d+/\d+\] ", line)]


# --------------------------------------------------------------------------- fast
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert len(parameter_cells(nb)) == 1, "exactly one cell tagged 'parameters'"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.outputs, f"cell {i} has outputs; clear them before committing"
        assert cell.execution_count is None, f"cell {i} has an execution count; clear it before committing"


# --------------------------------------------------------------------------- end to end


# SEQ_LEN 64: the sentiment prompts take 47-58 tokens with SmolLM2's chat template, so a shorter
# limit would cut the answers (and the eval loss) away from most examples.
FAST = "STEPS = 2\nBATCH_SIZE = 2\nSEQ_LEN = 64\nEVAL_EXAMPLES = 4\n"


@pytest.mark.e2e
def test_quickstart_notebook_runs_the_app_in_fast_setting(tmp_path, embedded_dir):
    """The app on the embedded model, driven from code: Start, Generate, Evaluate, Results."""
    runs_dir = tmp_path / "nb-runs"
    nb = execute_notebook(
        "01_quickstart.ipynb", FAST + f"RUNS_DIR = {str(runs_dir)!r}\nDRIVE_FROM_CODE = True\n", tmp_path
    )
    assert outputs(nb, "application/vnd.jupyter.widget-view+json"), "the app was not displayed"
    (run,) = [p.parent for p in runs_dir.glob("*/results.json")]
    res = json.loads((run / "results.json").read_text())
    assert [v["name"] for v in res["variants"]] == ["base", "lora", "qlora"]
    assert all(v["steps_done"] == 2 for v in res["variants"] if v["name"] != "base")
    table = outputs(nb, "text/html")[-1]
    assert "qlora" in table and "peak MiB" in table


@pytest.mark.e2e
def test_lora_vs_qlora_notebook_runs_in_fast_setting(tmp_path, embedded_dir):
    nb = execute_notebook("02_lora_vs_qlora.ipynb", FAST + "MAX_NEW_TOKENS = 8\n", tmp_path)
    said = "\n".join(outputs(nb, "text/markdown"))
    assert "MiB" in said
    # the computed sentences quote what was measured in this run
    assert "The 16-bit base has" in said and "The 4-bit base takes" in said
    assert "of the 16-bit one" in said
    assert "trained 2 steps" in said
    assert any(
        w in said for w in ("QLoRA trained **faster**", "QLoRA trained **slower**", "QLoRA trained **about as fast**")
    )
    assert "| prompt | base | lora | qlora |" in said
    assert not re.search(r"\bnan\b", said, re.IGNORECASE), "a sentence quotes a missing number"
    assert outputs(nb, "image/png"), "the loss plot is missing"
    assert outputs(nb, "text/html"), "the comparison table is missing"
    assert "qlora step   2/2" in stream_text(nb)


@pytest.mark.e2e
def test_sweep_notebook_runs_and_reruns_from_disk(tmp_path, embedded_dir):
    out = tmp_path / "sweep"
    params = FAST + (f"RANKS = [2]\nTARGETS = [['q_proj', 'v_proj']]\nBITS = [16, 4]\nSEEDS = 2\nOUT = {str(out)!r}\n")
    nb = execute_notebook("03_rank_and_targets_sweep.ipynb", params, tmp_path)
    found = sorted(p.parent.name for p in out.glob("*/results.json"))
    assert found == [
        "16bit-r2-q_proj+v_proj",
        "16bit-r2-q_proj+v_proj-seed1",
        "4bit-nf4-r2-q_proj+v_proj",
        "4bit-nf4-r2-q_proj+v_proj-seed1",
    ]
    for name in found:
        res = json.loads((out / name / "results.json").read_text())
        assert [v["name"] for v in res["variants"]] == (["lora"] if name.startswith("16") else ["qlora"])
        assert res["variants"][0]["rank"] == 2 and res["variants"][0]["target_modules"] == ["q_proj", "v_proj"]
    assert outputs(nb, "image/png"), "the accuracy-vs-memory chart is missing"
    tables = "\n".join(outputs(nb, "text/html"))
    assert "accuracy 95% CI" in tables and "accuracy % ±sd" in tables  # each run's interval, each setting's
    lines = progress_lines(nb)
    assert len(lines) == 4 and all("trained in" in line for line in lines), lines
    said = "\n".join(outputs(nb, "text/markdown"))
    assert (
        "Best accuracy" in said and "the mean of 2 seed(s)" in said and "**The frontier** (through the means)" in said
    )
    # the best setting against the other, paired on the same 4 examples of each of the 2 seeds
    assert "The best against the runner-up:" in said and re.search(r"(same|these) 4 examples", said), said
    assert re.search(r"Against the best, \*\*[01] of 1\*\* other settings are really less accurate", said)

    # a second run with the same settings reads both results back instead of training
    again = execute_notebook("03_rank_and_targets_sweep.ipynb", params, tmp_path)
    lines = progress_lines(again)
    assert len(lines) == 4 and all(" loaded " in line for line in lines), lines
    assert "4 of them already have results" in "\n".join(outputs(again, "text/markdown"))
    assert outputs(again, "image/png")


FACT_ROWS = ["base-model precision", "memory use", "what is trained", "speed", "accuracy trade-off"]


def facts_table(said: str) -> dict[str, list[str]]:
    """The Markdown table of notebook 04: row name -> [LoRA, QLoRA, conclusion here]."""
    header = "| | LoRA | QLoRA | conclusion here |"
    assert header in said, "the Markdown facts table is missing"
    rows = {}
    for line in said.split(header, 1)[1].splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("*")] = cells[1:]
    return rows


@pytest.mark.e2e
def test_facts_notebook_runs_in_fast_setting(tmp_path, embedded_dir):
    out = tmp_path / "facts"
    nb = execute_notebook("04_lora_vs_qlora_facts.ipynb", FAST + f"MAX_NEW_TOKENS = 8\nOUT = {str(out)!r}\n", tmp_path)
    res = json.loads((out / "results.json").read_text())
    v = {x["name"]: x for x in res["variants"]}
    assert list(v) == ["base", "lora", "qlora"]
    assert v["lora"]["steps_done"] == v["qlora"]["steps_done"] == 2
    said = "\n".join(outputs(nb, "text/markdown"))
    assert not re.search(r"\bnan\b", said, re.IGNORECASE), "a sentence quotes a missing number"
    assert res["device"] in said and "dequantized Q4_1 GGUF" in said
    assert outputs(nb, "text/html"), "the DataFrame view of the table is missing"

    table = facts_table(said)
    assert list(table)[:5] == FACT_ROWS
    for row, cells in table.items():
        assert len(cells) == 3 and all(cells), f"{row}: an empty cell in {cells}"

    # each conclusion agrees with the numbers in results.json
    ratio = v["qlora"]["weight_bytes"] / v["lora"]["weight_bytes"]
    m = re.search(r"QLoRA's weights take (\d+)% of LoRA's", table["memory use"][2])
    assert m and abs(int(m[1]) - 100 * ratio) <= 0.5, (table["memory use"][2], ratio)

    trainable = f"{v['lora']['trainable_params']:,}"
    assert trainable in table["what is trained"][0] and trainable in table["what is trained"][1]
    assert table["what is trained"][2].startswith(f"the same adapter: {trainable} float32 parameters")

    slower = v["lora"]["tokens_per_second"] / v["qlora"]["tokens_per_second"]  # default TOLERANCE = 0.05
    m = re.match(r"QLoRA trained (?:(\d+\.\d\d)× (slower|faster)|about as fast)", table["speed"][2])
    assert m, table["speed"][2]
    if m[1] is None:
        assert abs(slower - 1) <= 0.05
    elif m[2] == "slower":
        assert slower > 1.05 and float(m[1]) == pytest.approx(slower, abs=0.005)
    else:
        assert slower < 0.95 and float(m[1]) == pytest.approx(1 / slower, abs=0.005)

    gap = 100 * (v["qlora"]["accuracy"] - v["lora"]["accuracy"])
    m = re.match(
        r"(?:same accuracy \(both [\d.]+%\)|QLoRA (lost|gained) ([\d.]+) points)", table["accuracy trade-off"][2]
    )
    assert m, table["accuracy trade-off"][2]
    if m[1] is None:
        assert abs(gap) < 0.05
    else:
        assert (m[1] == "lost") == (gap < 0) and float(m[2]) == pytest.approx(abs(gap), abs=0.05)
    # each accuracy with its interval, and the gap's paired verdict with its numbers (McNemar on the same examples)
    for cell, name in ((table["accuracy trade-off"][0], "lora"), (table["accuracy trade-off"][1], "qlora")):
        assert f"(95% interval {100 * v[name]['accuracy_low']:.1f}".rstrip("0").rstrip(".") in cell, cell
    conclusion = table["accuracy trade-off"][2]
    assert re.search(
        r"QLoRA got \d+ examples? right that LoRA missed and missed \d+ that LoRA got right"
        r"|QLoRA and LoRA got exactly the same 4 examples right",
        conclusion,
    ), conclusion
    assert "eval loss" in conclusion.split(". ", 1)[1]  # the losses' paired test too

    # the last cell gives a verdict on every row of the table
    verdicts = dict(re.findall(r"^- \*\*(.+?)\*\*: \*\*(agrees|partly|disagrees|can't tell)\*\*", said, re.MULTILINE))
    assert set(table) == set(verdicts), (list(table), verdicts)
    assert verdicts["base-model precision"] == ("partly" if "float32" in res["device"] else "agrees")
    assert re.search(r"agrees with the usual claim on \*\*\d of \d\*\* rows", said)


def test_classroom_notebook_dry_run_with_simulated_students(tmp_path, tiny_model_dir, tiny_jsonl):
    """A class of thirty simulated students, two processes at once taking turns on the machine, write to one
    folder; the closing cell charts them by person and pools the students of one setting."""
    folder = tmp_path / "class"
    params = (
        f"CLASS_RUNS = {str(folder)!r}\nSIMULATE = 30\nAT_ONCE = 2\nMODEL = {str(tiny_model_dir)!r}\nTASK = None\n"
        f"DATA = {str(tiny_jsonl)!r}\nSTEPS = 1\nBATCH_SIZE = 4\nSEQ_LEN = 32\nEVAL_EXAMPLES = 0\n"
    )
    nb = execute_notebook("05_classroom.ipynb", params, tmp_path)
    made = sorted(p.parent.name for p in folder.glob("*/results.json"))
    setting = ["lora-r2", "lora-r16", "lora-r8", "qlora-r8"]
    assert made == sorted(f"student_{i + 1}-{setting[i % 4]}" for i in range(30))
    said = "\n".join(outputs(nb, "text/markdown"))
    assert "30 simulated students wrote their runs, 2 processes at once" in said
    people = "student 1, student 10, student 11, student 12 and 26 more"
    assert f"30 runs by 30 people ({people})" in said and "The frontier has" in said
    # eight students made rank 2 on all-linear: pooled like eight seeds, with the interval of their mean
    assert "4 settings among the 30 runs; 4 made by more than one student, pooled like seeds: " in said
    assert re.search(
        r"r=2, all-linear\)` by student \d+(, student \d+){3} and 4 more: mean [\d.]+ \(95% interval", said
    )
    assert len(outputs(nb, "image/png")) == 3, "the class's chart, its pooled chart or the model-size chart is missing"
    assert "QLoRA's estimated peak is" in said and "at smollm2-135m" in said


@pytest.mark.e2e
def test_hosted_gpu_notebook_runs_offline_with_the_embedded_model(tmp_path, embedded_dir):
    """06: the install is skipped (the workbench is importable), the hub is not reachable (HF_HUB_OFFLINE), so
    the quickstart runs on the embedded model, here on the CPU."""
    out = tmp_path / "runs" / "hosted"
    params = FAST + f'VARIANTS = "lora"\nOUT = {str(out)!r}\n'
    nb = execute_notebook("06_hosted_gpu.ipynb", params, tmp_path)
    said = stream_text(nb)
    assert "the embedded copy" in said and "device: cpu" in said
    res = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in res["variants"]] == ["lora"] and res["variants"][0]["steps_done"] == 2
    assert outputs(nb, "application/vnd.jupyter.widget-view+json"), "the app was not displayed"


def test_inits_notebook_reads_the_lesson_without_training(tmp_path):
    """07 reads the inits lesson from run folders (here made up, as tests/scenarios/test_inits_lesson.py writes
    them: the published file's reading is tested there) and trains nothing: no model loads, the sweeps are only
    printed."""
    from scenarios.test_inits_lesson import write_run  # the made-up runs of the lesson's own test

    runs = tmp_path / "inits"
    for seed in range(3):
        write_run(runs, f"lora-{seed}", "lora", seed, 0.95)
        write_run(runs, f"qlora-{seed}", "qlora", seed, 0.45)
        write_run(runs, f"pissa-{seed}", "qlora", seed, 0.46, init="pissa", residual=True)
    nb = execute_notebook("07_inits.ipynb", f"RUNS = {str(runs)!r}\n", tmp_path)
    said = "\n".join(outputs(nb, "text/markdown"))
    assert f"Read from the 9 run folders in `{runs}`: 9 runs of 3 settings, 60 examples." in said
    assert "| QLoRA + PiSSA | 3 |" in said and "| what 4 bits cost: QLoRA against LoRA |" in said
    assert "How much of NF4's cost each init won back" in said and "- **QLoRA + PiSSA**: " in said
    assert "The gap was not measured here" in said and "Q4_1" in said
    assert len(outputs(nb, "image/png")) == 1, "the curves beside plain QLoRA's are missing"
    assert outputs(nb, "text/html"), "the table of inits is missing"
    printed = stream_text(nb)
    assert printed.count("workbench sweep --preset cpu-demo --task dates") == 3 and "--inits gaussian,loftq" in printed
    assert not list(runs.glob("*-seed*")), "the notebook started a sweep"
