"""run_compare on the tiny model (the run folder it writes), and the CLI in-process and as a process."""

import csv
import json
import math
import os
import subprocess
import sys
import threading

import pytest
import torch

from workbench import cli
from workbench.core.config import DEFAULT_MODEL, PRESETS, RunConfig, preset_config
from workbench.core.events import Hooks, MetricEvent
from workbench.experiments.comparison import run_compare
from workbench.records import runs
from workbench.records.results import results_frame

STEPS = 3
TRAINING_FIELDS = ["rank", "target_modules", "train_seconds", "tokens_per_second", "final_train_loss", "steps_done"]


def tiny_config(model_dir, data, variants="base,lora,qlora", steps=STEPS, **train):
    return RunConfig.from_dict(
        {
            "model": {"name": str(model_dir), "device": "cpu"},
            "lora": {"rank": 4, "alpha": 8.0},
            "quant": {"bits": 4},
            "train": {"steps": steps, "lr": 3e-2, "batch_size": 4, "seq_len": 32, "warmup_steps": 0, **train},
            "task": None,
            "data": str(data),
            "variants": variants,
        }
    )


def _png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tiny_jsonl, tmp_path_factory):
    """One compare of base, lora and qlora, shared by the tests that read its folder."""
    out = tmp_path_factory.mktemp("compare") / "run"
    events, statuses = [], []
    result = run_compare(
        tiny_config(tiny_model_dir, tiny_jsonl),
        out,
        Hooks(sinks=(events.append,), on_status=statuses.append, on_progress=PROGRESS.append),
    )
    return result, out, events, statuses


PROGRESS: list = []  # what full_run's on_progress was told


def test_each_variant_is_scored_on_the_general_text_for_forgetting(full_run):
    result, out, _, _ = full_run
    rows = {v["name"]: v for v in runs.Run(out).read()["variants"]}
    assert all(r["general_loss"] > 0 for r in rows.values())
    assert rows["base"]["forgetting"] is None
    # lora trains on the 16-bit base that the base row is: its forgetting is the difference of the two
    assert rows["lora"]["forgetting"] == pytest.approx(rows["lora"]["general_loss"] - rows["base"]["general_loss"])
    assert rows["qlora"]["forgetting"] is not None  # against its own 4-bit base


def test_every_phase_reports_progress_with_counts(full_run):
    """Loading, evaluating, training and answering each tell where they are, in order, to the end."""
    phases = list(dict.fromkeys((p.stage, p.phase, p.variant) for p in PROGRESS))
    assert [(st, ph, v) for st, ph, v in phases] == [
        (1, "load", "the 16-bit base"),
        (2, "evaluate", "base"),
        (3, "answer", "base"),
        (4, "train", "lora"),
        (5, "evaluate", "lora"),
        (6, "answer", "lora"),
        (7, "load", "the 4-bit base"),
        (8, "train", "qlora"),
        (9, "evaluate", "qlora"),
        (10, "answer", "qlora"),
    ]
    assert {p.stages for p in PROGRESS} == {10}
    for stage, _, _ in phases:
        told = [p for p in PROGRESS if p.stage == stage]
        assert told[0].done == 0 and told[-1].finished  # from the start of each phase to its end
        assert [p.done for p in told] == sorted(p.done for p in told)
    assert [p.done for p in PROGRESS if p.phase == "train" and p.variant == "lora"] == list(range(STEPS + 1))
    assert [(p.done, p.total, p.unit) for p in PROGRESS if p.stage == 2][-1] == (3, 3, "examples")
    middle = next(p for p in PROGRESS if p.phase == "train" and p.done == 1)
    assert middle.eta_s is not None and "ETA" in middle.describe() and f"1 of {STEPS} steps" in middle.describe()


