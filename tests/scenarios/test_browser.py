"""The workbench in a real JupyterLab, driven in headless Chromium the way a person uses it.

The stages (tests/lab_browser.py): open the quickstart and run it, change the rank and the bits,
press Start and watch the progress bar and the loss plot move, type a prompt and Generate three
answers side by side, Evaluate and read the verdicts, open the results chart (and its error bars'
caption) and both explainers (with an init chosen in the Adapter tab, the whole model's gap before training and
the init's step 0), run a two-point sweep, and restart the
kernel to see the Run picker show the run it answers with. Any error shown in the notebook, in a panel or in
the browser console fails the stage it happened in. Screenshots of each stage are kept in the
test's tmp folder (and `make screenshots` refreshes the docs' with a real run).
"""

from __future__ import annotations

import pytest
from helpers import require_chromium
from scenarios.support import lab_browser


@pytest.mark.browser
@pytest.mark.e2e
def test_the_app_works_in_jupyterlab_in_chromium(tmp_path, embedded_dir):
    require_chromium()
    shots = tmp_path / "shots"
    seen = lab_browser.run(shots, fast=True, timeout_s=600)
    assert len(seen["answers"]) == 3 and all(a.strip() for a in seen["answers"]), seen["answers"]
    assert not seen["console_errors"], seen["console_errors"]
    # after Evaluate the Compare tab says whether each difference is real: base against each adapter, LoRA
    # against QLoRA, on accuracy and eval loss (the fast setting's 6 examples)
    assert len(seen["verdicts"]) == 6, seen["verdicts"]
    assert any("chance" in v or "exactly the same" in v for v in seen["verdicts"]), seen["verdicts"]
    # the Results chart's error bars, said under it: every variant of the one run has its interval
    assert "error bars: 95% intervals (3 of 3 points have one)" in seen["caption"], seen["caption"]
    # an init set in the Adapter tab shows in the Quantization tab: its step-0 rows beside the four 4-bit formats
    gap = seen["gap_table"]
    assert gap.count("with olora at step 0") == 4 and "8-bit LLM.int8" in gap and "%" in gap, gap
    names = sorted(p.name for p in shots.glob("*.png"))
    assert names == [
        "01-setup.png",
        "02-adapter.png",
        "03-train.png",
        "04-compare.png",
        "05-results.png",
        "06-lora-explained.png",
        "07-quant-explained.png",
        "08-sweep.png",
    ]
    assert all((shots / n).stat().st_size > 10_000 for n in names)  # real pictures, not blank pages
