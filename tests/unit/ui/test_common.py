"""What every panel uses (ui.common): figures as PNG images, messages and errors escaped, a control's tooltip from
the config field it sets, the Quiet flag that outlives no exception, the verdicts and the plan as HTML."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
from matplotlib.figure import Figure

from workbench.core.config import LoraSettings, QuantSettings, help_for
from workbench.ui import common


def test_a_figure_becomes_png_bytes_and_an_image_widget():
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    assert common.png(fig).startswith(b"\x89PNG\r\n\x1a\n")
    img = common.image(fig, max_width="300px")
    assert bytes(img.value).startswith(b"\x89PNG") and img.layout.max_width == "300px"
    assert common.image().value == b""  # an empty image until the first figure


def test_messages_are_escaped_and_errors_are_one_line_with_the_details_folded():
    assert (
        common.message("ok", "<b>done</b>")
        == '<div class="wb-msg wb-ok" style="color:#1b5e20">&lt;b&gt;done&lt;/b&gt;</div>'
    )
    with pytest.raises(KeyError):
        common.message("shout", "x")
    plain = common.error_html(ValueError("rank must be at least 1\nmore"))
    assert "rank must be at least 1" in plain and "more" not in plain and "ValueError" not in plain
    other = common.error_html(RuntimeError("boom"), details="Traceback <here>")
    assert "RuntimeError: boom" in other and "<details>" in other and "Traceback &lt;here&gt;" in other


def test_a_control_gets_the_help_of_the_field_it_sets_as_its_tooltip():
    rank = common.helped(widgets.IntText(description="Rank"), LoraSettings, "rank")
    assert rank.tooltip == help_for(LoraSettings, "rank") and rank.style.description_width == "150px"
    box = common.helped(widgets.Checkbox(description="rsLoRA"), LoraSettings, "use_rslora")
    assert box.layout.width == "auto"
    quant_type, double_quant = common.quant_controls(QuantSettings(quant_type="fp4", double_quant=False))
    assert (quant_type.value, double_quant.value) == ("fp4", False)
    assert quant_type.tooltip == help_for(QuantSettings, "quant_type")


def test_quiet_is_set_inside_the_block_nests_and_is_cleared_by_an_exception():
    quiet = common.Quiet()
    assert not quiet
    with quiet():
        with quiet():
            assert quiet
        assert quiet
    assert not quiet
    with pytest.raises(RuntimeError), quiet():
        raise RuntimeError("a panel's update failed")
    assert not quiet


def test_verdicts_and_the_plan_as_html():
    assert common.verdicts_html([]) == ""
    html = common.verdicts_html(["lora <beats> base"], what="over 2 seeds")
    assert "Is the difference real?" in html and "(over 2 seeds)" in html and "lora &lt;beats&gt; base" in html
    assert common.plan_html("") == ""
    plan = common.plan_html("eval: 60 examples; --eval-examples sets how many")
    assert "the Train tab&#x27;s Eval examples sets how many" in plan and "wb-eval-plan" in plan  # escaped