def test_results_json_fields(full_run):
    result, out, _, _ = full_run
    doc = runs.Run(out).read()
    assert doc["stopped"] is False and result.stopped is False
    assert doc["task"] == "tiny" and doc["device"].startswith("cpu")
    assert doc["config"]["variants"] == ["base", "lora", "qlora"]
    by_name = {v["name"]: v for v in doc["variants"]}
    assert list(by_name) == ["base", "lora", "qlora"]
    for v in doc["variants"]:
        assert list(v) == runs.RESULT_FIELDS  # the documented fields, then steps_done and status
        assert v["status"] == "done"
        assert v["total_params"] > 0 and v["weight_bytes"] > 0
        assert v["peak_memory_bytes"] >= 0 and v["estimated_peak_bytes"] > 0
        assert 0.0 <= v["accuracy"] <= 1.0
        assert v["eval_loss"] > 0 and v["perplexity"] == pytest.approx(math.exp(v["eval_loss"]))
    base = by_name["base"]
    assert base["bits"] == 16 and base["trainable_params"] == 0
    assert all(base[k] is None for k in TRAINING_FIELDS)
    for name, bits in (("lora", 16), ("qlora", 4)):
        v = by_name[name]
        assert v["bits"] == bits and v["rank"] == 4 and v["target_modules"] == "all-linear"
        assert v["trainable_params"] == 4 * 2048 and v["steps_done"] == STEPS
        assert v["train_seconds"] > 0 and v["tokens_per_second"] > 0 and math.isfinite(v["final_train_loss"])
    assert by_name["qlora"]["weight_bytes"] < by_name["lora"]["weight_bytes"]
    assert all(v["estimated_peak_bytes"] > v["weight_bytes"] for v in doc["variants"])
    # the unquantized base is held in this machine's compute dtype, the 4-bit one in NF4
    assert by_name["qlora"]["base_dtype"] == "nf4" and by_name["lora"]["base_dtype"] == doc["device"].split("(")[1][:-1]
    assert len({v["total_params"] for v in doc["variants"]}) == 1  # 4-bit weights counted by element


def test_run_folder_files(full_run):
    result, out, _, _ = full_run
    expected = {
        "results.json",
        "results.csv",
        "metrics.csv",
        "loss.png",
        "memory.png",
        "accuracy_vs_memory.png",
        "generations.md",
        "predictions.json",
        "scores.json",
        "adapters",
    }
    assert set(os.listdir(out)) == expected  # nothing else: no temp files
    for png in ("loss.png", "memory.png", "accuracy_vs_memory.png"):
        assert _png(out / png), png
    assert sorted(os.listdir(out / "adapters")) == ["lora", "qlora"]
    for name in ("lora", "qlora"):
        assert (out / "adapters" / name / "adapter_config.json").is_file()
        assert (out / "adapters" / name / "adapter_model.safetensors").is_file()

    table = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in table] == ["base", "lora", "qlora"]
    assert list(table[0]) == runs.RESULT_FIELDS
    assert table[0]["rank"] == "" and table[1]["rank"] == "4"

    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(metrics) == 2 * STEPS  # trained variants x steps
    assert [(m["variant"], int(m["step"])) for m in metrics] == [
        (v, s) for v in ("lora", "qlora") for s in range(1, STEPS + 1)
    ]
    assert list(metrics[0]) == list(MetricEvent.__dataclass_fields__)
    assert len(result.metrics) == 2 * STEPS

    md = (out / "generations.md").read_text()
    assert md.startswith("# Side-by-side answers (tiny)")
    assert "| base | lora | qlora |" in md
    prompts = list(result.generations)
    assert prompts and all(p in md for p in prompts)
    assert all(set(answers) == {"base", "lora", "qlora"} for answers in result.generations.values())

    preds = json.loads((out / "predictions.json").read_text())
    assert set(preds) == {"base", "lora", "qlora"} and len(preds["base"]) == 3  # 15% of 20 held out


def test_sinks_and_status(full_run):
    _, _, events, statuses = full_run
    assert [(e.variant, e.step) for e in events] == [(v, s) for v in ("lora", "qlora") for s in range(1, STEPS + 1)]
    assert statuses[0].startswith("resolving model")
    assert any("4 bits" in s for s in statuses) and any("training qlora" in s for s in statuses)


def test_results_frame_of_a_run(full_run):
    result, _, _, _ = full_run
    table = results_frame(result.variants)
    assert list(table.index) == ["base", "lora", "qlora"]
    assert table.loc["base", "trainable"] == "-" and table.loc["lora", "trainable"] == "8,192"


