"""Where a study lives (experiments.study.storage): storages open, bad ones say what to do."""

from __future__ import annotations

import pytest

from workbench.experiments.study.storage import dashboard_command, open_storage


def test_storages_open_and_bad_ones_say_what_to_do(tmp_path):
    assert open_storage(f"journal:{tmp_path / 'j' / 'study.log'}") is not None
    assert dashboard_command(f"journal:{tmp_path}/s.log") == f"optuna-dashboard {tmp_path}/s.log"
    assert "***" in dashboard_command("postgresql://me:secret@db:5432/sweeps")
    with pytest.raises(ValueError, match="cannot open .*me:\\*\\*\\*@127.0.0.1.*check the URL"):
        open_storage("postgresql://me:secret@127.0.0.1:1/nothing")  # nothing listens on port 1
    with pytest.raises(ValueError, match="needs the Python package"):
        open_storage("mysql://me@127.0.0.1/nothing")
