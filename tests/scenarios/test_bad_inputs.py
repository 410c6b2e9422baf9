"""Every bad input of tests/bad_inputs.py, tried for real through the CLI (in-process, so all of them take
seconds): exit status 2, one error line that names the field or file, no traceback, and no weights loaded.

Before the error line a command may have printed "[workbench] ..." lines about the work it began (resolving
the model folder, say), as it does when the input is good; argparse's own errors are one line as well (the
CLI's parser prints no usage block).
"""

from __future__ import annotations

import pytest
from scenarios.support.bad_inputs import CASES, run, unmet


def _param(case):
    marks = [pytest.mark.xfail(reason=case.known, strict=True)] if case.known else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_table_is_big_enough_and_its_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(case, tiny_model_dir, tmp_path):
    why = unmet(case)
    if why:
        pytest.skip(why)
    got = run(case, tmp_path / "case", tiny_model_dir)
    assert "Traceback" not in got.err + got.out, got.err
    assert not got.loaded, "weights were loaded before the input was refused"
    assert got.code == 2, got.err
    assert len(got.errors) == 1, got.err
    line = got.errors[0]
    assert line == got.lines[-1] and line.startswith("workbench: error: "), got.err
    assert case.names in line, f"the message does not name {case.names!r}: {line}"
    assert got.out == ""
