"""What the tests share, in one place: the tiny model's builders, the one run config for it, writers of data
files and run folders, and small checks. Fixtures are in conftest.py (they build the tiny model once a session);
test files import from here (`from helpers import tiny_config`), never from each other.

Also used outside pytest: the classroom's student processes import tiny_config, tools/bad_inputs_table.py the
tiny model's builders, and bench/bench_memory.py the families. Nothing heavy is imported at module level
(conftest.py imports this module before it sets HF_HUB_OFFLINE, which huggingface_hub reads once).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
import time
from pathlib import Path

from hypothesis import strategies as st

from workbench.records.results import DOC_CHECKS, MESSAGE_LIMIT, ROW_CHECKS, TEXT_LIMIT

# --------------------------------------------------------------------------- where things are

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
DATA = REPO / "data"
CONFIGS = DATA / "model_configs"  # the shipped model configs (estimate without weights)
SUPPORT = TESTS / "scenarios" / "support"  # scripts the scenarios run as processes, and their data
SCORING_SPEED_GOLDEN = SUPPORT / "scoring_speed_golden.json"
# the Voilà page's notebook, trained small (the page's notebook test and the page in Chromium)
APP_FAST_OVERRIDES = {"train": {"steps": 3, "batch_size": 2, "seq_len": 64, "eval_examples": 6}}


# --------------------------------------------------------------------------- the tiny model

SPECIAL_TOKENS = ["<unk>", "<|im_start|>", "<|im_end|>"]
EXTRA_WORDS = ["user", "assistant", "system", "yes", "no", "red", "green", "blue", "apple", "banana", "cherry"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A learnable mapping for the tiny model: one sentiment word -> its label.
POSITIVE_WORDS = ["superb", "excellent", "wonderful", "great", "fantastic", "lovely", "brilliant", "pleasant"]
NEGATIVE_WORDS = ["awful", "terrible", "horrible", "dreadful", "disappointing", "broken", "rude", "noisy"]


def _corpus_words() -> list[str]:
    words: set[str] = set()
    for path in sorted((DATA / "sentiment").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for text in (row["prompt"], row["answer"]):
                words.update(re.findall(r"\w+|[^\w\s]", text))
    words.update(EXTRA_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS)
    return sorted(words - set(SPECIAL_TOKENS))


def build_tiny_tokenizer():
    """A word-level tokenizer over the words of data/sentiment and a few extras, with ChatML's chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _corpus_words())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
    )


_BYTE_TOKENIZER = []


def byte_tokenizer():
    """A byte-level BPE tokenizer (one token per byte, lossless decode) with the tiny ChatML template: with it,
    decoded token ids are exactly the text that was tokenised, which the word-level tiny tokenizer (no decoder:
    tokens come back joined by spaces) cannot show. Built once a process."""
    if not _BYTE_TOKENIZER:
        from tokenizers import Tokenizer, decoders, pre_tokenizers
        from tokenizers import models as tok_models
        from transformers import PreTrainedTokenizerFast

        vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
        core = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        _BYTE_TOKENIZER.append(
            PreTrainedTokenizerFast(
                tokenizer_object=core,
                eos_token="<|im_end|>",
                pad_token="<|im_end|>",
                additional_special_tokens=["<|im_start|>"],
                chat_template=CHAT_TEMPLATE,
                clean_up_tokenization_spaces=False,
            )
        )
    return _BYTE_TOKENIZER[0]


def build_tiny_model(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """The tiny Llama (64 wide, 2 layers); larger shapes for tests where its size must show in memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        # a wider init than the default 0.02: with tied 64-wide embeddings that small, logits can hardly
        # move away from uniform and LoRA has nothing to show in a few steps
        initializer_range=0.1,
        # no pad_token_id here: the Embedding would zero that row, and as pad == eos (tied to the output
        # head) the model could then never learn to end an answer
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def tiny_examples():
    """16 workbench.data.Example rows, one sentiment word -> positive/negative, the labels interleaved."""
    from workbench.data import Example

    rows = [Example(f"Review: {w}", "positive") for w in POSITIVE_WORDS]
    rows += [Example(f"Review: {w}", "negative") for w in NEGATIVE_WORDS]
    # interleave so every batch holds both labels
    return [r for pair in zip(rows[: len(POSITIVE_WORDS)], rows[len(POSITIVE_WORDS) :]) for r in pair]


def lora_b(model) -> dict:
    """Every lora_B weight of a model, copied (as float32, on the CPU)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if "lora_B" in n}


