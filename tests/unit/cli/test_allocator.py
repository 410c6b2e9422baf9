"""`python -m workbench.cli.allocator` (cli/allocator.py): prints the LD_PRELOAD a new process should start with,
what `make lab` and `make app` put in front of the server."""

from __future__ import annotations

import runpy

from workbench.machine import allocator


def test_it_prints_the_preload_the_machine_module_chooses(capsys):
    runpy.run_module("workbench.cli.allocator", run_name="__main__")
    assert capsys.readouterr().out == allocator.preload_env().get("LD_PRELOAD", "") + "\n"


def test_a_fast_allocator_that_is_installed_is_what_it_prints(capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_ALLOCATOR", "auto")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator, "fast_path", lambda: "/opt/lib/libmimalloc.so")
    runpy.run_module("workbench.cli.allocator", run_name="__main__")
    assert "/opt/lib/libmimalloc.so" in capsys.readouterr().out


def test_imported_it_prints_nothing(capsys):
    runpy.run_module("workbench.cli.allocator", run_name="workbench.cli.allocator")
    assert capsys.readouterr().out == ""
