"""Generation and scored evaluation, for any variant (base = the LoRA model with its adapter disabled).

Long because: scoring is the long phase on a CPU, and its speed-ups live beside the scoring they must not change:
one forward per batch that scores the answers and primes the greedy decode, the prompts' shared start computed
once, rows batched by length, each row stopped where its answer ends, and closed-set scoring of a task's labels
(docs/benchmarks.md, "Generation and evaluation", has what each one buys).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from workbench.data import (
    IGNORE_INDEX,
    Encoded,
    Example,
    TextSource,
    answer_suffix,
    collate,
    encode,
    exact_match,
    prompt_text,
)
from workbench.engine.models import row_sums, scored_loss, split_head


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


def joined(parts: Sequence[EvalResult]) -> EvalResult:
    """Scores of consecutive slices of one split as one result, as if scored together: the loss weighted by
    each example's answer tokens, the accuracy over every prediction, the lists in order."""
    losses = [x for p in parts for x in p.losses]
    tokens = [t for p in parts for t in p.tokens]
    total = sum(tokens)
    mean = sum(loss * t for loss, t in zip(losses, tokens)) / max(total, 1)
    predictions = [x for p in parts for x in p.predictions]
    accuracy = None
    if parts and parts[0].accuracy is not None:
        accuracy = sum(bool(x["correct"]) for x in predictions) / max(len(predictions), 1)
    return EvalResult(
        mean,
        math.exp(min(mean, 50.0)),
        accuracy,
        predictions,
        losses,
        tokens,
        [k for p in parts for k in p.keys],
        sum(p.seconds for p in parts),
    )


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
    choices: Sequence[str] | None = None,
) -> EvalResult:
    """Eval loss and perplexity on the answer tokens (every token for plain text), and, when the
    task is scored by exact match, the accuracy of greedy answers. `encoded`: the examples already
    tokenised at seq_len (data.encode), so a caller that scores several variants encodes them once.
    `progress(done, total, unit)` is called after each batch (unit: what is counted).

    An answer ends at the end-of-turn token or, where every reference answer is one line, at the first line
    break after some text: the prediction is that first line. `choices` (a task's closed set of labels,
    data.scoring.closed_answers): each answer is the label whose whole answer, end of turn included, the model
    finds most likely, instead of a greedy generation (its prediction says "answered_by": "choice", with each
    label's summed loss in "label_losses"); the loss is the reference answer's either way. Where a prompt was cut
    at seq_len (or the model's head is not a plain matmul) answers are generated, labels or not. Examples are
    batched by length; every list comes back in their order."""
    tell = progress or (lambda done, total, unit: None)
    started = time.perf_counter()
    device = _device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    split = encode(tokenizer, encoded if encoded is not None else examples, seq_len)
    rows = split.rows
    answers = not isinstance(examples, TextSource) and scoring == "exact_match"
    single_line = answers and all("\n" not in ex.answer.strip() for ex in examples)
    max_new = max(8, max((sum(lab != IGNORE_INDEX for lab in r["labels"]) for r in rows), default=0) + 4)
    # one forward both scores an answer and primes the cache its greedy answer grows from (transformers'
    # generate would run every prompt through the model again); not where a prompt was cut at seq_len
    fused = answers and split_head(model) is not None and all(p + a <= seq_len for _, p, a in split.lengths)
    choice_ids = None
    if fused and choices:
        end = answer_suffix(tokenizer)
        choice_ids = [(c, tokenizer(c + end, add_special_tokens=False)["input_ids"]) for c in choices]
    # like lengths batched together: a batch is as wide as its longest row, and padding is compute spent on nothing
    order = sorted(range(len(rows)), key=lambda j: (prompt_length(rows[j]), len(rows[j]["input_ids"])))
    sums, counts, texts = [0.0] * len(rows), [0] * len(rows), [""] * len(rows)
    label_losses: list[dict | None] = [None] * len(rows)
    unit = "blocks" if isinstance(examples, TextSource) else "examples" if fused or not answers else "examples scored"
    tell(0, len(rows), unit)
    with adapter_off(model, base):
        prefix = shared_prefix(model, rows, device) if fused else None
        for i in range(0, len(rows), batch_size):
            chunk = order[i : i + batch_size]
            if fused:
                rows_loss, counted, answered = _score_and_answer(
                    model,
                    tokenizer,
                    [rows[j] for j in chunk],
                    device,
                    max_new,
                    prefix=prefix,
                    single_line=single_line,
                    choices=choice_ids,
                )
                for j, said in zip(chunk, answered):
                    if isinstance(said, dict):  # each label's summed loss: the answer is the lowest
                        label_losses[j], said = said, min(said, key=said.get)
                    texts[j] = said
            else:
                batch = {k: v.to(device) for k, v in collate([rows[j] for j in chunk], pad_id).items()}
                rows_loss = scored_loss(
                    model, batch["input_ids"], batch["attention_mask"], batch["labels"], reduction="row"
                )
                counted = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
            for j, s, c in zip(chunk, rows_loss.tolist(), counted.tolist()):  # note: a sync point
                sums[j], counts[j] = s, int(c)
            tell(min(i + batch_size, len(rows)), len(rows), unit)
    total_tokens = sum(counts)
    if total_tokens == 0:  # a loss over nothing would read as a perfect 0.0
        raise ValueError(f"seq_len: {seq_len} tokens cut off the answer of every eval example; raise seq_len")
    row_losses = [s / max(c, 1) for s, c in zip(sums, counts)]
    mean = sum(sums) / total_tokens
    perplexity = math.exp(min(mean, 50.0))
    named = rows if isinstance(examples, TextSource) else examples
    per_example = {"losses": row_losses, "tokens": counts, "keys": [example_key(e) for e in named]}
    if not answers:
        return EvalResult(mean, perplexity, None, seconds=time.perf_counter() - started, **per_example)
    if not fused:
        decode = DecodeSettings(max_new_tokens=max_new)
        tell(0, len(examples), "examples answered")
        for i in range(0, len(examples), batch_size):
            chunk = order[i : i + batch_size]
            answered = generate(model, tokenizer, [examples[j] for j in chunk], decode, base=base)
            for j, g in zip(chunk, answered):
                texts[j] = _first_line(g.text) if single_line else g.text
            tell(min(i + batch_size, len(examples)), len(examples), "examples answered")
    predictions = [
        {
            "prompt": ex.prompt,
            "answer": ex.answer,
            "prediction": text,
            "correct": exact_match(text, ex.answer),
            "loss": loss,  # the mean loss of this example's answer tokens
            "tokens": tokens,
            **({"answered_by": "choice", "label_losses": labels} if labels is not None else {}),
        }
        for ex, text, loss, tokens, labels in zip(examples, texts, row_losses, counts, label_losses)
    ]
    accuracy = sum(p["correct"] for p in predictions) / max(len(predictions), 1)
    seconds = time.perf_counter() - started
    return EvalResult(mean, perplexity, accuracy, predictions, seconds=seconds, **per_example)


