import dataclasses

import pytest

from workbench.core.config import (
    DEFAULT_MODEL,
    VARIANTS,
    LoraSettings,
    ModelSettings,
    QuantSettings,
    RunConfig,
    TrainSettings,
    help_for,
    parse_targets,
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
    import torch

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
