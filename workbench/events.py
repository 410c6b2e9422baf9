"""What running work tells its watchers: one MetricEvent per optimizer step, handed to sinks.

A sink is any callable taking a MetricEvent: the live plots, the progress bar, metrics.csv and the
CLI's table all get the same rows. This module imports nothing of workbench, so the training loop
(which emits events) and the run files (which store them) can both import it from below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields


@dataclass
class MetricEvent:
    """One optimizer step of one variant; every sink (plot, CSV, progress bar, table) gets the same row."""

    variant: str
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_second: float
    memory_bytes: int
    peak_memory_bytes: int
    elapsed_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


Sink = Callable[[MetricEvent], None]


def progress_sink() -> Sink:
    """A tqdm bar per variant for the terminal and notebooks (tqdm.auto picks the right one)."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def sink(e: MetricEvent) -> None:
        bar = bars.get(e.variant)
        if bar is None:
            bar = bars[e.variant] = tqdm(total=e.total_steps, desc=f"train {e.variant}", unit="step", leave=True)
        bar.update(e.step - bar.n)
        bar.set_postfix(loss=f"{e.loss:.3f}", mem=f"{e.memory_bytes / 2**20:.0f}MiB")
        if e.step >= e.total_steps:
            bar.close()

    return sink
