"""Answering and evaluating with the variants of a finished run, without retraining.

A `Session` loads the run's base model once per precision (16, 8 or 4 bits) and puts the run's
saved adapter on it; "base" is the 16-bit model with its adapter switched off, so no second copy
of the weights is needed. Models load on first use and stay loaded until `release()`.
The notebook panels use this; it knows nothing about widgets.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from transformers import TextStreamer

from workbench.core.config import TRAINED_VARIANTS, VARIANTS, QuantSettings
from workbench.data import Encoded, Example, TextSource, encode
from workbench.engine import models, moved_base, score_cache
from workbench.engine.generate import EVAL_BATCH_SIZE, DecodeSettings, EvalResult, Generation, evaluate, generate
from workbench.engine.resolve import resolve_model
from workbench.machine import memory
from workbench.records.runs import Run


class TextCallbackStreamer(TextStreamer):
    """transformers' TextStreamer, handing the answer so far to a callback instead of printing it (it
    skips the prompt, and holds back a word until it is complete, as TextStreamer does)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text
        self.text = ""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        self.on_text(self.text)


class Session:
    """The variants of one model (and optionally one run's adapters), ready to answer."""

    def __init__(
        self,
        model_name: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        quant: QuantSettings | None = None,
        run_dir: str | Path | None = None,
    ):
        self.model_name = model_name
        self.device = device
        self.dtype = dtype
        self.quant = quant or QuantSettings(bits=4)
        self.run = Run(run_dir) if run_dir else None
        self._path: Path | None = None
        self._tokenizer = None
        self._models: dict[int, object] = {}  # bits -> model (a PeftModel when the run has an adapter)
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Session:
        """A session on the model, device and 4-bit settings a run used, with its adapters."""
        run = Run(run_dir)
        cfg = run.config()
        return cls(
            run.model_path or cfg.model.name,
            device=cfg.model.device,
            dtype=cfg.model.dtype,
            quant=cfg.quant,
            run_dir=run.path,
        )

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run else None

    # ------------------------------------------------------------------ what is there

    def adapter_dir(self, variant: str) -> Path | None:
        """The run's saved adapter for a variant; None when there is none."""
        if self.run is None or not self.run.has_adapter(variant):
            return None
        return self.run.adapter_dir(variant)

    def variants(self) -> list[str]:
        """Variants this session can answer with: base always, the others when the run saved their adapter."""
        return ["base"] + (self.run.trained_variants() if self.run else [])

    def missing_reason(self, variant: str) -> str | None:
        """Why a variant cannot answer, in a sentence that says what to do; None when it can."""
        if variant not in VARIANTS:
            return f"{variant!r} is not a variant; choose from {', '.join(VARIANTS)}"
        if variant == "base" or self.adapter_dir(variant) is not None:
            return None
        if self.run is None:
            return f"no {variant} adapter yet: train one first (Train tab or `workbench compare`)"
        return f"the run {self.run.name} has no {variant} adapter: train {variant} or pick another run"

    # ------------------------------------------------------------------ loading

    def _choice(self, bits: int = 16) -> models.DeviceChoice | None:
        try:
            return models.pick_device(self.device, self.dtype, bits)
        except ValueError:  # no such device here
            return None

    @property
    def base_dtype(self) -> str | None:
        """What the unquantized base is held in on this machine (None: no such device here)."""
        choice = self._choice()
        return choice.dtype_name if choice else None

    @property
    def device_type(self) -> str | None:
        """cpu, cuda or mps: where this session's models run (None: no such device here)."""
        choice = self._choice()
        return choice.type if choice else None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_model(self.model_name)
        return self._path

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = models.load_tokenizer(self.path)
        return self._tokenizer

    def model_for(self, variant: str):
        """(model, adapter_off) for a variant, loading the base at the variant's bits on first use."""
        reason = self.missing_reason(variant)
        if reason:
            raise ValueError(reason)
        bits = VARIANTS[variant].bits
        with self._lock:
            model = self._models.get(bits)
            if model is None:
                model, _ = models.load_model(
                    self.path, bits=bits, quant=self.quant, device=self.device, dtype=self.dtype
                )
                # the adapter trained on this precision; base shares the 16-bit lora model
                adapter_variant = next(v for v in TRAINED_VARIANTS if VARIANTS[v].bits == bits)
                adapter = self.adapter_dir(adapter_variant)
                if adapter is not None:
                    model = self._with_adapter(model, adapter, bits)
                model.eval()
                self._models[bits] = model
        return model, variant == "base"

    def _with_adapter(self, model, adapter: Path, bits: int):
        """The run's adapter on the loaded base. Where its init changed the base (PiSSA, OLoRA, LoftQ): at 16 bits,
        where base shares the model with its adapter off, as a plain adapter for the original base (the same
        weights, summed the other way); at 4 bits the run's base again (the init run anew)."""
        from peft import PeftModel

        cfg = self.run.config()
        if not moved_base.changed_base(cfg.lora, adapter):
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        if bits < 16:
            return moved_base.reproduce(model, cfg.lora, self.quant, cfg.train.seed, adapter, bits, self.path)
        with tempfile.TemporaryDirectory() as plain:
            moved_base.plain_adapter(adapter, Path(plain))
            return PeftModel.from_pretrained(model, plain, is_trainable=False)

    def release(self) -> None:
        """Drop every loaded model (before training, or to free memory)."""
        with self._lock:
            self._models.clear()
        memory.release()

    # ------------------------------------------------------------------ work

    def answer(
        self,
        variant: str,
        prompt: str,
        decode: DecodeSettings | None = None,
        *,
        chat: bool = True,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """One answer from one variant; on_text gets the text so far as each token arrives."""
        model, off = self.model_for(variant)
        streamer = TextCallbackStreamer(self.tokenizer, on_text) if on_text else None
        return generate(model, self.tokenizer, [prompt], decode, base=off, streamer=streamer, chat=chat)[0]

    def evaluate(
        self,
        variant: str,
        examples: list[Example] | TextSource,
        *,
        seq_len: int = 128,
        scoring: str = "exact_match",
        progress: Callable[[int, int, str], None] | None = None,
    ) -> EvalResult:
        """Score one variant (generate.evaluate), or read its scores back from the score cache (see scored);
        progress(done, total, unit) after each batch."""
        return self.scored(variant, examples, seq_len=seq_len, scoring=scoring, progress=progress)[0]

    def scored(
        self,
        variant: str,
        examples: list[Example] | TextSource,
        *,
        seq_len: int = 128,
        scoring: str = "exact_match",
        progress: Callable[[int, int, str], None] | None = None,
        keep: bool = True,
    ) -> tuple[EvalResult, score_cache.Entry | None]:
        """(the variant's scores, the score cache's entry they came from or None when scored now). They come from
        the cache (workbench.engine.score_cache) when this model, loaded this way, with an adapter of the same saved
        weights, was scored on these examples before (a run's base, a finished run's adapters, an earlier
        Evaluate), and go into it when not (unless `keep` is False: a round of a longer scoring)."""
        model, off = self.model_for(variant)
        key, encoded = self._score_key(variant, examples, seq_len, scoring)
        kept = score_cache.load(key)
        if kept is not None:
            if progress is not None:  # counted as a scoring counts it: all its examples done
                progress(len(encoded.rows), len(encoded.rows), "examples")
            return kept.result, kept
        ev = evaluate(
            model,
            self.tokenizer,
            examples,
            seq_len=seq_len,
            base=off,
            scoring=scoring,
            encoded=encoded,
            batch_size=EVAL_BATCH_SIZE,
            progress=progress,
        )
        if keep:
            score_cache.store(key, ev)
        return ev, None

    def kept(self, variant: str, examples, *, seq_len: int = 128, scoring: str = "exact_match"):
        """The score cache's entry for this variant on these examples, or None; scores nothing."""
        return score_cache.load(self._score_key(variant, examples, seq_len, scoring)[0])

    def keep(self, variant: str, examples, result: EvalResult, *, seq_len: int = 128, scoring: str = "exact_match"):
        """Put scores made some other way (rounds of the same examples, joined) into the score cache."""
        score_cache.store(self._score_key(variant, examples, seq_len, scoring)[0], result)

    def _score_key(self, variant: str, examples, seq_len: int, scoring: str) -> tuple[dict, Encoded]:
        """(the score cache's key for this variant on these examples, the examples encoded)."""
        model, off = self.model_for(variant)
        encoded = encode(self.tokenizer, examples, seq_len)
        adapter = None if off else self.adapter_dir(variant)
        bits = VARIANTS[variant].bits
        variant_key = score_cache.variant_key(
            self.path, model, bits=bits, quant=self.quant, choice=self._choice(bits), adapter=adapter
        )
        key = score_cache.scores_key(
            variant_key, "eval", encoded, examples, scoring=scoring, batch_size=EVAL_BATCH_SIZE
        )
        return key, encoded
