"""Property-based tests of the settings: whatever a user, a panel or a damaged config file hands them, each
settings dataclass and RunConfig.from_dict either accepts it, as a value that works later, or refuses it
with a one-line ValueError; never another exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tempfile
import types
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from workbench.core import config

# hypothesis keeps examples and caches under ./.hypothesis; nothing may be written into the checkout
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="workbench-hypothesis-"))

# every settings dataclass of the module, found by inspection so that a new one is covered without a test
# edit; Variant is a row of the built-in table, never user input
SETTINGS = [
    obj
    for obj in vars(config).values()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == config.__name__
]
SETTINGS = [cls for cls in SETTINGS if cls is not config.Variant]
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# values a new user (or a half-edited JSON file) could give any field: right and wrong types, the bounds,
# the awkward floats and ints, and the names the fields do accept
PLAUSIBLE = st.sampled_from(
    [0, 1, -1, 2, 4, 8, 16, 64, 60, 128, 2**32 - 1, 2**32, 2**64, 10**30, 10**400, 0.0, -0.0, 0.05, 0.15, 0.5,
     0.999, 1.0, 2e-3, 1e-320, 1e308, math.nan, math.inf, -math.inf, True, False, None, "", " ", "0", "8",
     "nan", "auto", "cpu", "cuda", "float32", "bfloat16", "nf4", "fp4", "all-linear", "q_proj,v_proj",
     "q_proj", "base", "lora", "lora8", "qlora", "base,lora", "sentiment", "dates", "data.jsonl",
     "prompt=question", config.DEFAULT_MODEL, ["q_proj", "v_proj"], ["base", "qlora"], ["lora"], [], {},
     ["all-linear"], [1, 2], [["q_proj"]], [None], {"prompt": "q"}, {"a": 1}, b"bytes", (4,)]
)  # fmt: skip
JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
VALUES = PLAUSIBLE | JUNK


def _typed(hint) -> st.SearchStrategy:
    """Values of a field's own type, often in range, so that many draws are accepted and then used."""
    if dataclasses.is_dataclass(hint):
        return st.builds(hint)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out = []
    for h in options:
        if h is bool:
            out.append(st.booleans())
        elif h is int:
            out.append(st.integers(min_value=-2, max_value=300))
        elif h is float:
            out.append(st.floats(min_value=-0.2, max_value=1.2))
        elif h is str or typing.get_origin(h) is list:
            out.append(PLAUSIBLE.filter(lambda v: isinstance(v, (str, list))))
        elif h is type(None):
            out.append(st.none())
    return st.one_of(out) if out else VALUES


def _kwargs(cls) -> st.SearchStrategy[dict]:
    """Any subset of cls's fields, each with any value."""
    hints = typing.get_type_hints(cls)
    return st.fixed_dictionaries({}, optional={f.name: _value(f, hints[f.name]) for f in dataclasses.fields(cls)})


