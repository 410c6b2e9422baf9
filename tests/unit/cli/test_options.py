"""The options of every command (cli.options): what they override in a preset."""

from __future__ import annotations


def test_no_experts_on_the_command_line_reaches_the_settings():
    from workbench import cli
    from workbench.core.config import preset_config

    parser = cli.build_parser()
    for argv, adapted in (
        (["compare"], True),
        (["compare", "--no-experts"], False),
        (["sweep", "--no-experts"], False),
    ):
        assert preset_config(None, cli.options.overrides(parser.parse_args(argv))).lora.adapt_experts is adapted
    # estimate reads the switch from the same option: its dest is the setting it sets
    assert getattr(parser.parse_args(["estimate", "--no-experts"]), "lora.adapt_experts") is False


def test_the_init_options_reach_compare_and_sweep_with_their_fields_help():
    from workbench import cli
    from workbench.core.config import INITS, LoraSettings, help_for, preset_config

    parser = cli.build_parser()
    given = ["--init", "pissa", "--pissa-niter", "0", "--loraplus-ratio", "16", "--loftq-iter", "3"]
    for command in ("compare", "sweep"):
        lora = preset_config(None, cli.options.overrides(parser.parse_args([command, *given]))).lora
        assert (lora.init, lora.pissa_niter, lora.loraplus_ratio, lora.loftq_iter) == ("pissa", 0, 16.0, 3), command
    lora = preset_config(None, cli.options.overrides(parser.parse_args(["compare"]))).lora
    assert (lora.init, lora.loraplus_ratio) == ("gaussian", 1.0)  # not given: the defaults
    sub = parser._subparsers._group_actions[0].choices["compare"]
    action = next(a for a in sub._actions if a.dest == "lora.init")
    assert list(action.choices) == list(INITS) and action.help == help_for(LoraSettings, "init")


def test_bad_init_settings_end_in_one_line_and_write_nothing(tmp_path, capsys):
    from workbench import cli

    out = tmp_path / "run"
    for bad, message in (
        (["--init", "lofty"], "argument --init: invalid choice: 'lofty'"),
        (["--init", "loftq"], "init: loftq works on qlora only, not on lora; give variants without lora (for example"),
        (["--init", "pissa", "--variants", "base,lora8"], "init: pissa works on lora and qlora only, not on lora8"),
        (["--loraplus-ratio", "nan"], "loraplus_ratio must be a finite number"),
        (["--loraplus-ratio", "0"], "loraplus_ratio must be above 0"),
        (["--loftq-iter", "0"], "loftq_iter must be between 1 and 20"),
        (["--pissa-niter", "-1"], "pissa_niter must be between 0 and 50"),
        (["--init", "eva", "--dora"], "use_dora: DoRA sets its own start"),
    ):
        try:
            code = cli.main(["compare", *bad, "--out", str(out)])
        except SystemExit as exc:  # argparse's own refusals exit from inside parse_args
            code = exc.code
        got = capsys.readouterr()
        assert code == 2 and got.err.startswith("workbench: error: "), bad
        assert message in got.err and got.err.strip().count("\n") == 0 and got.out == "", got.err
    assert not out.exists()
