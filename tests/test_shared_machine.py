"""One machine shared: login names that go into folder names."""

from __future__ import annotations

import pytest

from workbench import runs

# ---------------------------------------------------------------------------- the login name


@pytest.mark.parametrize(
    "login, user",
    [
        ("ada", "ada"),
        ("ann/../etc", "ann_.._etc"),  # a slash would make the run folder two folders (or escape the runs folder)
        ("x" * 60, "x" * 40),  # check_user's limit
        ("jo@example.com", "jo_example.com"),
        ("  spaced   name ", "spaced name"),
        ("", "someone"),
        ("///", "___"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_the_login_name_default_is_a_name_check_user_accepts(monkeypatch, login, user):
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: login)
    assert runs.default_user() == user and runs.check_user(user) == user
    assert "/" not in runs.user_slug(runs.default_user())


def test_workbench_user_is_mended_the_same_way(monkeypatch):
    monkeypatch.setenv("WORKBENCH_USER", "Ms <b>Jones</b>")
    assert runs.default_user() == "Ms _b_Jones__b_"
    monkeypatch.setenv("WORKBENCH_USER", "Grace Hopper")
    assert runs.default_user() == "Grace Hopper"
