"""Generation and scored evaluation, for any variant (base = the LoRA model with its adapter disabled)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from .data import IGNORE_INDEX, Encoded, Example, TextSource, collate, encode, exact_match, prompt_text
from .models import scored_loss


def adapter_off(model, off: bool = True):
    """Context in which a peft model answers as its base model: no second copy of the weights."""
    if off and hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def _device(model) -> torch.device:
    return next(p.device for p in model.parameters())


@dataclass
class Generation:
    text: str
    seconds: float
    new_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class DecodeSettings:
    max_new_tokens: int = 48
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.9
    seed: int = 0
    repetition_penalty: float = 1.0  # above 1 discourages loops (small models repeat under greedy decoding)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number of at least 1; got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or more; got {self.temperature}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be above 0 (1 = off); got {self.repetition_penalty}")

    def kwargs(self) -> dict:
        common = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            return {"do_sample": False, **common}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, **common}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str | Example],
    decode: DecodeSettings | None = None,
    *,
    base: bool = False,
    streamer=None,
    chat: bool = True,
) -> list[Generation]:
    """Answer prompts in one left-padded batch; with base=True the adapter is switched off.
    chat=False continues the text as it is (for models tuned on plain text)."""
    decode = decode or DecodeSettings()
    texts = [
        prompt_text(tokenizer, p.prompt, p.history, chat)
        if isinstance(p, Example)
        else prompt_text(tokenizer, p, chat=chat)
        for p in prompts
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(_device(model))
    finally:
        tokenizer.padding_side = side
    torch.manual_seed(decode.seed)
    model.eval()
    start = time.perf_counter()
    with adapter_off(model, base):
        # note: load_model turns the KV cache off for training; without it every new token would run the
        # whole sequence through the model again (and keep its logits), so generation asks for it here
        out = model.generate(
            **enc,
            **decode.kwargs(),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            streamer=streamer,
            use_cache=True,
        )
    seconds = time.perf_counter() - start
    new = out[:, enc["input_ids"].shape[1] :]
    results = []
    for row in new:
        n = int((row != tokenizer.pad_token_id).sum())
        results.append(Generation(tokenizer.decode(row, skip_special_tokens=True).strip(), seconds, n))
    return results


@dataclass
class EvalResult:
    eval_loss: float
    perplexity: float
    accuracy: float | None  # None when the task is scored by perplexity
    predictions: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"eval_loss": self.eval_loss, "perplexity": self.perplexity, "accuracy": self.accuracy}


EVAL_BATCH_SIZE = 16  # examples per no-grad forward when scoring (estimator.estimate(train=False) sizes this)


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    examples: list[Example] | TextSource,
    *,
    seq_len: int = 128,
    batch_size: int = EVAL_BATCH_SIZE,
    base: bool = False,
    scoring: str = "exact_match",
    encoded: Encoded | None = None,
) -> EvalResult:
    """Eval loss and perplexity on the answer tokens (every token for plain text), and, when the
    task is scored by exact match, the accuracy of greedy answers. `encoded`: the examples already
    tokenised at seq_len (data.encode), so a caller that scores several variants encodes them once."""
    device = _device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    total_loss = 0.0
    total_tokens = 0
    rows = encode(tokenizer, encoded if encoded is not None else examples, seq_len).rows
    with adapter_off(model, base):
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[i : i + batch_size], pad_id).items()}
            loss = scored_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], reduction="sum")
            total_loss += float(loss)
            total_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    if total_tokens == 0:  # a loss over nothing would read as a perfect 0.0
        raise ValueError(f"seq_len: {seq_len} tokens cut off the answer of every eval example; raise seq_len")
    mean = total_loss / total_tokens
    perplexity = math.exp(min(mean, 50.0))
    if isinstance(examples, TextSource) or scoring != "exact_match":
        return EvalResult(eval_loss=mean, perplexity=perplexity, accuracy=None)
    longest_answer = max(sum(1 for lab in r["labels"] if lab != IGNORE_INDEX) for r in rows)
    decode = DecodeSettings(max_new_tokens=max(8, longest_answer + 4))
    predictions = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        gens = generate(model, tokenizer, chunk, decode, base=base)
        for ex, g in zip(chunk, gens):
            predictions.append(
                {
                    "prompt": ex.prompt,
                    "answer": ex.answer,
                    "prediction": g.text,
                    "correct": exact_match(g.text, ex.answer),
                }
            )
    accuracy = sum(p["correct"] for p in predictions) / max(len(predictions), 1)
    return EvalResult(eval_loss=mean, perplexity=perplexity, accuracy=accuracy, predictions=predictions)
