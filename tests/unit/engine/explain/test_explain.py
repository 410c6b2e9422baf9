"""The explain package (engine/explain/__init__.py) re-exports the explainers' public names, so
`explain.read_adapter`, `explain.quant_table` and `explain.measure_gap` work: each name is the module's own object,
and every public name of the three modules is there."""

from __future__ import annotations

from workbench.engine import explain
from workbench.engine.explain import gap, lora, quant


def public(module) -> set[str]:
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
    }


def test_every_name_is_the_modules_own_object():
    for name in explain.__all__:
        home = next(m for m in (lora, quant, gap) if hasattr(m, name))
        assert getattr(explain, name) is getattr(home, name), name


def test_every_public_function_and_class_of_the_modules_is_exported():
    assert public(lora) | public(quant) | public(gap) <= set(explain.__all__)
    assert len(explain.__all__) == len(set(explain.__all__))
