"""Generation and scored evaluation, for any variant (base = the LoRA model with its adapter disabled)."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .data import IGNORE_INDEX, Encoded, Example, TextSource, collate, encode, exact_match, prompt_text
from .models import row_sums, scored_loss, split_head


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

    def summary(self) -> str:
        """Tokens and time, with a speed only where the answer is long enough for one to mean something:
        a short answer's time is mostly reading the prompt, not generating."""
        tokens = f"{self.new_tokens} token{'s' if self.new_tokens != 1 else ''} in {self.seconds:.1f} s"
        if self.new_tokens < MIN_TOKENS_FOR_SPEED:
            return f"{tokens} (mostly reading the prompt: too short to measure a speed)"
        return f"{tokens} · {self.tokens_per_second:.1f} tok/s"


MIN_TOKENS_FOR_SPEED = 8  # below this, one forward over the prompt dominates the time


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
    # per scored example (or block of text), in order: its answer's mean loss, its answer tokens and a key that
    # names it (two runs pair only on examples with the same keys); what the intervals and paired tests read
    losses: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long scoring took: what the plan prices an eval example at

    def to_dict(self) -> dict:
        return {"eval_loss": self.eval_loss, "perplexity": self.perplexity, "accuracy": self.accuracy}

    @property
    def correct(self) -> list[bool] | None:
        return [bool(p["correct"]) for p in self.predictions] if self.predictions else None

    def scores(self) -> dict:
        """What scores.json keeps of this evaluation (runs.Run.scores reads it back)."""
        return {"keys": self.keys, "losses": self.losses, "tokens": self.tokens, "correct": self.correct}


def example_key(example: Example | dict) -> str:
    """A short name for one eval example, the same in every run that scores it: a digest of its prompt, its
    history and its answer (of its token ids, for a block of plain text)."""
    import hashlib

    if isinstance(example, Example):
        text = json.dumps([example.prompt, example.history, example.answer], ensure_ascii=False, default=str)
    else:
        text = json.dumps(example["input_ids"])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


EVAL_BATCH_SIZE = 16  # examples per no-grad forward when scoring (estimator.estimate(train=False) sizes this)
# blocks of general text per forward when measuring forgetting: every position is scored there, so a batch's
# float32 logits are batch x seq_len x vocabulary (16 blocks of 64 on SmolLM2: ~600 MB; 2 blocks: ~75 MB)
GENERAL_BATCH_SIZE = 2


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
    progress: Callable[[int, int, str], None] | None = None,
) -> EvalResult:
    """Eval loss and perplexity on the answer tokens (every token for plain text), and, when the
    task is scored by exact match, the accuracy of greedy answers. `encoded`: the examples already
    tokenised at seq_len (data.encode), so a caller that scores several variants encodes them once.
    `progress(done, total, unit)` is called after each batch (unit: what is counted)."""
    tell = progress or (lambda done, total, unit: None)
    started = time.perf_counter()
    device = _device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    split = encode(tokenizer, encoded if encoded is not None else examples, seq_len)
    rows = split.rows
    answers = not isinstance(examples, TextSource) and scoring == "exact_match"
    max_new = max(8, max((sum(lab != IGNORE_INDEX for lab in r["labels"]) for r in rows), default=0) + 4)
    # one forward both scores an answer and primes the cache its greedy answer grows from (transformers'
    # generate would run every prompt through the model again); not where a prompt was cut at seq_len
    fused = answers and split_head(model) is not None and all(p + a <= seq_len for _, p, a in split.lengths)
    total_loss, total_tokens, texts, row_losses, row_tokens = 0.0, 0, [], [], []
    unit = "blocks" if isinstance(examples, TextSource) else "examples" if fused or not answers else "examples scored"
    tell(0, len(rows), unit)
    with adapter_off(model, base):
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            if fused:
                rows_loss, counts, answered = _score_and_answer(model, tokenizer, chunk, device, max_new)
                texts += answered
            else:
                batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
                rows_loss = scored_loss(
                    model, batch["input_ids"], batch["attention_mask"], batch["labels"], reduction="row"
                )
                counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
            total_loss += float(rows_loss.sum())  # note: a sync point; the count below is what progress shows
            total_tokens += int(counts.sum())
            row_losses += [float(s) / max(int(c), 1) for s, c in zip(rows_loss, counts)]
            row_tokens += [int(c) for c in counts]
            tell(min(i + batch_size, len(rows)), len(rows), unit)
    if total_tokens == 0:  # a loss over nothing would read as a perfect 0.0
        raise ValueError(f"seq_len: {seq_len} tokens cut off the answer of every eval example; raise seq_len")
    mean = total_loss / total_tokens
    perplexity = math.exp(min(mean, 50.0))
    named = rows if isinstance(examples, TextSource) else examples
    per_example = {"losses": row_losses, "tokens": row_tokens, "keys": [example_key(e) for e in named]}
    if not answers:
        return EvalResult(mean, perplexity, None, seconds=time.perf_counter() - started, **per_example)
    if not fused:
        decode = DecodeSettings(max_new_tokens=max_new)
        tell(0, len(examples), "examples answered")
        for i in range(0, len(examples), batch_size):
            texts += [g.text for g in generate(model, tokenizer, examples[i : i + batch_size], decode, base=base)]
            tell(min(i + batch_size, len(examples)), len(examples), "examples answered")
    predictions = [
        {
            "prompt": ex.prompt,
            "answer": ex.answer,
            "prediction": text,
            "correct": exact_match(text, ex.answer),
            "loss": loss,  # the mean loss of this example's answer tokens
            "tokens": tokens,
        }
        for ex, text, loss, tokens in zip(examples, texts, row_losses, row_tokens)
    ]
    accuracy = sum(p["correct"] for p in predictions) / max(len(predictions), 1)
    seconds = time.perf_counter() - started
    return EvalResult(mean, perplexity, accuracy, predictions, seconds=seconds, **per_example)