def trained_adapter(
    load_tiny,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets="all-linear",
    rslora: bool = False,
    seed: int = 0,
):
    """A real PEFT adapter on the tiny model, with B made non-zero (peft starts it at zero), saved to `out`."""
    import torch

    from workbench.core.config import LoraSettings
    from workbench.engine.models import attach_lora

    model = attach_lora(
        load_tiny(16), LoraSettings(rank=rank, alpha=alpha, target_modules=targets, use_rslora=rslora), 16
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(out)
    return model


# --------------------------------------------------------------------------- run configs

TINY_TRAIN = {"steps": 3, "lr": 3e-2, "batch_size": 4, "seq_len": 32, "warmup_steps": 0}


def tiny_config(model_dir, data, variants="base,lora,qlora", steps=3, *, lora: dict | None = None, **train):
    """The one run config the tests build for the tiny model on a data file: rank 4, alpha 8 (or `lora`, whole),
    4-bit QLoRA, batches of 4 rows of 32 tokens, no warmup, lr 3e-2; `train` overrides any training setting;
    `variants=None` leaves the default variants."""
    from workbench.core.config import RunConfig

    d = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "lora": {"rank": 4, "alpha": 8.0} if lora is None else lora,
        "quant": {"bits": 4},
        "train": {**TINY_TRAIN, "steps": steps, **train},
        "task": None,
        "data": str(data),
    }
    if variants is not None:
        d["variants"] = variants
    return RunConfig.from_dict(d)


def one_step_config(model_dir, data, variants="base", **train):
    """tiny_config with one training step: for tests of what a run keeps and reads back, not what it learns."""
    return tiny_config(model_dir, data, variants=variants, steps=1, **train)


def run_saying(cfg, out, **kw) -> list[str]:
    """run_compare (looked up when called, so a test's monkeypatch of it holds), returning the status lines it
    said."""
    from workbench.core.events import Hooks
    from workbench.experiments import comparison

    statuses: list[str] = []
    comparison.run_compare(cfg, out, Hooks(on_status=statuses.append), **kw)
    return statuses


def tiny_state(model_dir: Path, runs_dir: Path, **lora):
    """The panels' shared state for the tiny model: LoRA on every linear layer at rank 4 (`lora` overrides)."""
    from workbench.core.config import preset_config
    from workbench.ui import AppState

    cfg = preset_config(
        None,
        {
            "model": {"name": str(model_dir), "device": "cpu"},
            "task": "sentiment",
            "lora": {"rank": 4, "alpha": 8.0, "target_modules": "all-linear", **lora},
            "variants": ["lora"],
        },
    )
    return AppState(cfg, runs_dir=runs_dir)


def base_config(model_dir, data):
    """A sweep's base settings on the tiny model: the default variants and rank, 2 steps at lr 1e-2."""
    return tiny_config(model_dir, data, variants=None, steps=2, lora={"alpha": 8.0}, lr=1e-2)


# no dropout: each process draws its own masks, so with dropout only the distributions would match
DDP_LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "q_proj,v_proj"}


def ddp_config(model_dir, data, variants=("qlora",), **train):
    """An experiment for several processes: q,v only and no dropout, 5 steps at lr 5e-3 with one warmup step."""
    return tiny_config(
        model_dir, data, list(variants), **{"steps": 5, "lr": 5e-3, "warmup_steps": 1, "lora": DDP_LORA, **train}
    )


# --------------------------------------------------------------------------- files


def write_jsonl(path: Path, rows) -> Path:
    """rows (dicts) as a JSONL file, one object a line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_latin1_csv(path: Path) -> None:
    """A CSV saved as Latin-1, not UTF-8 (café on line 3)."""
    path.write_bytes("prompt,answer\nhi,yes\ncaf\xe9,no\n".encode("latin-1"))


def sentiment_rows(n: int) -> list[dict]:
    """n prompt/answer rows of the tiny task's words, the labels alternating."""
    words = [w for pair in zip(POSITIVE_WORDS, NEGATIVE_WORDS) for w in pair]
    return [
        {"prompt": f"Review: {w}", "answer": "positive" if w in POSITIVE_WORDS else "negative"} for w in (words * 3)[:n]
    ]


