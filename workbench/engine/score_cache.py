"""Scores kept between runs: what a variant scores is a function of the model's weights, how they were loaded,
the adapter, the examples and the scoring code, so once scored it is kept in $WORKBENCH_HOME/scores under a
digest of all of those, and read back by every later run and Evaluate that asks for the same, in any process
or kernel (a sweep's points score only their new adapters, so they find nothing to reuse). Whatever changes the
numbers changes the digest: a miss, scored afresh.

- The model: its resolved folder and each top-level file's name, size and modification time (in ns). Not a
  content hash: a 7B model's 14 GB would be read and hashed on every run (tens of seconds), while a copy or a
  rewrite gives the files new times anyway (a miss); only an edit made to keep both size and time fools it.
- Loading: bits (and the 4-bit settings at 4), the dtype, the device (a GPU by its name), and the dtypes
  the model's own parameters ended up in (peft's k-bit preparation casts some to float32 where it trains).
- The adapter: none for a base; a SHA-256 of its saved files (small: MiBs), so a copied run still hits.
- The examples: each one's generate.example_key, the seq_len and a digest of the token ids scored.
- The scoring: the task's scoring, the batch size, SCORE_VERSION, a digest of the scoring code's source and
  the versions of torch, transformers, peft (and bitsandbytes below 16 bits).

Entries are JSON (no pickle: a home folder may be shared, and reading one must never run code), each written
whole to a temp file and renamed (workbench.core.files.write_json), so two processes writing one entry leave one
whole entry and a reader never sees half of one; an entry that cannot be read, or holds another key, is a miss.
Delete $WORKBENCH_HOME/scores to clear it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from workbench.core.files import write_json
from workbench.core.paths import workbench_home
from workbench.data import Encoded, Example, TextSource
from workbench.engine.generate import EvalResult, example_key

log = logging.getLogger(__name__)

# bump when scoring changes its results in a way the source digest below cannot see (a dependency's behaviour)
SCORE_VERSION = 1
# the modules whose code turns a loaded model and its encoded examples into scores: any edit to them is a miss
SCORING_MODULES = ("workbench.engine.generate", "workbench.engine.models", "workbench.data.scoring")
ADAPTER_MARK = "lora_"  # peft's adapter parameters (lora_A, lora_B, lora_magnitude_vector, ...)


def cache_dir() -> Path:
    return workbench_home() / "scores"


# --------------------------------------------------------------------------- what the scores depend on


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the scoring modules' source, as this process loaded them (read once: the code running is the
    code imported, even if the files change later)."""
    h = hashlib.sha256()
    for name in SCORING_MODULES:
        spec = importlib.util.find_spec(name)
        try:
            h.update(Path(spec.origin).read_bytes() if spec and spec.origin else name.encode())
        except OSError:  # only bytecode installed: SCORE_VERSION alone stands for the code
            h.update(name.encode())
    return h.hexdigest()