def _score_and_answer(
    model, tokenizer, rows: list[dict], device, max_new: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(each row's summed answer loss, each row's answer tokens, greedy answers) of a batch of encoded
    prompt+answer rows.

    The prompts are left-padded to one length P and the answers follow them, so a single forward gives
    the loss of every answer token and a KV cache whose first P positions are the prompts; cut back to
    those, the cache grows the greedy answers one token at a time, from the logits at position P-1."""
    from transformers import DynamicCache

    body, head = split_head(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    p_lens = [next((j for j, lab in enumerate(r["labels"]) if lab != IGNORE_INDEX), len(r["labels"])) for r in rows]
    width_p = max(p_lens)
    width_a = max(len(r["input_ids"]) - p for r, p in zip(rows, p_lens))
    ids = torch.full((len(rows), width_p + width_a), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (r, p) in enumerate(zip(rows, p_lens)):
        n = len(r["input_ids"])
        ids[b, width_p - p : width_p - p + n] = torch.tensor(r["input_ids"])
        mask[b, width_p - p : width_p - p + n] = 1
        labels[b, width_p : width_p - p + n] = torch.tensor(r["labels"][p:])
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    # transformers 5.x renames past_key_values to cache (the old name warns, and goes in 5.40)
    key = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache})
    hidden = hidden.last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    token_losses = torch.nn.functional.cross_entropy(
        head(hidden[:, :-1][keep]).float(), targets[keep], reduction="none"
    )
    loss = row_sums(token_losses, keep)
    cache.crop(-width_a)  # back to the prompts (a negative count removes that many from the end)
    token = head(hidden[:, width_p - 1]).argmax(-1)
    attn, pos = mask[:, :width_p], positions[:, width_p - 1]
    done = token == eos
    out = [token]
    for _ in range(max_new - 1):
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        pos = pos + 1
        step = body(
            input_ids=token[:, None], attention_mask=attn, position_ids=pos[:, None], use_cache=True, **{key: cache}
        ).last_hidden_state
        token = torch.where(done, torch.full_like(token, pad), head(step[:, -1]).argmax(-1))
        done = done | (token == eos)
        out.append(token)
    tokens = torch.stack(out, dim=1).tolist()
    texts = [
        tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True).strip()
        for row in tokens
    ]
    return loss, keep.sum(-1), texts


@dataclass
class GeneralScores:
    """The loss on the general text and, for an adapter, forgetting: its loss there minus its base's (the same
    model with the adapter off), with both per block, so forgetting gets a paired interval."""

    loss: float
    forgetting: float | None
    on: EvalResult  # the variant as it is
    off: EvalResult | None  # an adapter's base (adapter off); None for the base itself

    def scores(self) -> dict:
        """What scores.json keeps: each block's loss, and its base's for an adapter."""
        return {**self.on.scores(), "base_losses": self.off.losses if self.off else None}


def general_scores(model, tokenizer, rows: Encoded | None, *, base: bool) -> GeneralScores | None:
    """The general-text scores from its encoded blocks (data.general_text), as PEFT's method comparison
    measures what tuning costs a model elsewhere; None where no general text is shipped."""
    if rows is None:
        return None
    text = TextSource("", "the general text")  # its blocks are encoded already: evaluate scores those

    def scored(off: bool) -> EvalResult:
        return evaluate(
            model, tokenizer, text, seq_len=rows.seq_len, base=off, encoded=rows, batch_size=GENERAL_BATCH_SIZE
        )

    if base:
        on = scored(True)
        return GeneralScores(on.eval_loss, None, on, None)
    on, off = scored(False), scored(True)
    return GeneralScores(on.eval_loss, on.eval_loss - off.eval_loss, on, off)


def general_losses(model, tokenizer, rows: Encoded | None, *, base: bool) -> tuple[float | None, float | None]:
    """(loss on the general text, forgetting): general_scores' two numbers; for the base, (its loss, None)."""
    g = general_scores(model, tokenizer, rows, base=base)
    return (None, None) if g is None else (g.loss, g.forgetting)
