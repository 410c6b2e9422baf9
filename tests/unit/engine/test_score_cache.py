"""The score cache (engine.score_cache): a base scored once is read back by every later run, and any change to
the weights, the examples, the loading or the scoring code is a miss; a damaged or foreign entry is a miss, never
an error; writers of one entry never show a reader half of it; a home that cannot be written only means no reuse.
(Evaluate reading kept scores back is tests/unit/ui/test_compare.py's and tests/unit/engine/test_session.py's.)"""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from helpers import tiny_config

from workbench.core.config import RunConfig
from workbench.core.events import Hooks
from workbench.engine import score_cache
from workbench.engine.generate import DecodeSettings, EvalResult
from workbench.experiments import comparison
from workbench.records import runs


def config(model_dir, data, variants="base", **train):
    return tiny_config(model_dir, data, variants=variants, steps=1, **train)


def run(cfg, out, **kw):
    statuses: list[str] = []
    comparison.run_compare(cfg, out, Hooks(on_status=statuses.append), **kw)
    return statuses


def base_row(out):
    return next(v for v in runs.Run(out).read()["variants"] if v["name"] == "base")


@pytest.mark.usefixtures("cold_home")
def test_a_second_run_reads_the_base_scores_back_and_writes_the_same_files(
    tiny_model_dir, tiny_jsonl, tmp_path, scored
):
    cfg = config(tiny_model_dir, tiny_jsonl)
    first = run(cfg, tmp_path / "one")
    assert scored == [("eval", True), ("general", True)]
    assert "evaluating base (adapter disabled)" in first
    second = run(cfg, tmp_path / "two")
    assert scored == [("eval", True), ("general", True)]  # nothing scored again
    said = [s for s in second if "from the cache" in s]
    assert len(said) == 1 and said[0].startswith(
        "base: scores from the cache (3 examples and the general text, scored "
    )
    for name in ("scores.json", "predictions.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    one, two = base_row(tmp_path / "one"), base_row(tmp_path / "two")
    assert two["eval_seconds"] == one["eval_seconds"] > 0  # the kept scoring's own time: what a plan prices
    measured = {"peak_memory_bytes"}  # this run's own measurement, at least the kept scoring's
    assert {k: v for k, v in one.items() if k not in measured} == {k: v for k, v in two.items() if k not in measured}
    # a third run, the prompts answered with other settings and the 4-bit settings changed: still the same scores
    d = cfg.to_dict()
    d["quant"] = {"bits": 4, "quant_type": "fp4", "double_quant": False}
    run(RunConfig.from_dict(d), tmp_path / "three", decode=DecodeSettings(max_new_tokens=3))
    assert len(scored) == 2


@pytest.mark.usefixtures("cold_home")
def test_a_plain_text_tasks_base_is_read_back_by_its_blocks(tiny_model_dir, tmp_path, scored):
    text = tmp_path / "words.txt"
    text.write_text(" ".join(["red green blue apple banana cherry ."] * 60), encoding="utf-8")
    cfg = config(tiny_model_dir, text)
    run(cfg, tmp_path / "one")
    statuses = run(cfg, tmp_path / "two")
    assert scored.count(("eval", True)) == 1 and any("from the cache" in s for s in statuses)
    kept = json.loads((tmp_path / "two" / "scores.json").read_text())["base"]["eval"]
    assert kept["correct"] is None and len(kept["keys"]) > 1  # scored by perplexity, block by block
    assert (tmp_path / "one" / "scores.json").read_bytes() == (tmp_path / "two" / "scores.json").read_bytes()


def changed_weights(model_dir):
    """Every weight of the model folder's safetensors nudged, written back in place (a new file, a new time)."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = {k: v + 0.05 for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def changed(what: str, cfg: RunConfig, model, monkeypatch) -> RunConfig:
    """cfg with one thing the base's scores depend on changed (the model folder or the scoring code in place)."""
    d = cfg.to_dict()
    if what == "weights":
        changed_weights(model)
    elif what == "examples":
        d["train"]["eval_examples"] = 2  # of the 3 held out
    elif what == "seq_len":
        d["train"]["seq_len"] = 24
    elif what == "dtype":
        d["model"]["dtype"] = "bfloat16"
    elif what == "scoring version":
        monkeypatch.setattr(score_cache, "SCORE_VERSION", score_cache.SCORE_VERSION + 1)
    elif what == "scoring code":
        monkeypatch.setattr(score_cache, "code_digest", lambda: "edited")
    return RunConfig.from_dict(d)


CHANGES = ["weights", "examples", "seq_len", "dtype", "scoring version", "scoring code"]


@pytest.mark.usefixtures("cold_home")
@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_base_scores_depend_on_is_a_miss(
    change, tiny_model_dir, tiny_jsonl, tmp_path, scored, monkeypatch
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)  # a copy of its own: the weights may be changed
    cfg = config(model, tiny_jsonl)
    run(cfg, tmp_path / "before")
    run(cfg, tmp_path / "again")
    assert scored.count(("eval", True)) == 1  # the unchanged base hits
    other = changed(change, cfg, model, monkeypatch)
    statuses = run(other, tmp_path / "after")
    assert scored.count(("eval", True)) == 2, change  # scored anew
    assert not any("from the cache" in s for s in statuses)
    run(other, tmp_path / "after-again")
    assert scored.count(("eval", True)) == 2  # and the new scores are kept in turn
    if change == "weights":  # what a stale hit would have got wrong
        before = json.loads((tmp_path / "before" / "scores.json").read_text())["base"]["eval"]["losses"]
        after = json.loads((tmp_path / "after" / "scores.json").read_text())["base"]["eval"]["losses"]
        assert before != after


@pytest.mark.usefixtures("cold_home")
def test_a_damaged_entry_is_a_miss_and_is_scored_again(tiny_model_dir, tiny_jsonl, tmp_path, scored):
    cfg = config(tiny_model_dir, tiny_jsonl)
    run(cfg, tmp_path / "one")
    entries = sorted(score_cache.cache_dir().glob("*.json"))
    assert len(entries) == 2  # the base's eval split and its general text
    for path in entries:
        text = path.read_text()
        path.write_text(text[: len(text) // 2])  # cut in half, as no atomic write ever leaves one
    run(cfg, tmp_path / "two")
    assert scored.count(("eval", True)) == 2 and scored.count(("general", True)) == 2
    assert (tmp_path / "one" / "scores.json").read_bytes() == (tmp_path / "two" / "scores.json").read_bytes()
    run(cfg, tmp_path / "three")  # rewritten whole by the run that scored again
    assert scored.count(("eval", True)) == 2


def fake_result(n: int = 3) -> EvalResult:
    keys = [f"k{i}" for i in range(n)]
    return EvalResult(0.5, 1.6487, 2 / 3, [], [0.4, 0.5, 0.6][:n], [2, 2, 2][:n], keys, seconds=1.5)


def fake_key(n: int = 3) -> dict:
    return {"what": "eval", "examples": {"keys": [f"k{i}" for i in range(n)]}}


@pytest.mark.usefixtures("cold_home")
@pytest.mark.parametrize(
    "damage",
    [
        "",
        "not json",
        "[]",
        '{"key": {"what": "eval"}}',
        '{"key": KEY, "scored_at": 1, "result": {"eval_loss": 0.5}}',
        '{"key": KEY, "scored_at": 1, "result": {"eval_loss": 0.5, "perplexity": 1, "accuracy": null, "keys": ["x"]}}',
    ],
)
def test_load_never_raises_on_a_damaged_or_foreign_entry(damage):
    key = fake_key()
    path = score_cache.entry_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(damage.replace("KEY", json.dumps(key)))
    assert score_cache.load(key) is None


@pytest.mark.usefixtures("cold_home")
def test_an_entry_is_read_back_as_it_was_stored():
    key, result = fake_key(), fake_result()
    assert score_cache.load(key) is None
    score_cache.store(key, result, 1234)
    entry = score_cache.load(key)
    assert entry.result == result and entry.peak_memory_bytes == 1234 and entry.when.count(":") == 1
    assert score_cache.load(fake_key(2)) is None  # another key is another entry


@pytest.mark.usefixtures("cold_home")
def test_writers_of_one_entry_never_show_a_reader_half_of_it():
    """A class's runs and a sweep's workers may score one base at once: each writes the whole entry beside it
    and renames it into place, so once an entry exists every reader sees a whole one. The raw file is parsed
    too: load() treats a damaged file as a miss, which would hide half an entry."""
    key, result = fake_key(), fake_result()
    score_cache.store(key, result)  # from here on the file must always be whole, whatever the writers do
    stop, errors, reads = threading.Event(), [], []

    def write():
        while not stop.is_set():
            score_cache.store(key, result)

    def read():
        for _ in range(300):
            text = score_cache.entry_file(key).read_text(encoding="utf-8")
            try:
                json.loads(text)
            except ValueError as exc:
                errors.append(exc)
            entry = score_cache.load(key)
            reads.append(entry is not None and entry.result == result)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        read()
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert not errors and len(reads) == 300 and all(reads)
    assert not list(score_cache.cache_dir().glob(".*"))  # no temp file left behind


@pytest.mark.usefixtures("cold_home")
def test_a_home_that_cannot_be_written_only_means_no_reuse(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the home's folder would be")
    monkeypatch.setenv("WORKBENCH_HOME", str(blocked))
    score_cache.store(fake_key(), fake_result())  # no exception
    assert score_cache.load(fake_key()) is None