def prompt_length(row: dict) -> int:
    """Tokens before the first labelled one: the prompt of an instruction row (0 for a block of text)."""
    return next((j for j, lab in enumerate(row["labels"]) if lab != IGNORE_INDEX), len(row["labels"]))


def _first_line(text: str) -> str:
    """A single-line answer: the first line with text on it (an answer that ends there, whatever follows)."""
    return text.strip().split("\n", 1)[0].strip()


def _cache_key(body) -> str:
    # transformers 5.x renames past_key_values to cache (the old name warns, and goes in 5.40)
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


@dataclass
class _Prefix:
    """The tokens every prompt starts with (a chat template's system prompt: 26 to 32 of SmolLM2's ~50 on the
    shipped tasks) and their KV cache, computed once for a batch of one and copied into each batch."""

    length: int
    cache: object

    def copies(self, n: int):
        cache = copy.deepcopy(self.cache)  # the layers' tensors are replaced, not written to, as a batch goes on
        cache.batch_repeat_interleave(n)
        return cache


def shared_prefix(model, rows: list[dict], device) -> _Prefix | None:
    """The rows' common prompt start with its cache; None where they share none. It stops a token short of the
    shortest prompt, so each row's last prompt token (whose logits give its answer's first token) is its own."""
    from transformers import DynamicCache

    prompts = [r["input_ids"][: prompt_length(r)] for r in rows]
    if not prompts:
        return None
    length = min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)
    if length < 1:
        return None
    body, _ = split_head(model)
    ids = torch.tensor([prompts[0][:length]], device=device)
    cache = DynamicCache()
    body(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        position_ids=torch.arange(length, device=device)[None],
        use_cache=True,
        **{_cache_key(body): cache},
    )
    return _Prefix(length, cache)


