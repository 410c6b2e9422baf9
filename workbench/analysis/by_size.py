"""Where QLoRA's saving comes from, across model sizes: the estimator's peak, by component, for LoRA and QLoRA
on every shipped model config (data/model_configs/), from the configs alone (meta device, no weights).

QLoRA shrinks the weights about 4x and nothing else: the adapter, its gradients and AdamW state stay float32,
and after peft's k-bit preparation the activation stream is float32 too. So the saving is large where the
weights dominate the peak (big models, short batches) and small, or negative, where activations and the loss's
vocabulary-sized tensors do (small models, long batches): the crossover is what the chart marks.

    from workbench.analysis import by_size
    table = by_size.by_model(rank=16, batch_size=8, seq_len=512)
"""

from __future__ import annotations

from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.engine.estimator import estimate
from workbench.engine.layout import ModelLayout
from workbench.engine.resolve import EMBEDDED_NAMES, MODEL_ALIASES
from workbench.records import scan

# The estimator's components, grouped as the chart shows them: what a bigger model scales (weights), what the
# rank scales (adapter, its gradients, AdamW's two moments), what the tokens scale (activations, the loss), and
# what neither does (the CPU's runtime constant; a 4-bit load on the CPU, when that is the peak).
GROUPS = {
    "weights": ("weights", "weights (quantized layers)", "weights (kept in full precision)"),
    "adapter + grads + optimizer": ("adapter", "gradients", "optimizer state"),
    "activations": ("activations",),
    "logits and loss": ("logits and loss",),
    "runtime": ("runtime (CPU)", "kept by glibc (freed activations)", "loading (checkpoint read while quantizing)"),
}
VARIANT_NAMES = ("lora", "qlora")


def shipped_models() -> list[str]:
    """The short names of the shipped configs (resolve.MODEL_ALIASES), smallest model first."""
    return sorted(MODEL_ALIASES, key=lambda a: ModelLayout.for_model(a).total_params)


def by_model(
    names: list[str] | None = None,
    *,
    variants: tuple[str, ...] = VARIANT_NAMES,
    rank: int = 16,
    batch_size: int = 8,
    seq_len: int = 512,
    gradient_checkpointing: bool = False,
    device_type: str = "cuda",
    targets="all-linear",
    double_quant: bool = True,
):
    """One row per model and variant, smallest model first: each GROUPS component in bytes, `total` (the
    estimate's), `weights_share` (of the total) and `vs_lora` (the total over the same model's LoRA total).

    The device defaults to cuda (bfloat16 base): the big configs are GPU models, and on the CPU the base
    would be float32 with a runtime constant measured on the 135M model."""
    import pandas as pd

    rows = []
    for name in names or shipped_models():
        layout = ModelLayout.for_model(name)
        for v in variants:
            est = estimate(
                layout,
                bits=VARIANTS[v].bits,
                rank=rank,
                targets=targets,
                batch_size=batch_size,
                seq_len=seq_len,
                gradient_checkpointing=gradient_checkpointing,
                device_type=device_type,
                double_quant=double_quant,
            )
            parts = {g: sum(est.components.get(c, 0) for c in comps) for g, comps in GROUPS.items()}
            unknown = set(est.components) - {c for comps in GROUPS.values() for c in comps}
            if unknown:  # a new estimator term must be placed in a group, not silently left out of the chart
                raise ValueError(f"sizes: no group for the estimator's {', '.join(sorted(unknown))}")
            rows.append(
                {"model": name, "params": layout.total_params, "variant": v, "bits": VARIANTS[v].bits}
                | parts
                | {"total": est.total}
            )
    df = pd.DataFrame(rows)
    df["weights_share"] = df["weights"] / df["total"]
    lora = df[df.variant == "lora"].set_index("model")["total"] if "lora" in variants else None
    df["vs_lora"] = df["total"] / df["model"].map(lora) if lora is not None else float("nan")
    return df.sort_values(["params", "model"], kind="stable").reset_index(drop=True)


