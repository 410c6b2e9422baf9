"""Scores a run need not compute again: the base's, looked up in the score cache (engine.score_cache) before
it is scored, and a trained adapter's, kept under its saved weights' digest for the Compare tab's Evaluate;
and, before anything loads, whether a plan can say the base's scores are kept.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.core.config import VARIANTS, RunConfig
from workbench.data import encode, task_for
from workbench.engine import models, score_cache
from workbench.engine.generate import EVAL_BATCH_SIZE, GENERAL_BATCH_SIZE, EvalResult
from workbench.engine.resolve import resolve_model

if TYPE_CHECKING:
    from workbench.experiments.run_setup import RunSetup

log = logging.getLogger(__name__)


def base_keys(s: RunSetup, model) -> dict[str, dict]:
    """The score cache's keys of the base's scores on the eval split ("eval") and on the general text
    ("general", where it is shipped), for `model` as loaded for this run."""
    bits = VARIANTS["base"].bits
    variant = score_cache.variant_key(s.path, model, bits=bits, quant=s.cfg.quant, choice=s.choice_for(bits))
    keys = {"eval": eval_key(s, variant)}
    if s.general_rows is not None:
        keys["general"] = score_cache.scores_key(
            variant, "general", s.general_rows, scoring="text", batch_size=GENERAL_BATCH_SIZE
        )
    return keys


def base_kept(cfg: RunConfig) -> score_cache.Entry | None:
    """The score cache's entry for this config's base on its eval examples, found before any weight loads, so
    the plan can say the base will not be scored again; None when none is kept, when the config has no base
    or the model is not on disk yet. An unquantized base holds every parameter in its dtype, so its key is
    known without loading it (a wrong guess only means the plan does not say so)."""
    if "base" not in cfg.variants:
        return None
    try:
        task = task_for(cfg)
        examples = task.eval_split(cfg.train.eval_examples, preset=cfg.train.eval_examples_from_preset)
        path = resolve_model(cfg.model.name, convert=False)
        bits = VARIANTS["base"].bits
        choice = models.pick_device(cfg.model.device, cfg.model.dtype, bits)
        encoded = encode(_tokenizer(path), examples, cfg.train.seq_len)
        variant = score_cache.variant_key(
            path, None, bits=bits, quant=cfg.quant, choice=choice, parameters=[str(choice.dtype)]
        )
        key = score_cache.scores_key(
            variant, "eval", encoded, examples, scoring=task.scoring, batch_size=EVAL_BATCH_SIZE
        )
        return score_cache.load(key)
    except Exception:  # noqa: BLE001 - a plan only: anything unreadable means "not known to be kept"
        return None


def kept_sentence(cfg: RunConfig) -> str:
    """What a plan says when the base's scores will come from the score cache ("" when they will not)."""
    entry = base_kept(cfg)
    if entry is None:
        return ""
    n = len(entry.result.keys)
    return f"the base's scores on these {n:,} examples are kept (scored {entry.when}): not scored again"


@functools.lru_cache(maxsize=4)
def _tokenizer(path: Path):
    return models.load_tokenizer(path)


def eval_key(s: RunSetup, variant: dict) -> dict:
    return score_cache.scores_key(
        variant, "eval", s.eval_rows, s.eval_set, scoring=s.task.scoring, batch_size=EVAL_BATCH_SIZE
    )


def keep_adapter_scores(s: RunSetup, model, name: str, adapter_dir: Path, ev: EvalResult) -> None:
    """A trained adapter's eval scores into the score cache under its saved weights' digest: new weights, so
    nothing to look up, but the Compare tab's Evaluate of this run reads them back instead of scoring again."""
    try:
        bits = VARIANTS[name].bits
        variant = score_cache.variant_key(
            s.path, model, bits=bits, quant=s.cfg.quant, choice=s.choice_for(bits), adapter=adapter_dir
        )
        score_cache.store(eval_key(s, variant), ev)
    except OSError as exc:  # the adapter could not be read back: only Evaluate's reuse is lost, not the run
        log.warning("%s: scores not kept for reuse (%s)", name, exc)