def test_stop_after_first_lora_step(tiny_model_dir, tiny_jsonl, tmp_path):
    stop = threading.Event()

    def sink(e):
        if e.variant == "lora" and e.step == 1:
            stop.set()

    out = tmp_path / "run"
    result = run_compare(tiny_config(tiny_model_dir, tiny_jsonl), out, Hooks(sinks=(sink,), stop=stop))
    assert result.stopped
    doc = runs.Run(out).read()
    assert doc["stopped"] is True
    assert [v["name"] for v in doc["variants"]] == ["base", "lora"]  # qlora never started
    lora = doc["variants"][1]
    assert lora["status"] == "stopped" and lora["steps_done"] == 1
    assert lora["eval_loss"] is None and lora["accuracy"] is None and lora["final_train_loss"] is not None
    assert doc["variants"][0]["status"] == "done"
    assert (out / "adapters" / "lora" / "adapter_model.safetensors").is_file()
    assert not (out / "adapters" / "qlora").exists()
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1
    assert _png(out / "loss.png") and (out / "generations.md").is_file()


def test_same_config_same_losses_in_one_process(tiny_model_dir, tiny_jsonl, tmp_path):
    """'the same seed gives the same losses' also for a second compare in the same process (a notebook)."""
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora", steps=3)
    first = run_compare(cfg, tmp_path / "a")
    import torch

    torch.rand(100)  # whatever ran in between must not matter
    second = run_compare(cfg, tmp_path / "b")
    assert [m.loss for m in first.metrics] == [m.loss for m in second.metrics]


def test_preset_config():
    cfg = preset_config("cpu-demo", {"train": {"steps": 3}, "variants": "lora"})
    assert cfg.train.steps == 3 and cfg.train.batch_size == PRESETS["cpu-demo"]["train"]["batch_size"]
    assert cfg.model.device == "cpu" and cfg.variants == ["lora"]
    assert PRESETS["cpu-demo"]["train"]["steps"] == 20  # the preset itself is not modified
    assert preset_config(None) == RunConfig()
    with pytest.raises(ValueError, match="preset"):
        preset_config("nope")


def test_a_presets_eval_size_is_marked_as_the_presets_and_one_given_is_the_users():
    cfg = preset_config("cpu-demo")
    assert cfg.train.eval_examples == 60 and cfg.train.eval_examples_from_preset
    assert cfg.to_dict()["train"]["preset_eval_examples"] == 60
    assert "preset_eval_examples" not in PRESETS["cpu-demo"]["train"]  # the preset itself is not modified
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # kept through a config file and the panels' updates
    typed = preset_config("cpu-demo", {"train": {"eval_examples": 60}})  # the preset's own number, typed
    assert typed.train.eval_examples == 60 and not typed.train.eval_examples_from_preset
    moved = cfg.to_dict()
    moved["train"]["eval_examples"] = 30  # a panel's box moved off the preset's number: the user's now
    assert not RunConfig.from_dict(moved).train.eval_examples_from_preset
    # a config without the mark (its own, or written before there was one) keeps the keys it had
    assert "preset_eval_examples" not in typed.to_dict()["train"]
    assert "preset_eval_examples" not in RunConfig().to_dict()["train"]
    assert not preset_config(None).train.eval_examples_from_preset


# --------------------------------------------------------------------------- CLI, in-process


