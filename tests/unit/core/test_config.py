"""Settings (core.config): defaults valid, bad values refused with a ValueError naming the field, the variant table,
presets and their eval size, help for every field; and, property-based (hypothesis), whatever a user, a panel or a
damaged config file hands a settings dataclass, from_dict or preset_config is accepted or refused with a
ValueError, never another exception."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.core import config
from workbench.core.config import (
    DEFAULT_MODEL,
    PRESETS,
    VARIANTS,
    LoraSettings,
    ModelSettings,
    QuantSettings,
    RunConfig,
    TrainSettings,
    help_for,
    parse_targets,
    preset_config,
)


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.model.name == DEFAULT_MODEL
    assert cfg.model.device == "auto"
    assert cfg.lora.rank == 8 and cfg.lora.target_modules == "all-linear"
    assert cfg.quant.bits == 4 and cfg.quant.quant_type == "nf4" and cfg.quant.double_quant
    assert cfg.train.steps >= 1 and 0 < cfg.train.lr <= 1
    assert cfg.variants == ["base", "lora", "qlora"]
    assert cfg.task == "sentiment" and cfg.data is None


@pytest.mark.parametrize(
    "make, field_name",
    [
        (lambda: LoraSettings(rank=0), "rank"),
        (lambda: LoraSettings(rank=-3), "rank"),
        (lambda: LoraSettings(rank=2.5), "rank"),
        (lambda: LoraSettings(rank=True), "rank"),
        (lambda: LoraSettings(alpha=0), "alpha"),
        (lambda: LoraSettings(dropout=1.5), "dropout"),
        (lambda: LoraSettings(dropout=1.0), "dropout"),
        (lambda: LoraSettings(dropout=-0.1), "dropout"),
        (lambda: LoraSettings(target_modules=""), "targets"),
        (lambda: LoraSettings(target_modules=[]), "targets"),
        (lambda: LoraSettings(target_modules=" , ,"), "targets"),
        (lambda: LoraSettings(target_modules=["all-linear", "q_proj"]), "targets"),
        (lambda: QuantSettings(bits=5), "bits"),
        (lambda: QuantSettings(bits=32), "bits"),
        (lambda: QuantSettings(quant_type="int3"), "quant_type"),
        (lambda: QuantSettings(compute_dtype="float64"), "compute_dtype"),
        (lambda: ModelSettings(device="tpu"), "device"),
        (lambda: ModelSettings(name="  "), "model"),
        (lambda: TrainSettings(steps=0), "steps"),
        (lambda: TrainSettings(steps=-1), "steps"),
        (lambda: TrainSettings(lr=0), "lr"),
        (lambda: TrainSettings(lr=2.0), "lr"),
        (lambda: TrainSettings(batch_size=0), "batch_size"),
        (lambda: TrainSettings(seq_len=4), "seq_len"),
        (lambda: TrainSettings(grad_accum=0), "grad_accum"),
        (lambda: TrainSettings(warmup_steps=-1), "warmup_steps"),
        (lambda: TrainSettings(seed=-1), "seed"),
        (lambda: TrainSettings(eval_examples=-1), "eval_examples"),
        (lambda: RunConfig(variants=["foo"]), "variants"),
        (lambda: RunConfig(variants="base,foo"), "variants"),
        (lambda: RunConfig(variants=[]), "variants"),
        (lambda: RunConfig(variants=["lora", "lora"]), "variants"),
        (lambda: RunConfig(task=None, data=None), "task"),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(make, field_name):
    with pytest.raises(ValueError) as info:
        make()
    assert field_name in str(info.value)
    assert "\n" not in str(info.value)  # one line, as the CLI prints it


def test_duplicate_variants_message():
    with pytest.raises(ValueError, match="variants: each variant may be listed once"):
        RunConfig(variants="lora,qlora,lora")


def test_unknown_variant_message_lists_choices():
    with pytest.raises(ValueError) as info:
        RunConfig(variants=["foo"])
    for name in VARIANTS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("q_proj, v_proj", ["q_proj", "v_proj"]),
        ("q_proj,v_proj,", ["q_proj", "v_proj"]),
        (" q_proj ", ["q_proj"]),
        (["k_proj", " o_proj "], ["k_proj", "o_proj"]),
        ("all-linear", "all-linear"),
        (" all-linear ", "all-linear"),
        (["all-linear"], "all-linear"),
    ],
)
def test_parse_targets(value, expected):
    assert parse_targets(value) == expected
    assert LoraSettings(target_modules=value).target_modules == expected


def test_variants_string_is_parsed_and_put_in_canonical_order():
    cfg = RunConfig(variants="qlora, base ,lora8")
    assert cfg.variants == ["base", "lora8", "qlora"]


def test_valid_edges_are_accepted():
    LoraSettings(rank=1, dropout=0.0, alpha=0.5)
    QuantSettings(bits=8)
    QuantSettings(bits=16, quant_type="fp4", double_quant=False, compute_dtype="bfloat16")
    TrainSettings(steps=1, lr=1.0, seq_len=8, warmup_steps=0, seed=0)
    RunConfig(task=None, data="some.jsonl")


def test_run_config_round_trips_through_dict():
    cfg = RunConfig(
        model=ModelSettings(name="/some/folder", device="cpu"),
        lora=LoraSettings(rank=4, alpha=8.0, dropout=0.0, target_modules="q_proj,v_proj", use_rslora=True),
        quant=QuantSettings(bits=4, quant_type="fp4", double_quant=False, compute_dtype="float32"),
        train=TrainSettings(
            steps=7,
            lr=1e-3,
            batch_size=2,
            seq_len=32,
            grad_accum=2,
            warmup_steps=1,
            seed=3,
            gradient_checkpointing=True,
            eval_examples=5,
        ),
        task=None,
        data="x.jsonl",
        variants=["lora", "base"],
    )
    d = cfg.to_dict()
    assert d["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert d["variants"] == ["base", "lora"]
    back = RunConfig.from_dict(d)
    assert back == cfg
    assert back.to_dict() == d
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_from_dict_defaults_quant_to_four_bits():
    assert RunConfig.from_dict({}).quant.bits == 4


def test_from_dict_validates():
    with pytest.raises(ValueError, match="rank"):
        RunConfig.from_dict({"lora": {"rank": 0}})


@pytest.mark.parametrize("cls", [ModelSettings, LoraSettings, QuantSettings, TrainSettings, RunConfig])
def test_every_field_has_help(cls):
    # RunConfig's model/lora/train are sections (their own fields carry the help); the rest need help
    fields = [f for f in dataclasses.fields(cls) if not (cls is RunConfig and f.name in ("model", "lora", "train"))]
    assert fields
    for f in fields:
        text = help_for(cls, f.name)
        assert isinstance(text, str) and len(text.strip()) > 10, f"{cls.__name__}.{f.name} has no help"


def test_help_for_unknown_field_raises():
    with pytest.raises(KeyError):
        help_for(LoraSettings, "nope")


def test_bnb_configs():

    assert QuantSettings(bits=16).to_bnb_config() is None
    assert QuantSettings(bits=8).to_bnb_config().load_in_8bit
    c4 = QuantSettings(bits=4, quant_type="fp4", double_quant=False).to_bnb_config(default_dtype=torch.bfloat16)
    assert c4.load_in_4bit and c4.bnb_4bit_quant_type == "fp4" and not c4.bnb_4bit_use_double_quant
    assert c4.bnb_4bit_compute_dtype == torch.bfloat16
    c4 = QuantSettings(bits=4, compute_dtype="float16").to_bnb_config(default_dtype=torch.bfloat16)
    assert c4.bnb_4bit_compute_dtype == torch.float16 and c4.bnb_4bit_use_double_quant


def test_to_lora_config():
    lc = LoraSettings(rank=4, alpha=8.0, dropout=0.1, target_modules="q_proj,v_proj").to_lora_config()
    assert lc.r == 4 and lc.lora_alpha == 8.0 and lc.lora_dropout == 0.1
    assert set(lc.target_modules) == {"q_proj", "v_proj"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_learning_rate_that_is_not_a_finite_number_is_refused(value):
    from workbench.core.config import LoraSettings, TrainSettings

    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrainSettings(lr=value)
    with pytest.raises(ValueError, match="dropout must be a finite number"):
        LoraSettings(dropout=value)


def test_preset_config():
    cfg = preset_config("cpu-demo", {"train": {"steps": 3}, "variants": "lora"})
    assert cfg.train.steps == 3 and cfg.train.batch_size == PRESETS["cpu-demo"]["train"]["batch_size"]
    assert cfg.model.device == "cpu" and cfg.variants == ["lora"]
    assert PRESETS["cpu-demo"]["train"]["steps"] == 20  # the preset itself is not modified
    assert preset_config(None) == RunConfig()
    with pytest.raises(ValueError, match="preset"):
        preset_config("nope")


def test_a_presets_eval_size_is_marked_as_the_presets_and_one_given_is_the_users():
    cfg = preset_config("cpu-demo")
    assert cfg.train.eval_examples == 60 and cfg.train.eval_examples_from_preset
    assert cfg.to_dict()["train"]["preset_eval_examples"] == 60
    assert "preset_eval_examples" not in PRESETS["cpu-demo"]["train"]  # the preset itself is not modified
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # kept through a config file and the panels' updates
    typed = preset_config("cpu-demo", {"train": {"eval_examples": 60}})  # the preset's own number, typed
    assert typed.train.eval_examples == 60 and not typed.train.eval_examples_from_preset
    moved = cfg.to_dict()
    moved["train"]["eval_examples"] = 30  # a panel's box moved off the preset's number: the user's now
    assert not RunConfig.from_dict(moved).train.eval_examples_from_preset
    # a config without the mark (its own, or written before there was one) keeps the keys it had
    assert "preset_eval_examples" not in typed.to_dict()["train"]
    assert "preset_eval_examples" not in RunConfig().to_dict()["train"]
    assert not preset_config(None).train.eval_examples_from_preset


def test_adapt_experts_is_a_checked_setting():
    from workbench.core.config import help_for

    with pytest.raises(ValueError, match="adapt_experts must be true or false; got 'no'"):
        LoraSettings(adapt_experts="no")
    assert "router is never adapted" in help_for(LoraSettings, "adapt_experts")
    with pytest.raises(ValueError, match="use_dora: peft cannot put DoRA on expert weights"):
        LoraSettings(use_dora=True).to_lora_config(target_parameters=["model.layers.0.mlp.experts.down_proj"])
    assert LoraSettings(dropout=0.1).to_lora_config(["x.experts.down_proj"]).lora_dropout == 0.0
    assert LoraSettings(dropout=0.1).to_lora_config().lora_dropout == 0.1


# every settings dataclass of the module, found by inspection so that a new one is covered without a test
# edit; Variant is a row of the built-in table, never user input
SETTINGS = [
    obj
    for obj in vars(config).values()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == config.__name__
]
SETTINGS = [cls for cls in SETTINGS if cls not in (config.Variant, config.Init)]  # tables, not settings
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# values a new user (or a half-edited JSON file) could give any field: right and wrong types, the bounds,
# the awkward floats and ints, and the names the fields do accept
PLAUSIBLE = st.sampled_from(
    [0, 1, -1, 2, 4, 8, 16, 64, 60, 128, 2**32 - 1, 2**32, 2**64, 10**30, 10**400, 0.0, -0.0, 0.05, 0.15, 0.5,
     0.999, 1.0, 2e-3, 1e-320, 1e308, math.nan, math.inf, -math.inf, True, False, None, "", " ", "0", "8",
     "nan", "auto", "cpu", "cuda", "float32", "bfloat16", "nf4", "fp4", "all-linear", "q_proj,v_proj",
     "q_proj", "base", "lora", "lora8", "qlora", "base,lora", "sentiment", "dates", "data.jsonl",
     "prompt=question", "gaussian", "loftq", "pissa", "olora", "eva", config.DEFAULT_MODEL,
     ["q_proj", "v_proj"], ["base", "qlora"], ["lora"], [], {},
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