def crossover(df, variant: str = "lora") -> str | None:
    """The smallest model from which on (it and every larger one) the weights outweigh what the tokens cost
    (activations plus the loss's tensors) for `variant`: where weights take over, going up in size. None
    when no model gets there; the smallest one when all do."""
    rows = df[df.variant == variant].sort_values("params", kind="stable")
    found = None
    for _, r in rows.iloc[::-1].iterrows():  # from the largest down, while the weights still dominate
        if r["weights"] <= r["activations"] + r["logits and loss"]:
            break
        found = r["model"]
    return found


def _is_embedded(model_name: str) -> bool:
    # the embedded model runs under its Hugging Face name or from its converted folder
    # (SmolLM2-135M-Instruct-Q4_1-dequantized): both name the 135M model
    name = str(model_name).strip().lower()
    return name in EMBEDDED_NAMES or "smollm2-135m" in Path(name).name


def measured(root: Path) -> list[dict]:
    """The measured peaks of LoRA and QLoRA on the embedded 135M model among the runs under `root`, newest
    first: variant, peak bytes, the run, its device and shape, and for QLoRA `lora_peak` and `vs_lora`, from
    the newest LoRA run at the same settings (device, batch, length, rank, targets, checkpointing), or None.
    Paired across runs, not within one: a sweep writes each variant in a run folder of its own."""

    out = []
    configs: dict[str, object] = {}
    for row in scan.all_results(Path(root)):
        res = row.result
        if res.name not in VARIANT_NAMES or not res.peak_memory_bytes:
            continue
        if row.run not in configs:
            configs[row.run] = RunConfig.from_dict(row.config)
        cfg = configs[row.run]
        if not _is_embedded(cfg.model.name):
            continue
        shape = (cfg.train.batch_size, cfg.train.seq_len, cfg.train.gradient_checkpointing)
        targets = res.target_modules if isinstance(res.target_modules, str) else "+".join(res.target_modules or [])
        out.append(
            {
                "run": row.run,
                "variant": res.name,
                "peak_memory_bytes": res.peak_memory_bytes,
                "device": row.device or "",
                "batch_size": cfg.train.batch_size,
                "seq_len": cfg.train.seq_len,
                "rank": res.rank,
                "key": (row.device, *shape, res.rank, targets),
            }
        )
    lora: dict[tuple, int] = {}
    for m in reversed(out):  # oldest first, so the newest LoRA at each setting is the one kept
        if m["variant"] == "lora":
            lora[m["key"]] = m["peak_memory_bytes"]
    for m in out:
        m["lora_peak"] = lora.get(m["key"])
        m["vs_lora"] = m["peak_memory_bytes"] / m["lora_peak"] if m["lora_peak"] else None
    return out


def describe(device_type: str, batch_size: int, seq_len: int, rank: int, gradient_checkpointing: bool) -> str:
    """The settings a chart was estimated at, as its title says them."""
    base = "GPU, bf16 base" if device_type == "cuda" else "CPU, float32 base"
    return f"{base}, batch {batch_size}×{seq_len}, r={rank}" + (", checkpointing" if gradient_checkpointing else "")


def save_chart(path: Path, runs_root: Path = Path("runs"), **settings) -> Path:
    """docs/memory.md's figure: the chart at `settings` (by_model's; its defaults and checkpointing otherwise),
    with the measured runs under runs_root, saved to `path`."""
    from workbench.analysis.plots import qlora_saving_figure
    from workbench.core.files import save_figure

    settings = {"gradient_checkpointing": True, **settings}
    table = by_model(**settings)
    label = describe(
        settings.get("device_type", "cuda"),
        settings.get("batch_size", 8),
        settings.get("seq_len", 512),
        settings.get("rank", 16),
        settings["gradient_checkpointing"],
    )
    crossovers = {v: crossover(table, v) for v in VARIANT_NAMES}
    return save_figure(qlora_saving_figure(table, crossovers, measured(runs_root), label), path)