def _value(f: dataclasses.Field, hint) -> st.SearchStrategy:
    """One field's value: its default, one of its own type or anything at all, in equal shares."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return st.one_of(st.just(default), _typed(hint), VALUES)


def _conforms(value, hint) -> bool:
    """Whether a value has its field's annotated type (bool is not an int here: True is no rank)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if hint is typing.Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a fine float, but it must be a finite one
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _check_usable(obj) -> None:
    """What an accepted value must survive later, when it is used."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        assert _conforms(value, hints[f.name]), f"{type(obj).__name__}.{f.name} accepted {value!r}"
    if isinstance(obj, config.TrainSettings):
        import torch

        torch.Generator().manual_seed(obj.seed)  # refuses seeds past 2**64 (numpy past 2**32)
        random.Random(obj.seed)
    if isinstance(obj, config.LoraSettings):
        obj.to_lora_config()
    if isinstance(obj, config.QuantSettings):
        obj.to_bnb_config()
    if isinstance(obj, config.RunConfig):
        for part in (obj.model, obj.lora, obj.quant, obj.train):
            _check_usable(part)
        # a run folder keeps its config as JSON, and reads it back as the same config
        back = config.RunConfig.from_dict(json.loads(json.dumps(obj.to_dict(), allow_nan=False)))
        assert back == obj


def _accepted_or_value_error(make) -> None:
    try:
        obj = make()
    except ValueError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
        return
    _check_usable(obj)


def test_every_settings_dataclass_is_found():
    names = {cls.__name__ for cls in SETTINGS}
    assert {"ModelSettings", "LoraSettings", "QuantSettings", "TrainSettings", "RunConfig"} <= names


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_settings_accept_or_refuse_with_value_error(cls, data):
    kwargs = data.draw(_kwargs(cls))
    _accepted_or_value_error(lambda: cls(**kwargs))


def _section(cls) -> st.SearchStrategy:
    """A config file's section: cls's fields plus a stray key or two, with any values; or not a dict at all."""
    stray = st.dictionaries(st.sampled_from(["rnak", "extra"]) | st.text(max_size=5), VALUES, max_size=2)
    return _kwargs(cls) | _kwargs(cls) | st.builds(lambda a, b: {**a, **b}, _kwargs(cls), stray) | VALUES


SECTIONS = {"model": config.ModelSettings, "lora": config.LoraSettings, "quant": config.QuantSettings}
SECTIONS["train"] = config.TrainSettings
TOP_HINTS = typing.get_type_hints(config.RunConfig)
TOP_FIELDS = [f for f in dataclasses.fields(config.RunConfig) if f.name not in SECTIONS]
CONFIG_DICTS = st.fixed_dictionaries(
    {},
    optional={
        **{f.name: _value(f, TOP_HINTS[f.name]) for f in TOP_FIELDS},
        **{k: _section(cls) for k, cls in SECTIONS.items()},
        "unknown_key": VALUES,
    },
)


@FAST
@given(d=CONFIG_DICTS)
def test_from_dict_accepts_or_refuses_with_value_error(d):
    _accepted_or_value_error(lambda: config.RunConfig.from_dict(d))


@FAST
@given(d=VALUES)
def test_from_dict_of_something_that_is_no_dict(d):
    _accepted_or_value_error(lambda: config.RunConfig.from_dict(d))


@FAST
@given(name=VALUES | st.sampled_from([None, "cpu-demo", "quickstart"]), overrides=VALUES | CONFIG_DICTS)
def test_preset_config_accepts_or_refuses_with_value_error(name, overrides):
    _accepted_or_value_error(lambda: config.preset_config(name, overrides))


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (config.QuantSettings, {"bits": 16.0}),  # `16.0 in (16, 8, 4)` is true
        (config.QuantSettings, {"double_quant": "no"}),  # a truthy string: double quantization on
        (config.LoraSettings, {"use_rslora": "false"}),
        (config.LoraSettings, {"target_modules": 5}),
        (config.LoraSettings, {"target_modules": ["q_proj", 7]}),
        (config.TrainSettings, {"seed": 2**64}),  # torch.manual_seed overflows after the weights load
        (config.TrainSettings, {"gradient_checkpointing": 1}),
        (config.LoraSettings, {"alpha": 10**400}),  # math.isfinite raised OverflowError
        (config.RunConfig, {"variants": [["lora"]]}),  # unhashable: TypeError
        (config.RunConfig, {"task": 5}),
        (config.RunConfig, {"data": ""}),
        (config.RunConfig, {"skip_bad_rows": "yes"}),
        (config.RunConfig, {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}),
    ],
)
def test_values_that_would_break_later_are_refused_now(cls, kwargs):
    # each was accepted (or raised something other than ValueError) before; the property tests may not draw it
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    name = next(iter(kwargs))
    assert {"target_modules": "targets"}.get(name, name) in str(info.value)


@pytest.mark.parametrize(
    "d, key",
    [
        ({"lora": {"rnak": 8}}, "rnak"),  # a typo was a TypeError
        ({"stpes": 3}, "stpes"),  # and at the top level it was silently ignored
        ({"train": 3}, "train"),
        ({"model": None}, "model"),
    ],
)
def test_from_dict_names_the_key_it_refuses(d, key):
    with pytest.raises(ValueError, match=key):
        config.RunConfig.from_dict(d)


def test_a_path_as_data_is_kept_as_text():
    from pathlib import Path

    cfg = config.RunConfig(task=None, data=Path("my data.jsonl"), eval_data=Path("eval.jsonl"))
    assert cfg.data == "my data.jsonl" and cfg.eval_data == "eval.jsonl"
    json.dumps(cfg.to_dict())
