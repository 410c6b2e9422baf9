"""The Setup tab (ui.setup): an uploaded file becomes the data (a bad one is refused), column maps, an unknown
model or device explained, the eval split counted and previewed, the model box wide enough."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from helpers import tiny_config

from workbench.ui import SetupPanel, Workbench


def upload(panel: SetupPanel, name: str, content: bytes) -> None:
    panel.upload.value = (
        {
            "name": name,
            "type": "",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.now(timezone.utc),
        },
    )


def test_uploaded_file_becomes_the_data_and_a_bad_one_is_refused(app, tiny_jsonl):
    setup = app.setup
    upload(setup, "mine.jsonl", tiny_jsonl.read_bytes())
    saved = app.state.runs_dir / "uploads" / "mine.jsonl"
    assert app.config.data == str(saved) and app.config.task is None
    assert saved.read_bytes() == tiny_jsonl.read_bytes()
    assert "training and 3 held-out examples" in setup.data_info.value
    upload(setup, "bad.jsonl", b'{"prompt": "hello"}\n')
    assert "bad.jsonl" in setup.data_info.value and "wb-error" in setup.data_info.value
    assert app.config.data == str(saved)  # the good file stays in use
    setup.task.value = "sentiment"
    assert app.config.task == "sentiment" and app.config.data is None


def test_column_map_applies_to_an_uploaded_csv(app):
    setup = app.setup
    rows = "question,label\n" + "".join(f"Review: word{i},{'yes' if i % 2 else 'no'}\n" for i in range(20))
    upload(setup, "own.csv", rows.encode())
    assert "wb-error" in setup.data_info.value and "columns" in setup.data_info.value.lower()
    setup.columns.value = "prompt=question,answer=label"
    assert app.config.data.endswith("own.csv") and app.config.columns == "prompt=question,answer=label"


def test_unknown_model_is_explained_and_nothing_changes(app, tmp_path):
    before = app.config.model.name
    app.setup.model.value = str(tmp_path / "no-such-model")
    assert "wb-error" in app.setup.model_info.value and "no-such-model" in app.setup.model_info.value
    assert app.config.model.name == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_refused(app):
    app.setup.device.value = "cuda"
    assert "no CUDA GPU is visible" in app.setup.device_info.value
    assert app.setup.device.value == app.config.model.device == "cpu"


def test_setup_counts_and_previews_the_eval_split_the_run_uses(tiny_model_dir, tiny_jsonl, tmp_path):
    """With a separate eval file, the Setup tab shows that file's examples (as the run scores them), not a
    held-out share of the training data."""
    eval_file = tmp_path / "held_out.jsonl"
    eval_file.write_text("".join(tiny_jsonl.read_text().splitlines(keepends=True)[:5]))
    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=6, warmup_steps=1, lr=5e-3)
    cfg.eval_data = str(eval_file)
    wb = Workbench(cfg, runs_dir=tmp_path / "runs")
    assert "20 training and 5 held-out examples" in wb.setup.data_info.value, wb.setup.data_info.value
    wb.setup.preview()
    assert wb.wait(30)
    assert "train 20 examples, eval 5 examples" in wb.setup.preview_out.value, wb.setup.preview_out.value


def test_preview_shows_templated_examples(app):
    app.setup.preview()
    assert app.wait(30)
    assert "<pre" in app.setup.preview_out.value and "tokens" in app.setup.preview_out.value


def test_the_model_box_fits_the_default_name(app):
    from workbench.core.config import DEFAULT_MODEL
    from workbench.ui.common import STYLE

    label = int(STYLE["description_width"].removesuffix("px"))
    # 8 px a character is the upper end of JupyterLab's 13 px UI font; 24 px for the box's padding
    assert int(app.setup.model.layout.width.removesuffix("px")) >= label + 8 * len(DEFAULT_MODEL) + 24