def _err_lines(text):
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args, field",
    [
        (["compare", "--rank", "0"], "rank"),
        (["compare", "--dropout", "1.5"], "dropout"),
        (["compare", "--variants", "foo"], "variants"),
        (["compare", "--variants", "lora,lora"], "variants"),
        (["compare", "--data", "missing.jsonl"], "data"),
        (["compare", "--preset", "nope"], "preset"),
        (["compare", "--steps", "-1"], "steps"),
        (["compare", "--seq-len", "2"], "seq_len"),
        (["compare", "--targets", ","], "targets"),
        (["compare", "--rank", "many"], "--rank"),  # argparse's own errors are one line too
        (["compare", "--device", "tpu"], "--device"),
        (["estimate", "--bits", "5"], "bits"),
        (["estimate", "--rank", "0"], "rank"),
        (["estimate", "--model", "nobody-here/no-such-model-xyz"], "model"),
        (["model-path", "nobody-here/no-such-model-xyz"], "model"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, field, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the checkout
    try:
        rc = cli.main(args)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == 2
    lines = _err_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("workbench: error:") and field in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_cli_unknown_target_on_the_tiny_model(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    rc = cli.main(
        [
            "compare",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tiny_jsonl),
            "--device",
            "cpu",
            "--targets",
            "not_a_module",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 2
    # the model has to be loaded to know its layer names, so progress lines come first; the error is one line
    errors = [line for line in captured.err.splitlines() if line.startswith("workbench: error")]
    assert len(errors) == 1 and errors[0] == captured.err.strip().splitlines()[-1]
    assert "targets" in errors[0] and "not_a_module" in errors[0] and "q_proj" in errors[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_compare_happy_path(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(
        [
            "compare",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tiny_jsonl),
            "--device",
            "cpu",
            "--variants",
            "base,lora",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--rank",
            "2",
            "--targets",
            "q_proj,v_proj",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "base" in captured.out and "lora" in captured.out and f"wrote {out.resolve()}" in captured.out
    bars = ("[1/6] loading the 16-bit base", "[2/6] evaluating base", "[4/6] training lora", "[6/6] answering lora")
    for bar in bars:
        assert bar in captured.err, captured.err  # a tqdm bar for every phase, not only training
    assert "2/2" in captured.err and "loss=" in captured.err
    doc = runs.Run(out).read()
    assert [v["name"] for v in doc["variants"]] == ["base", "lora"]
    assert doc["variants"][1]["target_modules"] == ["q_proj", "v_proj"] and doc["variants"][1]["rank"] == 2
    assert doc["config"]["train"]["steps"] == 2 and doc["config"]["data"] == str(tiny_jsonl)


def _colours(tmp_path):
    """colours.jsonl: 60 rows of the tiny task, of which the seeded 15% split holds out 9."""
    from conftest import tiny_examples

    rows = (tiny_examples() * 4)[:60]
    path = tmp_path / "colours.jsonl"
    path.write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows))
    return path


def _preset_over_colours(tiny_model_dir, tmp_path, *more):
    args = ["compare", "--preset", "cpu-demo", "--model", str(tiny_model_dir), "--data", str(_colours(tmp_path))]
    shape = ["--variants", "base,lora", "--steps", "1", "--batch-size", "4", "--seq-len", "32", "--rank", "2"]
    return cli.main([*args, *shape, "--targets", "q_proj,v_proj", "--out", str(tmp_path / "run"), *more])


def test_a_presets_eval_size_over_a_small_split_scores_all_of_it_and_says_so(tiny_model_dir, tmp_path, capsys):
    rc = _preset_over_colours(tiny_model_dir, tmp_path)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    said = "eval: the preset's 60 examples, but colours has 9 held-out examples: scoring all 9"
    assert f"[workbench] {said}" in captured.err and "eval: 9 of the task's 9 held-out examples" in captured.err
    doc = runs.Run(tmp_path / "run").read()
    assert said in doc["notes"] and [v["eval_examples"] for v in doc["variants"]] == [9, 9]
    assert doc["config"]["train"]["eval_examples"] == 60 and doc["config"]["train"]["preset_eval_examples"] == 60


def test_an_eval_size_typed_over_a_small_split_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys):
    rc = _preset_over_colours(tiny_model_dir, tmp_path, "--eval-examples", "60")
    captured = capsys.readouterr()
    assert rc == 2
    assert _err_lines(captured.err) == [
        "workbench: error: eval_examples: colours has 9 held-out examples; ask for at most that many (0 = all of them)"
    ]
    assert not (tmp_path / "run").exists()  # refused before anything loads


@pytest.mark.parametrize("model", ["tiny", DEFAULT_MODEL])
def test_cli_estimate_json(model, tiny_model_dir, capsys):
    name = str(tiny_model_dir) if model == "tiny" else model
    rc = cli.main(
        ["estimate", "--model", name, "--bits", "4", "--rank", "8", "--batch-size", "2", "--seq-len", "64", "--json"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["total"] == sum(doc["components"].values())
    assert doc["bits"] == 4 and doc["rank"] == 8 and doc["model"] == name
    assert {"adapter", "gradients", "optimizer state", "activations"} <= set(doc["components"])
    assert doc["components"]["optimizer state"] == 2 * doc["components"]["gradients"]


def test_cli_estimate_table(capsys):
    assert cli.main(["estimate", "--bits", "16", "--gradient-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{DEFAULT_MODEL}: 16-bit base")
    assert out.strip().splitlines()[-1].startswith("total") and "MiB" in out


def test_cli_model_path(tiny_model_dir, capsys):
    assert cli.main(["model-path", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir.resolve())


# --------------------------------------------------------------------------- CLI, as a process


def test_cli_subprocess_exit_status(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WORKBENCH_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "compare", "--rank", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "workbench: error: rank must be at least 1; got 0"
    assert proc.stdout == ""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "compare", "--no-such-flag"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert _err_lines(proc.stderr) == ["workbench: error: unrecognized arguments: --no-such-flag"]


def test_a_stopped_run_continued_matches_one_run_in_one_go(tiny_model_dir, tiny_jsonl, tmp_path):
    """10 steps, a stop, then 10 more from the saved adapter and optimizer state: the same adapters as 20
    steps in one go (the same batches, dropout masks and AdamW moments), and one loss curve, not two."""
    from peft import load_peft_weights

    from workbench.experiments.comparison import continue_run

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, variants="lora,qlora", steps=20, warmup_steps=3)
    stop = threading.Event()
    stopped = run_compare(cfg, tmp_path / "a", Hooks(stop=stop, sinks=(lambda e: e.step == 10 and stop.set(),)))
    assert stopped.stopped and [v.steps_done for v in stopped.variants] == [10]  # qlora never started
    assert runs.Run(tmp_path / "a").training_state("lora").step == 10
    resumed = continue_run(tmp_path / "a")
    assert not resumed.stopped and [(v.name, v.steps_done) for v in resumed.variants] == [("lora", 20), ("qlora", 20)]
    whole = run_compare(cfg, tmp_path / "b")
    for name in ("lora", "qlora"):
        a = load_peft_weights(str(tmp_path / "a" / "adapters" / name))
        b = load_peft_weights(str(tmp_path / "b" / "adapters" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [(r["variant"], int(r["step"])) for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv"))]
    assert steps == [("lora", i) for i in range(1, 21)] + [("qlora", i) for i in range(1, 21)]
    losses = {v.name: v.final_train_loss for v in whole.variants}
    assert {v.name: v.final_train_loss for v in resumed.variants} == pytest.approx(losses, rel=1e-5)
    # nothing left to do at 20 steps: asked for fewer than done, it says so
    with pytest.raises(ValueError, match="done 20 steps already"):
        continue_run(tmp_path / "a", steps=5)


def test_cli_resume_continues_a_run_and_refuses_a_folder_that_is_not_one(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["compare", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    shape = ["--variants", "lora", "--batch-size", "4", "--seq-len", "32", "--rank", "2"]
    assert cli.main([*base, *shape, "--steps", "2", "--out", str(out)]) == 0
    assert cli.main(["compare", "--resume", str(out), "--steps", "4"]) == 0
    assert runs.Run(out).read()["variants"][0]["steps_done"] == 4
    capsys.readouterr()
    assert cli.main(["compare", "--resume", str(tmp_path / "nothing-here")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_cli_out_that_cannot_be_made_is_one_line_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["compare", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"workbench: error: out: {blocker} is a file, so {blocker / 'run'} cannot be a folder; choose another folder"
    )


def test_cli_compare_seeds_trains_each_variant_per_seed_and_pools_the_verdicts(
    tiny_model_dir, tiny_jsonl, tmp_path, capsys
):
    out = tmp_path / "seeded"
    args = ["compare", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    args += ["--variants", "base,lora", "--steps", "2", "--batch-size", "4", "--seq-len", "32", "--rank", "2"]
    rc = cli.main([*args, "--seed", "3", "--seeds", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # one run folder a seed, each with the seed it trained with and per-example scores to pair on
    assert sorted(p.name for p in out.iterdir()) == ["seed-3", "seed-4"]
    for seed in (3, 4):
        run = runs.Run(out / f"seed-{seed}")
        assert run.read()["config"]["train"]["seed"] == seed
        lora = next(v for v in run.results() if v.name == "lora")
        assert lora.eval_examples == len(run.scores()["lora"]["eval"]["keys"]) > 0
        assert lora.eval_loss_low <= lora.eval_loss <= lora.eval_loss_high
    # the plan said what the eval size resolves before anything loaded
    assert "only accuracy gaps of about" in captured.err
    # the pooled table and the verdicts over both seeds
    assert "over 2 seeds" in captured.out and "eval loss mean" in captured.out
    assert "is the difference real?" in captured.out and "2 seeds" in captured.out
    said = captured.out[captured.out.index("is the difference real?") :]
    # verdicts on the settings, with the seeds' spread counted: a mean over the 2 seeds, one seed's sd beside it
    assert "mean eval loss is lower by" in said and "(sd)" in said and "over 2 seeds each" in said, said