@lru_cache(maxsize=2)
def libraries(quantized: bool) -> dict[str, str]:
    """The versions of the libraries whose kernels compute the scores: an upgrade can move their last digits."""
    out = {}
    for name in ("torch", "transformers", "peft") + (("bitsandbytes",) if quantized else ()):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def model_files(path: Path) -> list[list]:
    """[name, size, mtime_ns] of each file at the top of a model folder (links followed: the Hugging Face cache
    links its snapshots to blobs); dot-named files are a tool's bookkeeping, not the model."""
    out = []
    for entry in sorted(Path(path).iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        st = entry.stat()
        out.append([entry.name, st.st_size, st.st_mtime_ns])
    return out


def adapter_digest(folder: Path) -> str:
    """SHA-256 of a saved adapter's own files (peft's adapter_config.json and adapter weights), not of the
    training state saved beside them: that moves on without changing what the adapter scores."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("adapter_*")):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _dtypes(model, adapter: bool) -> list[str]:
    return sorted({str(p.dtype) for n, p in model.named_parameters() if (ADAPTER_MARK in n) == adapter})


def variant_key(
    path: Path, model, *, bits: int, quant, choice, adapter: Path | None = None, parameters: list[str] | None = None
) -> dict:
    """What a loaded variant's scores depend on besides the examples: the model folder, how it was loaded
    (`quant`: config.QuantSettings, read at 4 bits only; `choice`: models.DeviceChoice) and its adapter
    (a saved adapter's folder; None for the base, i.e. the adapter off). `parameters`: the dtypes of the
    model's own parameters where no model is loaded yet (a plan asking whether a base's scores are kept)."""
    loading = {
        "bits": bits,
        "dtype": choice.dtype_name,
        "device": choice.describe(),
        "parameters": parameters if model is None else _dtypes(model, False),
    }
    if bits == 4:  # only 4-bit layers read these: a run that changes them alone still reuses the 16-bit base's
        loading["quant"] = {
            "quant_type": quant.quant_type,
            "double_quant": quant.double_quant,
            "compute_dtype": quant.compute_dtype,
        }
    return {
        "version": SCORE_VERSION,
        "code": code_digest(),
        "libraries": libraries(bits < 16),
        "model": {"path": str(Path(path).resolve()), "files": model_files(path)},
        "loading": loading,
        "adapter": None if adapter is None else {"files": adapter_digest(adapter), "parameters": _dtypes(model, True)},
    }


def scores_key(
    variant: dict,
    what: str,
    encoded: Encoded,
    examples: list[Example] | TextSource | None = None,
    *,
    scoring: str,
    batch_size: int,
    **method,
) -> dict:
    """The whole key of one set of scores: `variant` (variant_key), `what` ("eval" or "general"), the examples as
    encoded for scoring (`examples`: the Example list they came from; None or a TextSource for blocks of text,
    named by their token ids as generate.evaluate names them) and how they are scored: `scoring`, `batch_size`
    and in `method` any other setting a caller passes to generate.evaluate that changes what it scores."""
    named = encoded.rows if examples is None or isinstance(examples, TextSource) else examples
    rows = [[r["input_ids"], r["labels"]] for r in encoded.rows]
    return {
        **variant,
        "what": what,
        "examples": {"keys": [example_key(e) for e in named], "seq_len": encoded.seq_len, "tokens": _digest(rows)},
        "method": {"scoring": scoring, "batch_size": batch_size, **method},
    }


# --------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """Scores read back from the cache: the evaluation as it was, when it was scored, and the memory it took."""

    result: EvalResult
    scored_at: float  # seconds since the epoch
    peak_memory_bytes: int | None = None  # what the run that scored it measured (None: not measured)

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.scored_at).strftime("%Y-%m-%d %H:%M")

    def said(self, variant: str, what: str) -> str:
        """The line a run or Evaluate shows: "base: scores from the cache (600 examples, scored 2026-12-05 14:03)"."""
        return f"{variant}: scores from the cache ({what}, scored {self.when}); not scored again"


def entry_file(key: dict) -> Path:
    return cache_dir() / f"{_digest(key)[:40]}.json"


def load(key: dict) -> Entry | None:
    """The entry kept under key, or None: none kept, damaged, half a foreign file, or (a digest's prefix shared)
    another key's. Never raises: the cache only ever saves work."""
    try:
        doc = json.loads(entry_file(key).read_text(encoding="utf-8"))
        if _digest(doc["key"]) != _digest(key):
            return None
        fields = doc["result"]
        result = EvalResult(**fields)
        keys = key["examples"]["keys"]
        # what the paired comparisons read must name the examples asked for, one score each
        if result.keys != keys or len(result.losses) != len(keys) or len(result.tokens) != len(keys):
            return None
        float(result.eval_loss)
        peak = doc.get("peak_memory_bytes")
        return Entry(result, float(doc["scored_at"]), int(peak) if peak is not None else None)
    except Exception:  # noqa: BLE001 - missing, damaged or another version's: a miss, scored afresh
        return None


def store(key: dict, result: EvalResult, peak_memory_bytes: int | None = None) -> None:
    """Keep result under key, whole or not at all; a home that cannot be written only means no reuse."""
    doc = {
        "key": key,
        "scored_at": time.time(),
        "peak_memory_bytes": peak_memory_bytes,
        "result": dataclasses.asdict(result),
    }
    try:
        write_json(entry_file(key), doc)
    except (OSError, TypeError, ValueError) as exc:
        log.warning("scores not kept for reuse in %s: %s", cache_dir(), exc)