def listing(folder: Path) -> list[str]:
    """The names in a folder, sorted (what a failed write must leave)."""
    return sorted(p.name for p in folder.iterdir())


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def png_size(fig) -> tuple[int, int]:
    """A matplotlib figure's size in pixels, as the panels send it."""
    import io

    from PIL import Image

    from workbench.ui.common import png

    return Image.open(io.BytesIO(png(fig))).size


# --------------------------------------------------------------------------- errors, waiting, ports


def value_error(fn, *args, **kw) -> str:
    """The ValueError message of fn(*args); it must be one line."""
    import pytest

    with pytest.raises(ValueError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def error_lines(text: str) -> list[str]:
    """The lines of stderr that are not blank."""
    return [line for line in text.splitlines() if line.strip()]


def wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    """Skip a browser test without Debian's Chromium, except under CI, which installs it (.ci/run): there a
    missing browser is a failure."""
    import pytest
    from scenarios.support import lab_browser

    reason = lab_browser.chromium_missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(reason)
        pytest.skip(reason + "; or run `make chromium` once")


# --------------------------------------------------------------------------- run folders as the workbench writes them

MiB = 2**20


def good_doc(user: str = "ada") -> dict:
    """A results.json as a finished cpu-demo run writes it, every field filled."""
    from workbench.core.config import preset_config
    from workbench.records.results import CompareResult, VariantResult

    cfg = preset_config("cpu-demo")
    result = CompareResult(
        config=cfg.to_dict(),
        device="cpu (float32)",
        device_type="cpu",
        model_path="/models/smollm2",
        task="sentiment",
        notes=["a note"],
        allocator="tcmalloc",
        command="workbench compare --preset cpu-demo",
        user=user,
    )
    base = VariantResult("base", 16, base_dtype="float32", weight_bytes=500 * MiB, peak_memory_bytes=600 * MiB)
    lora = VariantResult(
        "lora",
        16,
        rank=8,
        target_modules=["q_proj", "v_proj"],
        trainable_params=921_600,
        total_params=135_000_000,
        weight_bytes=520 * MiB,
        peak_memory_bytes=900 * MiB,
        estimated_peak_bytes=880 * MiB,
        train_seconds=41.0,
        tokens_per_second=250.0,
        final_train_loss=0.3,
        eval_loss=0.4,
        perplexity=1.49,
        accuracy=0.9,
        steps_done=20,
        base_dtype="float32",
        general_loss=3.1,
        forgetting=-0.02,
        eval_examples=60,
        accuracy_low=0.8,
        accuracy_high=0.95,
        eval_loss_low=0.3,
        eval_loss_high=0.5,
        perplexity_low=1.35,
        perplexity_high=1.65,
        forgetting_low=-0.05,
        forgetting_high=0.01,
        eval_seconds=9.0,
    )
    return {**result.to_json(), "variants": [base.to_dict(), lora.to_dict()]}


def write_doc(folder: Path, doc) -> None:
    """A run folder holding `doc` as its results.json (a str is written as it is)."""
    from workbench.records import runs

    folder.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc)  # NaN and Infinity as Python's json writes them
    (folder / runs.RESULTS_FILE).write_text(text, encoding="utf-8")


def write_class_folder(root: Path, n: int, people: int = 30) -> Path:
    """n runs from `people` people, each a finished cpu-demo run's results.json with its own scores."""
    from workbench.core.stats import accuracy_interval

    for i in range(n):
        doc = good_doc(user=f"student-{i % people:02d}")
        lora = doc["variants"][1]
        right = 30 + i % 25
        ci = accuracy_interval(right, 60)
        lora.update(accuracy=right / 60, accuracy_low=ci.low, accuracy_high=ci.high)
        lora["peak_memory_bytes"] = (800 + 7 * i) * MiB
        write_doc(root / f"run-{i:04d}", doc)
    return root


# --------------------------------------------------------------------------- a run folder damaged, field by field
# (hypothesis strategies: the scan must list any of these as unreadable, and the Results tab must still open)

