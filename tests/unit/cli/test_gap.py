"""`workbench gap`: the gap before training on the tiny model, as a table and as JSON (nothing else on stdout),
the figure saved when asked, an init's step-0 rows, and bad input refused in one line before anything loads."""

from __future__ import annotations

import json

import pytest
from helpers import error_lines, is_png

from workbench import cli


def test_gap_json_is_the_whole_of_stdout(tiny_model_dir, capsys):
    rc = cli.main(["gap", "--model", str(tiny_model_dir), "--examples", "6", "--formats", "int8,nf4-dq", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert [r["key"] for r in doc["rows"]] == ["16-bit", "int8", "nf4-dq"] and doc["examples"] == 6
    nf4 = doc["rows"][2]
    # the tiny model's golden figures (engine/explain/test_gap.py checks them against bitsandbytes by hand)
    assert nf4["total_rel_error"] == pytest.approx(0.0919, abs=0.002)
    assert doc["rows"][1]["total_rel_error"] == pytest.approx(0.0060, abs=0.0005)
    lo, hi = nf4["kl_ci"]
    assert 0 < lo <= nf4["kl"] <= hi and nf4["loss_vs_16bit_ci"][0] <= nf4["loss_vs_16bit"]
    assert len(doc["layers"]) == 2 * 14 and not doc["embedded"]


def test_gap_table_with_an_init_and_a_figure(tiny_model_dir, tmp_path, capsys):
    figure = tmp_path / "gap.png"
    argv = ["gap", "--model", str(tiny_model_dir), "--examples", "4", "--formats", "nf4-dq,int8"]
    rc = cli.main([*argv, "--init", "loftq", "--rank", "4", "--figure", str(figure)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.splitlines()
    assert lines[0].startswith(f"{tiny_model_dir}: the gap before training on 4 eval examples")
    assert lines[1].split()[:2] == ["format", "weight"]
    assert [line.split("  ")[0] for line in lines[2:6]] == [
        "16-bit (float32 reference)",
        "8-bit LLM.int8 (row-wise)",
        "4-bit NF4 + double quant",
        "4-bit NF4 + double quant, with loftq at step 0",
    ]
    assert "9.19%" in lines[4] and "8.2" in lines[5].split("step 0")[1].split("%")[0]
    assert "note: loftq works on 4 bits: the other formats have no row with it" in lines
    assert lines[-1] == f"figure: {figure}" and is_png(figure)


@pytest.mark.parametrize(
    "argv, starts",
    [
        (["--formats", "nf4,q8"], "formats: 'q8' is not a format"),
        (["--figure", "gap.jpg"], "figure: 'gap.jpg' must end in .png, .svg or .pdf"),
        (["--figure", "no/such/folder/gap.png"], "figure: the folder 'no/such/folder' does not exist"),
        (["--examples", "0"], "examples must be a whole number"),
        (["--examples", "100000"], "examples: sentiment has"),
        (["--init", "pissa", "--rank", "0"], "rank must be"),
        (["--init", "olora", "--targets", "w_nope"], "targets: w_nope not found in this model"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(argv, starts, tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["gap", "--model", str(tiny_model_dir), *argv])
    out = capsys.readouterr()
    assert rc == 2 and out.out == ""
    lines = error_lines(out.err)
    assert len(lines) == 1 and lines[0].startswith(f"workbench: error: {starts}"), out.err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_init_is_refused_by_its_choices(tiny_model_dir, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["gap", "--model", str(tiny_model_dir), "--init", "lofty"])
    assert info.value.code == 2 and "--init: invalid choice: 'lofty'" in capsys.readouterr().err
