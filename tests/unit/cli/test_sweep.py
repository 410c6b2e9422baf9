"""`workbench sweep` on the tiny model: a grid planned, trained and written with its table and chart; seeds pooled;
a search."""

from __future__ import annotations

from workbench.records import runs


def tiny_sweep(model, data, *more: str) -> list[str]:
    """`workbench sweep` on the tiny model and task at the quickest budget, with more options."""
    quick = "--device cpu --steps 2 --batch-size 4 --seq-len 32".split()
    return ["sweep", "--model", str(model), "--data", str(data), *quick, *more]


def test_the_cli_runs_a_search(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "search"
    args = tiny_sweep(tiny_model_dir, tiny_jsonl, "--search", "2", "--ranks", "1,4", "--target-sets", "q_proj")
    assert cli.main([*args, "--bits", "16", "--lr-range", "1e-3,1e-2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "search: 2 settings, score up and memory down; rank 1-4 (log)" in captured.out, captured.out
    assert ": 2 finished" in captured.out and "optuna-dashboard" in captured.out
    table = (out / "sweep.csv").read_text()
    assert table.count("trained") == 2 and "lr" in table.splitlines()[0]  # a search's columns: alpha, lr, dropout
    assert (out / "trials.csv").read_text().count("complete") == 2 and (out / "sweep.png").is_file()


def test_cli_sweep_plans_trains_and_writes_its_table_and_chart(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    shape = ["--steps", "1", "--batch-size", "4", "--seq-len", "32", "--target-sets", "q_proj", "--out", str(out)]
    assert cli.main([*common, *shape, "--ranks", "2,4", "--bits", "16", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "2 points: 0 already on disk, 2 to train" in said and "16bit-r4-q_proj" in said and not out.exists()
    assert cli.main([*common, *shape, "--ranks", "2,4", "--bits", "16"]) == 0
    said = capsys.readouterr().out
    assert (out / "sweep.csv").is_file() and (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "sweep.csv, sweep.png" in said and said.count("trained") >= 2
    for bad, field in ((["--ranks", "two"], "--ranks"), (["--double-quant", "maybe"], "--double-quant")):
        assert cli.main([*common, *shape, *bad]) == 2
        assert field in capsys.readouterr().err


def test_a_sweep_with_seeds_repeats_each_point_and_pools_them(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "sweep"
    common = ["sweep", "--model", str(tiny_model_dir), "--data", str(tiny_jsonl), "--device", "cpu"]
    shape = ["--steps", "1", "--batch-size", "4", "--seq-len", "32", "--target-sets", "q_proj", "--out", str(out)]
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "2", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "2 points (1 settings × 2 seeds): 0 already on disk, 2 to train" in said
    assert "16bit-r2-q_proj " in said and "16bit-r2-q_proj-seed1" in said and "show reliably" in said
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "2"]) == 0
    said = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"16bit-r2-q_proj", "16bit-r2-q_proj-seed1", "sweep.csv", "sweep.png"}
    assert "over 2 seeds" in said
    # run again with one seed more: the two on disk are read back, only the third trains
    assert cli.main([*common, *shape, "--ranks", "2", "--bits", "16", "--seeds", "3"]) == 0
    said = capsys.readouterr().out
    assert "3 points (1 settings × 3 seeds): 2 already on disk, 1 to train" in said
    assert said.count("loaded") == 2 and said.count("trained") == 1 and "over 3 seeds" in said
    seeds = sorted(
        runs.Run(out / name).read()["config"]["train"]["seed"]
        for name in ("16bit-r2-q_proj", "16bit-r2-q_proj-seed1", "16bit-r2-q_proj-seed2")
    )
    assert seeds == [0, 1, 2]


def test_the_cli_sweeps_inits_and_leaves_out_what_cannot_start(tiny_model_dir, tiny_jsonl, tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "sweep"
    args = tiny_sweep(tiny_model_dir, tiny_jsonl, "--ranks", "4", "--target-sets", "q_proj", "--out", str(out))
    assert cli.main([*args, "--bits", "16,4", "--inits", "gaussian,loftq,pissa", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "5 points: 0 already on disk, 5 to train" in said, said
    assert "left out: loftq at 16 bits" in said and "init loftq: one exact SVD and one 4-bit quantization" in said
    assert "4bit-nf4-r4-q_proj-loftq " in said and "16bit-r4-q_proj-loftq" not in said and not out.exists()
    # --init alone, made for 4 bits: the base follows it, and the points' names say it
    assert cli.main([*args, "--bits", "4", "--init", "loftq", "--loftq-iter", "2", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "4bit-nf4-r4-q_proj-loftq " in said and ", 2 times" in said
    for bad, message in (
        (["--bits", "16", "--inits", "loftq"], "inits: loftq works on 4-bit bases only"),
        (["--bits", "16", "--init", "loftq"], "inits: loftq works on 4-bit bases only"),
        (["--inits", "lofty"], "inits: 'lofty' is not one of"),
        (["--loraplus-ratios", "4,-1"], "loraplus_ratios must be above 0"),
        (["--search", "2", "--bits", "16,4", "--inits", "loftq"], "bits: no init given works at 16 bits"),
    ):
        assert cli.main([*args, *bad, "--plan"]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not out.exists()
    assert cli.main([*args, "--search", "2", "--inits", "gaussian,pissa", "--loraplus-ratios", "1,16", "--plan"]) == 0
    assert "init gaussian | pissa, LoRA+ ratio 1-16 (log)" in capsys.readouterr().out