NUMBER_FIELDS = {
    name: kind
    for name, kind in {
        "trainable_params": "count",
        "total_params": "count",
        "steps_done": "count",
        "eval_examples": "count",
        "rank": "count",
        "weight_bytes": "amount",
        "peak_memory_bytes": "amount",
        "estimated_peak_bytes": "amount",
        "train_seconds": "amount",
        "tokens_per_second": "amount",
        "final_train_loss": "amount",
        "eval_loss": "amount",
        "perplexity": "amount",
        "general_loss": "amount",
        "eval_loss_low": "amount",
        "eval_loss_high": "amount",
        "perplexity_low": "amount",
        "perplexity_high": "amount",
        "eval_seconds": "amount",
        "init_seconds": "amount",
        "init_error_before": "amount",
        "init_error_after": "amount",
        "accuracy": "share",
        "accuracy_low": "share",
        "accuracy_high": "share",
        "forgetting": "signed",
        "forgetting_low": "signed",
        "forgetting_high": "signed",
    }.items()
}
TEXT_FIELDS = {"base_dtype": TEXT_LIMIT, "error": MESSAGE_LIMIT}
DOC_TEXT_FIELDS = {"device": TEXT_LIMIT, "task": TEXT_LIMIT, "user": TEXT_LIMIT, "model_path": 4_096}

NOT_A_NUMBER = st.one_of(
    st.text(max_size=8),  # "0.9": the hand edit that took the tab down
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


def bad_number(kind: str) -> st.SearchStrategy:
    """A value the field must refuse: not a number, not finite, negative where it cannot be, or out of range."""
    out = [NOT_A_NUMBER, st.integers(min_value=2**63, max_value=10**400)]
    if kind != "signed":
        out.append(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
    if kind == "count":
        out.append(st.floats(min_value=0.5, max_value=1e6).filter(lambda v: not v.is_integer()))
    if kind == "share":
        out.append(st.floats(min_value=1.0001, max_value=1e9))
    return st.one_of(out)


def bad_text(limit: int) -> st.SearchStrategy:
    too_long = st.integers(min_value=limit + 1, max_value=limit * 3).map(lambda n: "<b>x</b>" * (n // 8 + 1))
    return st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=3), max_size=2), too_long)


def set_row(field: str, value):
    def damage(doc: dict) -> None:
        doc["variants"][1][field] = value

    return damage


def set_doc(field: str, value):
    def damage(doc: dict) -> None:
        doc[field] = value

    return damage


def drop_field(where: str, field: str):
    def damage(doc: dict) -> None:
        (doc["variants"][1] if where == "row" else doc).pop(field)

    return damage


DAMAGES = st.one_of(
    st.sampled_from(sorted(NUMBER_FIELDS)).flatmap(lambda f: bad_number(NUMBER_FIELDS[f]).map(lambda v: set_row(f, v))),
    st.sampled_from(sorted(TEXT_FIELDS)).flatmap(lambda f: bad_text(TEXT_FIELDS[f]).map(lambda v: set_row(f, v))),
    st.sampled_from(sorted(DOC_TEXT_FIELDS)).flatmap(
        lambda f: bad_text(DOC_TEXT_FIELDS[f]).map(lambda v: set_doc(f, v))
    ),
    st.sampled_from(["name", "bits"]).flatmap(
        lambda f: st.one_of(NOT_A_NUMBER, st.just("lora-9"), st.just(32)).map(lambda v: set_row(f, v))
    ),
    st.sampled_from(["name", "bits"]).map(lambda f: drop_field("row", f)),
    st.sampled_from(["config", "variants"]).map(lambda f: drop_field("doc", f)),
    st.text(min_size=1, max_size=12).filter(lambda k: k not in ROW_CHECKS).map(lambda k: set_row(k, 1)),
    st.text(min_size=1, max_size=12)
    .filter(lambda k: k not in DOC_CHECKS and k != "variants")
    .map(lambda k: set_doc(k, 1)),
    st.sampled_from(["status", "stopped", "notes", "target_modules"]).flatmap(
        lambda f: NOT_A_NUMBER.filter(lambda v: not isinstance(v, (bool, list, str)) or f == "status").map(
            lambda v: set_doc(f, v) if f in DOC_CHECKS else set_row(f, v)
        )
    ),
)
# whole files of another layout: an older workbench's, another program's, or not JSON at all
OTHER_LAYOUTS = st.one_of(
    st.sampled_from(['{"variants": [{"name": "lora"}]}', "[1, 2]", "null", '"results"', "{", "[" * 50_000]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5), lambda x: st.lists(x, max_size=3)
    ).map(json.dumps),
)


