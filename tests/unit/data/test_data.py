"""The data package re-exports its modules' public names (`from workbench.data import load_data_task` keeps
working), each the module's own object."""

from __future__ import annotations

from workbench import data


def test_builtin_tasks_include_sentiment():
    assert "sentiment" in data.builtin_tasks()


def test_every_name_is_its_modules_own_object():
    from workbench.core import paths
    from workbench.data import formats, scoring, tasks, tokens

    modules = {m.__name__: m for m in (formats, scoring, tasks, tokens, paths)}
    for name in data.__all__:
        obj = getattr(data, name)
        home = getattr(obj, "__module__", None)  # a function's or a class's; a constant has none
        if home is not None:
            assert home in modules and getattr(modules[home], name) is obj, name
        else:
            assert any(getattr(m, name, None) is obj for m in modules.values()), name


def test_star_imports_every_name_and_only_those():
    namespace: dict = {}
    exec("from workbench.data import *", namespace)  # noqa: S102 - what a notebook may do
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(data.__all__)
    assert len(data.__all__) == len(set(data.__all__))
