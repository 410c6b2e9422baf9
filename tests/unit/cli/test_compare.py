"""`workbench compare` on the tiny model: the happy path and its progress bars, the eval plan, seeds and their
pooled verdicts, --resume, and one-line refusals (an unknown target, an eval size over the split, a folder that
cannot be made, a variant that will not fit, data that cannot be read)."""

from __future__ import annotations

import json

from helpers import error_lines

from workbench import cli
from workbench.machine import memory
from workbench.records import runs


def test_a_data_error_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["compare", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)])
    assert rc == 2 and not out.exists()


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
    from helpers import tiny_examples

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
    assert error_lines(captured.err) == [
        "workbench: error: eval_examples: colours has 9 held-out examples; ask for at most that many (0 = all of them)"
    ]
    assert not (tmp_path / "run").exists()  # refused before anything loads


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


MiB = 1024**2


def _no_loading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("weights loaded although the run should have been refused first")

    monkeypatch.setattr("workbench.engine.models.load_model", refuse)


def test_the_cli_refuses_a_variant_that_will_not_fit_before_loading(
    tiny_model_dir, tiny_jsonl, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(memory, "available_bytes", lambda *a, **k: 1 * MiB)
    _no_loading(monkeypatch)
    out = tmp_path / "run"
    args = ["compare", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu", "--out", str(out)]
    code = cli.main([*args, "--steps", "2", "--variants", "lora,qlora"])
    said = capsys.readouterr().err
    err = [line for line in said.splitlines() if not line.startswith("[workbench] ")]  # status lines aside
    assert code == 2 and len(err) == 1 and "Traceback" not in said, err
    assert err[0].startswith("workbench: error: memory: ")
    assert "lora needs about" in err[0] and "will not fit" in err[0] and "gradient checkpointing" in err[0]
    assert "qlora about" in err[0]  # every variant that will not fit is named, not just the first
    assert not out.exists()  # nothing made


def test_compare_says_what_the_init_costs_with_its_plan(tiny_model_dir, monkeypatch, capsys):
    from workbench.cli.compare import print_init_plan
    from workbench.core.config import RunConfig

    cfg = RunConfig.from_dict(
        {"model": {"name": str(tiny_model_dir), "device": "cpu"}, "lora": {"init": "pissa", "pissa_niter": 2}}
    )
    print_init_plan(cfg)
    said = capsys.readouterr()
    # a plan line, on stderr as the eval plan's: stdout holds the results only (and nothing when refused)
    assert said.out == "" and said.err.startswith("[workbench] init pissa: one fast SVD per layer (")
    assert said.err.count("\n") == 1
    print_init_plan(RunConfig.from_dict({"model": {"name": str(tiny_model_dir), "device": "cpu"}}))
    assert capsys.readouterr().err == ""  # gaussian: nothing to say
