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