def _score_and_answer(
    model,
    tokenizer,
    rows: list[dict],
    device,
    max_new: int,
    *,
    prefix: _Prefix | None = None,
    single_line: bool = False,
    choices: list[tuple[str, list[int]]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(each row's summed answer loss, each row's answer tokens, its answer) of a batch of encoded prompt+answer
    rows: greedy answers, or with `choices` (each label, and the token ids of it and its end of turn) each label's
    summed loss.

    The prompts are left-padded to one length P and the answers follow them, so a single forward gives the loss
    of every answer token, the model's own next token after each of them, and a KV cache of the prompts and
    answers that the greedy answers (or the labels) grow from. With a `prefix`, the rows' shared start comes
    from its cache and only the rest of each row runs: the padding then sits between the two, which the
    attention mask and the position ids step over."""
    from transformers import DynamicCache

    body, head = split_head(model)
    key = _cache_key(body)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    skip = prefix.length if prefix is not None else 0
    p_lens = [prompt_length(r) - skip for r in rows]
    width_p = max(p_lens)
    width_a = max(len(r["input_ids"]) - skip - p for r, p in zip(rows, p_lens))
    ids = torch.full((len(rows), width_p + width_a), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (r, p) in enumerate(zip(rows, p_lens)):
        n = len(r["input_ids"]) - skip
        ids[b, width_p - p : width_p - p + n] = torch.tensor(r["input_ids"][skip:])
        mask[b, width_p - p : width_p - p + n] = 1
        labels[b, width_p : width_p - p + n] = torch.tensor(r["labels"][skip + p :])
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    if prefix is not None:
        mask = torch.cat([mask.new_ones(len(rows), skip), mask], dim=1)
        cache = prefix.copies(len(rows))
    else:
        cache = DynamicCache()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache})
    hidden = hidden.last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()
    loss = row_sums(torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none"), keep)
    counts = keep.sum(-1)
    grow = dict(body=body, head=head, key=key, cache=cache)
    if choices:
        cache.crop(-width_a)  # back to the prompts (a negative count removes that many from the end)
        last, attn, pos = hidden[:, width_p - 1], mask[:, : skip + width_p], positions[:, width_p - 1]
        return loss, counts, _label_losses(last, choices, pad, attn=attn, pos=pos, **grow)
    # what the model predicts after each reference token: greedy decoding's own choices for as long as they are
    # the reference's, so a right answer costs no decoding step at all
    per_row = counts.tolist()
    forced = list(zip(_split(logits.argmax(-1).tolist(), per_row), _split(targets[keep].tolist(), per_row)))
    del logits  # batch x answer tokens x vocabulary, in float32: not kept while decoding
    ends = dict(hidden=hidden, mask=mask, positions=positions, width_p=width_p, skip=skip)
    return loss, counts, _greedy(tokenizer, max_new, single_line, forced, **ends, **grow)


def _split(flat: list, sizes: list[int]) -> list[list]:
    out, at = [], 0
    for n in sizes:
        out.append(flat[at : at + n])
        at += n
    return out


def _greedy(
    tokenizer, max_new, single_line, forced, *, hidden, mask, positions, width_p, skip, body, head, key, cache
) -> list[str]:
    """Greedy answers, from the forward that scored the references. Each row's answer is the reference's for as
    long as the model's argmax after each reference token is the reference's next token (that forward computed
    those logits already): only a row that leaves its reference is decoded further, one token at a time, from
    the cache of its prompt and of the reference tokens it kept (the attention mask hides the rest of them).

    A row leaves the batch once its answer ends (the end of turn, max_new tokens, or a line break after text
    where the answers are single lines): the rows left run alone."""
    eos = tokenizer.eos_token_id
    pieces: dict[int, str] = {}  # token id -> its text, decoded once per call
    out: list[list[int]] = [[] for _ in forced]
    wrote = [False] * len(out)  # whether each row has written any text yet (a leading blank line is no end)

    def goes_on(b: int, t: int) -> bool:
        """Row b's answer takes token t: whether it goes on after it."""
        if t == eos:
            return False
        out[b].append(t)
        if single_line:
            piece = pieces.setdefault(t, tokenizer.decode([t]))
            if "\n" in piece and (wrote[b] or piece.split("\n", 1)[0].strip()):
                return False
            wrote[b] = wrote[b] or bool(piece.strip())
        return len(out[b]) < max_new

    active, feed, kept = [], [], []  # rows still answering, the token each feeds next, reference tokens cached
    for b, (predicted, reference) in enumerate(forced):
        same = next((j for j, (p, r) in enumerate(zip(predicted, reference)) if p != r), len(reference))
        tokens = reference[:same] + predicted[same : same + 1]
        if same == len(reference):  # the whole reference, and no end of turn in it: the next token is new
            tokens.append(int(head(hidden[b, width_p - 1 + same]).argmax()))
        if all(goes_on(b, t) for t in tokens):
            active.append(b)
            feed.append(tokens[-1])
            kept.append(len(tokens) - 1)
    if not active:
        return _texts(tokenizer, out, single_line)
    rows = torch.tensor(active, device=hidden.device)
    if len(active) < len(out):
        cache.batch_select_indices(rows)
    answer_cols = torch.arange(mask.shape[1] - skip - width_p, device=hidden.device)
    cached = torch.tensor(kept, device=hidden.device)
    attn = torch.cat([mask[rows, : skip + width_p], (answer_cols[None] < cached[:, None]).long()], dim=1)
    pos = positions[rows, width_p - 1] + 1 + cached  # where each fed token sits in its own sequence
    token = torch.tensor(feed, device=hidden.device)
    while True:
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        step = body(
            input_ids=token[:, None], attention_mask=attn, position_ids=pos[:, None], use_cache=True, **{key: cache}
        ).last_hidden_state
        token = head(step[:, -1]).argmax(-1)
        going = [j for j, (b, t) in enumerate(zip(active, token.tolist())) if goes_on(b, t)]  # note: a sync point
        if not going:
            break
        if len(going) < len(active):
            keep = torch.tensor(going, device=token.device)
            cache.batch_select_indices(keep)
            token, attn, pos = token[keep], attn[keep], pos[keep]
            active = [active[j] for j in going]
        pos = pos + 1
    return _texts(tokenizer, out, single_line)


def _texts(tokenizer, out: list[list[int]], single_line: bool) -> list[str]:
    texts = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    return [_first_line(t) for t in texts] if single_line else texts


def _label_losses(last, labelled, pad, *, body, head, key, cache, attn, pos) -> list[dict[str, float]]:
    """Each row's loss of each label: the cross entropy of its tokens, end of turn included, summed (the tokens,
    and the loss, a reference answer is scored by). The likeliest label has the lowest; a sum, not a mean:
    greedy decoding also looks for the likeliest whole answer, and a longer label is less likely."""
    names, choices = [name for name, _ in labelled], [ids for _, ids in labelled]
    n, k = last.shape[0], len(choices)
    first = -torch.log_softmax(head(last).float(), dim=-1)
    losses = torch.stack([first[:, c[0]] for c in choices], dim=1)
    longest = max(len(c) for c in choices)
    if longest > 1:  # every label's later tokens in one forward: each row's cache copied once per label
        feed = torch.full((k, longest - 1), pad, dtype=torch.long, device=last.device)
        targets = torch.full_like(feed, IGNORE_INDEX)
        for i, c in enumerate(choices):
            feed[i, : len(c) - 1] = torch.tensor(c[:-1])
            targets[i, : len(c) - 1] = torch.tensor(c[1:])
        feed, targets = feed.repeat(n, 1), targets.repeat(n, 1)  # row r*k+i: label i after prompt r
        cache.batch_repeat_interleave(k)
        attn = torch.cat([attn.repeat_interleave(k, dim=0), (targets != IGNORE_INDEX).long()], dim=1)
        steps = torch.arange(1, longest, device=last.device)
        hidden = body(
            input_ids=feed,
            attention_mask=attn,
            position_ids=pos.repeat_interleave(k)[:, None] + steps,
            use_cache=True,
            **{key: cache},
        ).last_hidden_state
        keep = targets != IGNORE_INDEX
        rest = torch.nn.functional.cross_entropy(head(hidden[keep]).float(), targets[keep], reduction="none")
        losses = losses + row_sums(rest, keep).view(n, k)
    return [dict(zip(names, row)) for row in losses.tolist()]


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


def general_scores(
    model, tokenizer, rows: Encoded | None, *, base: bool, start: EvalResult | None = None
) -> GeneralScores | None:
    """The general-text scores from its encoded blocks (data.general_text), as PEFT's method comparison
    measures what tuning costs a model elsewhere; None where no general text is shipped. `start`: an adapter's
    scores there before training, the reference where its init moved part of the base into it (switched off,
    the adapter would leave the residual, not the model training started from)."""
    if rows is None:
        return None

    def scored(off: bool) -> EvalResult:
        return general_text_scores(model, tokenizer, rows, off=off)

    if base:
        on = scored(True)
        return GeneralScores(on.eval_loss, None, on, None)
    on = scored(False)
    off = start if start is not None else scored(True)
    return GeneralScores(on.eval_loss, on.eval_loss - off.eval_loss, on, off)


def general_text_scores(model, tokenizer, rows: Encoded, *, off: bool = False) -> EvalResult:
    """The model's scores on the general text's encoded blocks; `off`: with its adapter switched off."""
    text = TextSource("", "the general text")  # its blocks are encoded already: evaluate scores those
    return evaluate(model, tokenizer, text, seq_len=rows.seq_len, base=off, encoded=rows, batch_size=GENERAL_BATCH_SIZE)


def general_losses(model, tokenizer, rows: Encoded | None, *, base: bool) -> tuple[float | None, float | None]:
    """(loss on the general text, forgetting): general_scores' two numbers; for the base, (its loss, None)."""
    g = general_scores(model, tokenizer, rows, base=base)
    return (None, None) if g is None else (g.loss, g.forgetting)
