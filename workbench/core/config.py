"""Settings for a workbench run, as small dataclasses that validate themselves.

Each field carries one line of help text in ``metadata["help"]`` (the way peft's
``LoraConfig`` does); the CLI and the panels reuse it, so it is written once, here.
Errors a user can cause are ``ValueError``s whose message names the field and says
what to do.

Long because: every field is checked here, beside its help text (type, range, names, and the keys of a
config file), and this module is the ground floor of the layers, so the checks cannot move to one it imports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from reprlib import repr as shown  # a value in a message, cut short: it must not flood the one line
from typing import Any

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Variant:
    """One thing a run can compare: a base precision with or without a trained adapter."""

    name: str
    bits: int  # of the frozen base under the adapter
    trained: bool  # False: the model as it is (the adapter switched off)
    label: str  # a checkbox: "4-bit QLoRA"
    title: str  # a column or table heading: "QLoRA (4-bit base)"
    short: str  # a button: "QLoRA"
    help: str

    def title_for(self, dtype: str | None = None) -> str:
        """The title with the unquantized base's true width: "LoRA (16-bit base)" reads "LoRA (32-bit base)"
        where the base is float32 (a CPU without native bfloat16)."""
        return self.title.replace("16-bit", "32-bit") if self.bits == 16 and dtype == "float32" else self.title

    def label_for(self, dtype: str | None = None) -> str:
        """The checkbox label, likewise."""
        return self.label.replace("16-bit", "32-bit") if self.bits == 16 and dtype == "float32" else self.label


# the one table of variants every panel, the CLI and the runs read; its order is the teaching order
VARIANT_TABLE = (
    Variant(
        "base",
        16,
        False,
        "base (no adapter)",
        "Base model",
        "base",
        "the model as it is, no adapter (answers come from the LoRA model with its adapter disabled)",
    ),
    Variant(
        "lora",
        16,
        True,
        "16-bit LoRA",
        "LoRA (16-bit base)",
        "LoRA",
        "LoRA on the unquantized base: bfloat16 on a CPU that multiplies it natively, else float32; bfloat16 or "
        "float16 on a GPU",
    ),
    Variant(
        "lora8", 8, True, "8-bit LoRA (LLM.int8)", "LoRA (8-bit base)", "LoRA 8-bit", "LoRA on an 8-bit LLM.int8 base"
    ),
    Variant("qlora", 4, True, "4-bit QLoRA", "QLoRA (4-bit base)", "QLoRA", "LoRA on a 4-bit base (QLoRA)"),
)
VARIANTS: dict[str, Variant] = {v.name: v for v in VARIANT_TABLE}
TRAINED_VARIANTS = [v.name for v in VARIANT_TABLE if v.trained]


QUANT_TYPES = ("nf4", "fp4")  # bitsandbytes' 4-bit types


@dataclass(frozen=True)
class Init:
    """One way an adapter can start: its name, the base widths it works on, and one line on what it does and costs."""

    name: str
    bits: tuple[int, ...]  # the base widths it is defined for
    changes_base: bool  # True: the base under the adapter is W minus the adapter's start (the export converts it)
    help: str


# the one table of initialisations; the Adapter tab, the CLI, a sweep's axis and a search's space read it
INIT_TABLE = (
    Init("gaussian", (16, 8, 4), False, "peft's default: A random, B zero, so the model starts exactly as the base"),
    Init(
        "loftq",
        (4,),
        True,
        "LoftQ: the adapter starts as the best rank-r fix of the 4-bit rounding error, re-quantizing the rest "
        "loftq_iter times; one SVD per layer per iteration, 4-bit bases only",
    ),
    Init(
        "pissa",
        (16, 4),
        True,
        "PiSSA (QPiSSA at 4 bits): the adapter holds each layer's top-r singular directions and only the rest is "
        "quantized; one fast SVD per layer (pissa_niter iterations)",
    ),
    Init(
        "olora",
        (16, 4),
        True,
        "OLoRA: the adapter starts from the first r columns of each layer's QR factors, the base holds the rest; "
        "one QR per layer",
    ),
    Init(
        "eva",
        (16, 8, 4),
        False,
        "EVA: A starts as the top directions of each layer's inputs on a few training batches, B zero; costs one "
        "forward pass per batch before training",
    ),
)
INITS: dict[str, Init] = {i.name: i for i in INIT_TABLE}


def variant_for_bits(bits: int) -> str:
    """The trained variant whose base has `bits` bits: 16 -> lora, 8 -> lora8, 4 -> qlora."""
    for v in VARIANT_TABLE:
        if v.trained and v.bits == bits:
            return v.name
    raise ValueError(f"bits must be 16, 8 or 4; got {bits!r}")


DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def help_for(cls: type, name: str) -> str:
    """The help text of one field, for tooltips and --help."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):  # True is an int to Python, not a rank to a user
        raise ValueError(f"{name} must be a whole number; got {shown(value)}")
    if value < lo or (hi is not None and value > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {rng}{why}; got {shown(value)}")


def check_float(name: str, value: Any, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:  # NaN compares false with every bound and would pass them all
        raise ValueError(f"{name} must be a finite number; got {shown(value)}")
    bad = value <= lo if lo_open else value < lo
    if bad or (hi is not None and value > hi):
        lo_word = "above" if lo_open else "at least"
        rng = f"{lo_word} {lo}" + ("" if hi is None else f" and at most {hi}")
        raise ValueError(f"{name} must be {rng}; got {shown(value)}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):  # "false" and "no" are truthy strings: they would switch the setting on
        raise ValueError(f"{name} must be true or false; got {shown(value)}")


def check_choice(name: str, value: Any, choices: tuple[str, ...], listed: str | None = None) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be {listed or 'one of ' + ', '.join(choices)}; got {shown(value)}")


def _check_keys(name: str, values: Any, cls: type) -> None:
    """A dict of cls's fields; a typo such as rnak is named, not dropped or left to a TypeError."""
    if not isinstance(values, dict):
        raise ValueError(f"{name} must be a dict of settings; got {shown(values)}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ValueError(f"{name}: unknown setting {shown(unknown[0])}; known settings are {', '.join(known)}")


def _file_setting(name: str, value: Any) -> str | None:
    """A file setting as text (a Path is welcome, and kept as text so the config stays JSON)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be the path of a file; got {shown(value)}")
    return value


@dataclass
class ModelSettings:
    name: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Model to fine-tune: a local folder, a Hugging Face name, or the embedded default "
            f"({DEFAULT_MODEL}, which works offline)."
        },
    )
    device: str = field(
        default="auto", metadata={"help": "Where to run: auto (CUDA, then Apple MPS, then CPU), cpu, cuda or mps."}
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Dtype of the unquantized base and of 4-bit compute: auto (on a CPU that multiplies bfloat16 "
            "natively, avx512_bf16 or AMX, bfloat16 at 16 bits and float32 at 4 and 8; float32 on other CPUs; "
            "bfloat16 on a GPU that has it, else float16), float32, bfloat16 or float16."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"model must be a folder or a model name; got {shown(self.name)}")
        if not self.name.strip():
            raise ValueError("model must be a folder or a model name; got an empty value")
        check_choice("device", self.device, DEVICES)
        check_choice("dtype", self.dtype, DTYPES)


@dataclass
class LoraSettings:
    rank: int = field(
        default=8,
        metadata={
            "help": "LoRA rank r: the inner size of the update B·A added to each "
            "target layer. Bigger learns more and costs more."
        },
    )
    alpha: float = field(
        default=16.0, metadata={"help": "LoRA alpha: the update is scaled by alpha/r (alpha/√r with rsLoRA)."}
    )
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input during training, 0 to 1."})
    target_modules: list[str] | str = field(
        default="all-linear",
        metadata={"help": "Layers that get an adapter: module names such as q_proj,v_proj, or all-linear."},
    )
    use_rslora: bool = field(
        default=False, metadata={"help": "Rank-stabilised LoRA: scale by alpha/√r instead of alpha/r."}
    )
    use_dora: bool = field(
        default=False, metadata={"help": "DoRA: learn a magnitude per output as well as the LoRA direction (slower)."}
    )
    init: str = field(
        default="gaussian",
        metadata={
            "help": "How the adapter starts: "
            + "; ".join(f"{i.name} = {i.help}" for i in INIT_TABLE)
            + ". Which bases each works on: loftq 4-bit; pissa and olora 16- and 4-bit; gaussian and eva every base."
        },
    )
    loftq_iter: int = field(
        default=1,
        metadata={
            "help": "LoftQ only: alternating quantize/SVD steps (1 keeps the 4-bit base as loaded; more fit the "
            "rounding error closer, each another SVD per layer)."
        },
    )
    pissa_niter: int = field(
        default=4,
        metadata={
            "help": "PiSSA only: power iterations of the fast randomised SVD (peft's pissa_niter_N); 0 = the exact "
            "SVD, slower on large layers."
        },
    )
    loraplus_ratio: float = field(
        default=1.0,
        metadata={
            "help": "LoRA+: B's learning rate is this many times A's (1 = plain LoRA; the LoRA+ paper uses 16). "
            "Costs nothing."
        },
    )
    adapt_experts: bool = field(
        default=True,
        metadata={
            "help": "Mixture of experts only: also adapt the stacked expert weights (one rank-r update per expert; "
            "peft allows no dropout there, so the adapter trains with dropout 0). The router is never adapted."
        },
    )

    def __post_init__(self) -> None:
        check_int("rank", self.rank, 1)
        check_float("alpha", self.alpha, 0, lo_open=True)
        check_float("dropout", self.dropout, 0, 1)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be below 1; got {self.dropout}")
        self.target_modules = parse_targets(self.target_modules)
        _check_bool("use_rslora", self.use_rslora)
        _check_bool("use_dora", self.use_dora)
        _check_bool("adapt_experts", self.adapt_experts)
        check_choice("init", self.init, tuple(INITS))
        check_int("loftq_iter", self.loftq_iter, 1, 20)
        check_int("pissa_niter", self.pissa_niter, 0, 50)
        check_float("loraplus_ratio", self.loraplus_ratio, 0, 1000, lo_open=True)
        if self.init != "gaussian" and self.use_dora:
            raise ValueError(f"use_dora: DoRA sets its own start; turn DoRA off to use init {self.init}")

    def to_lora_config(self, target_parameters: list[str] | None = None):
        """peft's LoraConfig; target_parameters: stacked expert weights (ModelLayout.expert_targets), adapted by
        lora.ParamWrapper, which refuses any dropout, so the adapter then has none (ModelLayout says so)."""
        from peft import LoraConfig

        if target_parameters and self.use_dora:
            raise ValueError("use_dora: peft cannot put DoRA on expert weights; turn DoRA off or adapt_experts off")
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=0.0 if target_parameters else self.dropout,
            target_modules=self.target_modules,
            target_parameters=target_parameters or None,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            bias="none",
            task_type="CAUSAL_LM",
        )


def parse_targets(value: list[str] | str) -> list[str] | str:
    """'all-linear', a comma list or a list of names -> 'all-linear' or a list of names."""
    if isinstance(value, str):
        if value.strip() == "all-linear":
            return "all-linear"
        value = value.split(",")
    elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"targets must be module names such as q_proj,v_proj, or all-linear; got {shown(value)}")
    names = [v.strip() for v in value if v.strip()]
    if not names:
        raise ValueError("targets must name at least one module (for example q_proj,v_proj) or be all-linear")
    if "all-linear" in names:
        if len(names) > 1:
            raise ValueError("targets: all-linear already covers every linear layer; give it alone")
        return "all-linear"
    return names


@dataclass
class QuantSettings:
    bits: int = field(
        default=16,
        metadata={"help": "Bits of the frozen base weights: 16 (no quantization), 8 (LLM.int8) or 4 (QLoRA)."},
    )
    quant_type: str = field(
        default="nf4",
        metadata={"help": "4-bit data type: nf4 (NormalFloat, best for normally distributed weights) or fp4."},
    )
    double_quant: bool = field(
        default=True,
        metadata={"help": "Quantize the 4-bit scaling constants too (saves about 0.37 bits per parameter)."},
    )
    compute_dtype: str = field(
        default="auto",
        metadata={
            "help": "Dtype the 4-bit layers compute in: auto (the model's dtype, see ModelSettings.dtype), "
            "float32, bfloat16 or float16."
        },
    )

    def __post_init__(self) -> None:
        # 16.0 is in (16, 8, 4) too, and would be written "16.0-bit" everywhere
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits not in (16, 8, 4):
            raise ValueError(f"bits must be 16, 8 or 4; got {shown(self.bits)}")
        check_choice("quant_type", self.quant_type, QUANT_TYPES, "nf4 or fp4")
        _check_bool("double_quant", self.double_quant)
        check_choice("compute_dtype", self.compute_dtype, DTYPES, "auto, float32, bfloat16 or float16")

    def to_bnb_config(self, default_dtype=None, skip_modules: list[str] | None = None):
        """A transformers BitsAndBytesConfig for 8 or 4 bits; None at 16 bits. skip_modules: layers to keep
        unquantized (given, they replace transformers' default, so they must name the output head too)."""
        import torch
        from transformers import BitsAndBytesConfig

        if self.bits == 16:
            return None
        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
        dtype = default_dtype or torch.float32
        if self.compute_dtype != "auto":
            dtype = getattr(torch, self.compute_dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=skip_modules,
        )


@dataclass
class TrainSettings:
    steps: int = field(default=60, metadata={"help": "Optimizer steps to train for."})
    lr: float = field(
        default=2e-3,
        metadata={"help": "Peak learning rate of AdamW (LoRA tolerates higher rates than full fine-tuning)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    seq_len: int = field(default=128, metadata={"help": "Longest sequence in tokens; longer examples are cut."})
    grad_accum: int = field(
        default=1,
        metadata={
            "help": "Forward passes whose gradients add up before one optimizer step (effective batch = batch × accum)."
        },
    )
    warmup_steps: int = field(
        default=5, metadata={"help": "Steps over which the learning rate ramps up from 0, then it decays linearly."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed: the same seed gives the same losses."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass: less memory, about 30% slower."}
    )
    eval_examples: int = field(
        default=0,
        metadata={
            "help": "Held-out examples to score (0 = the whole eval split): more examples tell smaller gaps apart "
            "(60 near 80% accuracy: gaps of about 23 points; 600: about 7) and take longer to score. A preset's "
            "number is cut to what a smaller split holds, with a note; a number you give that is too large is refused."
        },
    )
    preset_eval_examples: int | None = field(
        default=None,
        metadata={
            "help": "The eval size a preset chose, not you (set by the preset; None once eval_examples is yours): "
            "while eval_examples is that number, an eval split with fewer examples is scored whole, with a note."
        },
    )

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1)
        check_float("lr", self.lr, 0, 1, lo_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("seq_len", self.seq_len, 8)
        check_int("grad_accum", self.grad_accum, 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        # torch.manual_seed overflows past 2**64 and numpy's seed past 2**32, after the weights have loaded
        check_int("seed", self.seed, 0, 2**32 - 1)
        check_int("eval_examples", self.eval_examples, 0)
        _check_bool("gradient_checkpointing", self.gradient_checkpointing)
        if self.preset_eval_examples is not None:
            check_int("preset_eval_examples", self.preset_eval_examples, 1)
            if self.preset_eval_examples != self.eval_examples:  # a size set since the preset's is the user's own
                self.preset_eval_examples = None

    @property
    def eval_examples_from_preset(self) -> bool:
        """Whether eval_examples is a preset's default, which a smaller eval split cuts (Task.eval_split), rather
        than a number the user chose, which it refuses."""
        return self.preset_eval_examples is not None


# the adapter's start settings, left out of a config's dict at these values so runs saved before them still match
LORA_START_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(LoraSettings)
    if f.name in ("init", "loftq_iter", "pissa_niter", "loraplus_ratio")
}

# RunConfig's parts, each a dict of its own in a config file
SECTIONS = {"model": ModelSettings, "lora": LoraSettings, "quant": QuantSettings, "train": TrainSettings}


@dataclass
class RunConfig:
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    quant: QuantSettings = field(
        default_factory=lambda: QuantSettings(bits=4), metadata={"help": "4-bit settings used by the qlora variant."}
    )
    train: TrainSettings = field(default_factory=TrainSettings)
    task: str | None = field(default="sentiment", metadata={"help": "Built-in task to train and score on."})
    data: str | None = field(
        default=None,
        metadata={
            "help": "Your own data instead of a built-in task: JSONL, "
            "JSON, CSV (prompt/answer, instruction/input/output "
            "or messages) or plain .txt."
        },
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "A separate file to evaluate on; without it eval_fraction of data is held out."}
    )
    eval_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of data held out for evaluation when no eval file is given (seeded, repeatable)."},
    )
    split_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the shuffle that holds out eval_fraction of your data (default: the training seed). "
            "Repeats over seeds keep the first seed's split, so every seed is scored on the same examples."
        },
    )
    columns: str | None = field(
        default=None, metadata={"help": "Map your column names, e.g. prompt=question,answer=label."}
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Skip unusable rows (empty answer, ...) and report how many, instead of stopping."},
    )
    variants: list[str] = field(
        default_factory=lambda: ["base", "lora", "qlora"],
        metadata={"help": "What to compare: " + "; ".join(f"{v.name} = {v.help}" for v in VARIANT_TABLE)},
    )

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}; got {shown(getattr(self, name))}")
        if isinstance(self.variants, str):
            self.variants = [v.strip() for v in self.variants.split(",") if v.strip()]
        if not isinstance(self.variants, (list, tuple)) or not all(isinstance(v, str) for v in self.variants):
            raise ValueError(f"variants must be a list of names such as base,lora,qlora; got {shown(self.variants)}")
        if not self.variants:
            raise ValueError("variants must name at least one of " + ", ".join(VARIANTS))
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"variants: unknown {', '.join(map(repr, bad))}; choose from {', '.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants: each variant may be listed once")
        # keep a stable, teachable order: base first, then by falling bits
        self.variants = [v for v in VARIANTS if v in self.variants]
        init = INITS[self.lora.init]
        refused = [v for v in self.variants if VARIANTS[v].trained and VARIANTS[v].bits not in init.bits]
        if refused:
            fits = [v.name for v in VARIANT_TABLE if v.trained and v.bits in init.bits]
            example = ",".join(["base", *fits])
            raise ValueError(
                f"init: {init.name} works on {' and '.join(fits)} only, not on {' or '.join(refused)}; give variants "
                f"without {' or '.join(refused)} (for example {example}) or choose another init"
            )
        if self.task is not None and not isinstance(self.task, str):
            raise ValueError(f"task must be the name of a built-in task such as sentiment; got {shown(self.task)}")
        self.data = _file_setting("data", self.data)
        self.eval_data = _file_setting("eval_data", self.eval_data)
        if self.columns is not None and not isinstance(self.columns, str):
            raise ValueError(f"columns must be text such as prompt=question,answer=label; got {shown(self.columns)}")
        _check_bool("skip_bad_rows", self.skip_bad_rows)
        if self.data is None and not self.task:
            raise ValueError("task or data: give a built-in task name or a data file")
        if self.eval_data is not None and self.data is None:
            raise ValueError("eval_data: give the training data too (data), or use a built-in task alone")
        check_float("eval_fraction", self.eval_fraction, 0, 1, lo_open=True)
        if self.eval_fraction >= 1:
            raise ValueError(f"eval_fraction must be below 1 (for example 0.15); got {self.eval_fraction}")
        if self.split_seed is not None:
            check_int("split_seed", self.split_seed, 0, 2**32 - 1)

    @property
    def held_out_seed(self) -> int:
        """The seed the held-out split of a data file is shuffled with."""
        return self.train.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["train"]["preset_eval_examples"] is None:  # unmarked configs keep their keys: saved runs still match
            del d["train"]["preset_eval_examples"]
        for name, default in LORA_START_DEFAULTS.items():  # likewise the start settings, at their defaults
            if d["lora"][name] == default:
                del d["lora"][name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """A RunConfig from a dict of its fields (a run folder's config.json, a preset, a panel's values); a
        section or key that is missing takes its default, and an unknown one is refused by name."""
        _check_keys("config", d, cls)
        parts = {}
        for name, section in SECTIONS.items():
            values = d.get(name, {"bits": 4} if name == "quant" else {})
            _check_keys(name, values, section)
            parts[name] = section(**values)
        return cls(**parts, **{k: v for k, v in d.items() if k not in SECTIONS})  # the rest: the fields' defaults


PRESETS: dict[str, dict] = {
    # All three variants on the embedded model in a few minutes on 2 CPU cores.
    "cpu-demo": {
        "model": {"device": "cpu"},
        "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": "all-linear"},
        "quant": {"bits": 4, "quant_type": "nf4", "double_quant": True},
        # 60 of the 600 held-out examples: a first run in seconds (the plan says what gaps 60 can resolve;
        # the first 60 are the ones every run before the eval splits grew was scored on)
        "train": {
            "steps": 20,
            "lr": 2e-3,
            "batch_size": 8,
            "seq_len": 64,
            "warmup_steps": 3,
            "seed": 0,
            "eval_examples": 60,
        },
        "task": "sentiment",
        "variants": ["base", "lora", "qlora"],
    }
}
# The quickstart's default: the same budget on the dates task, where scores spread (docs/guide/sweep.md: 76.7-90.0%
# over two seeds; no adapter solves it in 20 steps); sentiment, which every adapter solves, is the quick one.
PRESETS["quickstart"] = {**PRESETS["cpu-demo"], "task": "dates"}


def same_settings(d: dict) -> dict:
    """A config dict (RunConfig.to_dict, or as a run wrote it) as far as it says what a run does: without where
    a value came from (a preset's eval size marked as the preset's). What saved runs, repeats of one setting and
    a sweep's study name are matched on, so runs from before the mark match runs made since."""
    out = json.loads(json.dumps(d))
    (out.get("train") or {}).pop("preset_eval_examples", None)
    return out


def preset_config(name: str | None, overrides: dict | None = None) -> RunConfig:
    """A RunConfig from a preset (or the defaults) with nested overrides applied on top. A preset's eval size is
    marked as the preset's (TrainSettings.preset_eval_examples) unless the overrides give one."""
    if name is not None and (not isinstance(name, str) or name not in PRESETS):
        raise ValueError(f"preset: unknown {shown(name)}; choose from {', '.join(PRESETS)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a dict of settings; got {shown(overrides)}")
    merged: dict = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(name, {}).items()}
    if "eval_examples" in merged.get("train", {}):  # the preset's size, not the user's: a smaller split cuts it
        merged["train"].setdefault("preset_eval_examples", merged["train"]["eval_examples"])
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key, {}), dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    asked = (overrides or {}).get("train")
    if isinstance(asked, dict) and "eval_examples" in asked and isinstance(merged.get("train"), dict):
        if "preset_eval_examples" not in asked:  # given, even the preset's own number, it is the user's: not cut
            merged["train"].pop("preset_eval_examples", None)
    return RunConfig.from_dict(merged)