# --------------------------------------------------------------------------- causal-LM families, built tiny
# (each family's config from its published architecture's shape, no download; bench/bench_memory.py builds them
# medium-sized). Each entry gives the config class and its keyword arguments at a hidden size `h` and `layers`
# blocks, in the family's own field names (GPT-2's n_embd, Bloom's n_layer): the config's attribute map must turn
# them into hidden_size and num_hidden_layers, which is one of the things the family tests check.


def _llama_like(h: int, layers: int, vocab: int, inter: int | None = None, **extra) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=inter or 2 * h,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **extra,
    )


# family -> (transformers config class name, kwargs(h, layers, vocab))
FAMILIES = {
    "llama": ("LlamaConfig", lambda h, n, v: _llama_like(h, n, v)),
    "mistral": ("MistralConfig", lambda h, n, v: _llama_like(h, n, v, sliding_window=None)),
    "qwen2": ("Qwen2Config", lambda h, n, v: _llama_like(h, n, v)),
    "qwen3": ("Qwen3Config", lambda h, n, v: _llama_like(h, n, v, head_dim=h // 4)),
    "gemma2": ("Gemma2Config", lambda h, n, v: _llama_like(h, n, v, head_dim=h // 4, query_pre_attn_scalar=h // 4)),
    "phi3": ("Phi3Config", lambda h, n, v: _llama_like(h, n, v, pad_token_id=None)),
    "gpt2": ("GPT2Config", lambda h, n, v: dict(vocab_size=v, n_embd=h, n_layer=n, n_head=4, n_positions=256)),
    "gpt_neox": (
        "GPTNeoXConfig",
        lambda h, n, v: dict(
            vocab_size=v,
            hidden_size=h,
            intermediate_size=4 * h,
            num_hidden_layers=n,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "opt": (
        "OPTConfig",
        lambda h, n, v: dict(
            vocab_size=v,
            hidden_size=h,
            word_embed_proj_dim=h,
            ffn_dim=4 * h,
            num_hidden_layers=n,
            num_attention_heads=4,
            max_position_embeddings=256,
            pad_token_id=None,
        ),
    ),
    "falcon": (
        "FalconConfig",
        lambda h, n, v: dict(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=4),
    ),
    "starcoder2": ("Starcoder2Config", lambda h, n, v: _llama_like(h, n, v, inter=4 * h)),
    "bloom": ("BloomConfig", lambda h, n, v: dict(vocab_size=v, hidden_size=h, n_layer=n, n_head=4)),
    "mixtral": ("MixtralConfig", lambda h, n, v: _llama_like(h, n, v, num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        lambda h, n, v: _llama_like(
            h, n, v, head_dim=h // 4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=h
        ),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        lambda h, n, v: _llama_like(
            h,
            n,
            v,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=h,
            shared_expert_intermediate_size=2 * h,
        ),
    ),
}


def family_config(family: str, h: int = 32, layers: int = 2, vocab: int = 128, **overrides):
    """The transformers config of `family` at hidden size h with `layers` blocks."""
    import transformers

    cls_name, kwargs = FAMILIES[family]
    return getattr(transformers, cls_name)(**{**kwargs(h, layers, vocab), **overrides})


# what all-linear adapts in each family (docs/families.md has the same table)
FAMILY_LINEAR = {
    "llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "mistral": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "qwen3": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "gemma2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "opt": ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"],
    "falcon": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "starcoder2": ["c_fc", "c_proj", "k_proj", "o_proj", "q_proj", "v_proj"],
    "bloom": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "mixtral": ["k_proj", "o_proj", "q_proj", "v_proj"],
    "qwen3_moe": ["k_proj", "o_proj", "q_proj", "v_proj"],
    "qwen2_moe": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
}
MOE = {"mixtral", "qwen3_moe", "qwen2_moe"}
# families whose layers transformers' bitsandbytes integration leaves alone (a Linear subclass the workbench does
# not build as torch's Linear) -> the refusal's start: 16 bits only. None since Falcon's FalconLinear is built so.
NOT_QUANTIZED: dict[str, str] = {}


def family_folder(family_dirs: dict, family: str) -> Path:
    """The family's tiny model folder, or a skip with the one line saying why transformers could not build it."""
    import pytest

    found = family_dirs[family]
    if isinstance(found, str):
        pytest.skip(found)
    return found
