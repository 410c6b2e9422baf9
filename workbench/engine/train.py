"""The training loop: AdamW on the adapter, events to sinks, a stop flag read between steps.

In several processes (distributed.World, as torchrun or accelerate launch start them) each trains its share of
every global batch under DistributedDataParallel, and the steps are the ones a single process would take on
the whole batch (see _Shares)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from workbench.core.config import TrainSettings
from workbench.core.events import MetricEvent, Sink
from workbench.data import Encoded, Example, TextSource, collate, encode
from workbench.engine.models import scored_loss
from workbench.machine.allocator import configure as configure_allocator
from workbench.machine.distributed import World
from workbench.machine.memory import MemoryMonitor
from workbench.records.runs import TrainState


@dataclass
class TrainResult:
    steps_done: int
    stopped: bool
    losses: list[float]
    train_seconds: float
    tokens_per_second: float
    peak_memory_bytes: int
    state: TrainState | None = None
    init: object | None = None  # the adapter's start (engine.inits.InitReport), when not peft's default

    @property
    def final_loss(self) -> float | None:
        # mean of the last few steps: one batch's loss is noisy
        tail = self.losses[-5:]
        return sum(tail) / len(tail) if tail else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warmup to the peak rate, then linear decay to 10% of it (step counts from 0)."""
    if settings.warmup_steps and step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    done = (step - settings.warmup_steps) / span
    return settings.lr * (1.0 - 0.9 * min(1.0, done))


def batches(rows: list[dict], batch_size: int, seed: int) -> Iterable[list[dict]]:
    """Endless seeded epochs of shuffled batches."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more
        yield [rows[i] for i in order[:batch_size]]
        del order[:batch_size]


LR_SCALE = "lr_scale"  # a param group's share of the scheduled learning rate (LoRA+ gives B's group its ratio)


def make_optimizer(model, params: list, lr: float, loraplus_ratio: float = 1.0) -> torch.optim.Optimizer:
    """AdamW on the adapter; with a LoRA+ ratio other than 1, peft's LoRA+ groups (B learns `loraplus_ratio` times
    faster than A), each group marked with its share of the schedule's rate."""
    if loraplus_ratio == 1.0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    from peft.optimizers import create_loraplus_optimizer

    optimizer = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=loraplus_ratio, weight_decay=0.0
    )
    for group in optimizer.param_groups:
        group[LR_SCALE] = group["lr"] / lr
    return optimizer


def train(
    model,
    tokenizer,
    examples: list[Example] | TextSource | Encoded,
    settings: TrainSettings,
    *,
    variant: str = "lora",
    sinks: Iterable[Sink] = (),
    stop: threading.Event | None = None,
    monitor: MemoryMonitor | None = None,
    resume: TrainState | None = None,
    world: World | None = None,
    loraplus_ratio: float = 1.0,
) -> TrainResult:
    """Train the model's trainable parameters (the LoRA adapter) up to settings.steps steps.

    The stop flag is read between optimizer steps, so a stop ends training within one step
    and the adapter keeps everything learned so far; a KeyboardInterrupt (a kernel interrupt) during a step's
    forward or backward is a stop too, and sets the flag. `examples` may be encoded already (data.encode).
    `resume`: the state a run saved with its adapter (already loaded into the model): training continues
    from that step as if it had never stopped. The result's `state` is where it now stands.
    `world`: the processes training together (default: the process group in force, a world of one when there
    is none); settings.batch_size is then each one's share, and every process gets the same events.
    `loraplus_ratio`: LoRA+'s learning rate of B over A's (1: plain LoRA).
    """
    sinks = list(sinks)
    stop = stop or threading.Event()
    device = next(p.device for p in model.parameters())
    if device.type == "cpu":
        configure_allocator()  # models loaded elsewhere too (see workbench.machine.allocator)
    own_monitor = monitor is None
    monitor = monitor or MemoryMonitor(device).start()
    world = world or World.current()
    # each process its own dropout masks (rank 0's are a single process's); the batches have their own seed
    seed_everything(settings.seed + world.rank)
    # an example whose prompt fills seq_len has no answer token left to learn from
    # (data.length_report tells the user how many before training starts)
    rows = encode(tokenizer, examples, settings.seq_len).trainable()
    if not rows:
        raise ValueError(f"seq_len: {settings.seq_len} tokens cut off every answer; raise seq_len")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; attach a LoRA adapter first")
    optimizer = make_optimizer(model, params, settings.lr, loraplus_ratio)
    feed = batches(rows, settings.batch_size * world.world_size, settings.seed)
    shares = _Shares(model, world, device) if world.distributed else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    first = 0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        first = resume.step
        for _ in range(first * settings.grad_accum):  # the batches already trained on, in the same order
            next(feed)
        torch.set_rng_state(resume.torch_rng)
        random.setstate(resume.python_rng)

    model.train()
    losses: list[float] = []
    tokens_seen = 0
    start = time.perf_counter()
    for step in range(first, settings.steps):
        # in several processes they all stop at the same step: the others would wait for this one forever
        if world.any(stop.is_set(), device):
            stop.set()
            break
        lr = lr_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get(LR_SCALE, 1.0)
        step_loss = 0.0
        step_tokens = 0
        try:
            for micro in range(settings.grad_accum):
                if shares is not None:
                    loss, tokens = shares.step(next(feed), pad_id, last=micro == settings.grad_accum - 1)
                    step_loss += loss / settings.grad_accum
                    step_tokens += tokens
                    continue
                batch = {k: v.to(device) for k, v in collate(next(feed), pad_id).items()}
                # the head runs on the labelled positions only (models.scored_loss): on answer-only data most
                # positions are prompt, and their vocabulary-wide logits would feed nothing
                loss = scored_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
                (loss / settings.grad_accum).backward()
                # note: .item() is a CPU-GPU sync point; once per micro-batch is cheap next to a backward
                step_loss += loss.item() / settings.grad_accum
                # the loss holds the graph; its nodes can hold tensors beyond the saved ones (bitsandbytes'
                # 8-bit layers keep their input as ctx.A), so it goes before the next forward too
                del loss
                step_tokens += int(batch["attention_mask"].sum())
        except KeyboardInterrupt:
            # a kernel interrupt before the update: the weights are still the last step's, so this is a Stop
            # (the half-done step dropped); the caller's stop flag is set so no further variant starts
            optimizer.zero_grad(set_to_none=True)
            stop.set()
            break
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(step_loss):
            raise RuntimeError(f"training diverged at step {step + 1} (loss {step_loss}); lower the learning rate")
        tokens_seen += step_tokens
        losses.append(step_loss)
        elapsed = time.perf_counter() - start
        event = MetricEvent(
            variant=variant,
            step=step + 1,
            total_steps=settings.steps,
            loss=step_loss,
            lr=lr,
            tokens_per_second=tokens_seen / elapsed if elapsed > 0 else 0.0,
            memory_bytes=monitor.now(),
            peak_memory_bytes=monitor.peak(),
            elapsed_s=elapsed,
        )
        for sink in sinks:
            sink(event)
    # captured before anything else draws random numbers: a continued run starts from exactly here
    done = first + len(losses)
    state = TrainState(done, optimizer.state_dict(), torch.get_rng_state(), random.getstate())
    if shares is not None:
        shares.close()
    model.eval()
    elapsed = time.perf_counter() - start
    peak = monitor.peak()
    if own_monitor:
        monitor.stop()
    return TrainResult(
        steps_done=done,
        stopped=done < settings.steps,
        losses=losses,
        train_seconds=elapsed,
        tokens_per_second=tokens_seen / elapsed if elapsed > 0 else 0.0,
        peak_memory_bytes=peak,
        state=state,
    )


class _LossOf(torch.nn.Module):
    """The summed loss as a module's forward: DistributedDataParallel syncs the gradients of what runs through
    its wrapper's forward, and scored_loss reaches into the model (body, then head) rather than calling it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels):
        return scored_loss(self.model, input_ids, attention_mask, labels, reduction="sum")


class _Shares:
    """Each process's share of every global batch, trained so that the step is a single process's on it.

    Every process draws the same global batches (one seed) and takes its own slice, so which examples a
    step sees does not depend on the number of processes. DDP averages the gradients over processes; each
    loss is its share's summed loss times the world size over the global batch's count of labelled tokens,
    so the average is the gradient of the whole batch's mean loss, as one process computes it. The
    logged loss is summed over the processes the same way."""

    def __init__(self, model, world: World, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel

        self.world, self.device = world, device
        wrapped = _LossOf(model)
        # every process loaded the same checkpoint: only the adapter (seeded alike, but now exactly alike)
        # is broadcast from rank 0, not the frozen base (bitsandbytes' packed weights included)
        frozen = [f"model.{n}" for n, p in model.named_parameters() if not p.requires_grad]
        frozen += [f"model.{n}" for n, _ in model.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapped, frozen)
        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        self.ddp = DistributedDataParallel(wrapped, device_ids=ids)

    def step(self, rows: list[dict], pad_id: int, last: bool) -> tuple[float, int]:
        """Forward and backward this process's share of one global micro-batch; returns the global batch's mean
        loss and its tokens. The gradients are synced on the last micro-batch of a step only."""
        whole = collate(rows, pad_id)
        labelled = int((whole["labels"][:, 1:] != -100).sum())
        share = len(rows) // self.world.world_size
        mine = rows[self.world.rank * share : (self.world.rank + 1) * share]
        batch = {k: v.to(self.device) for k, v in collate(mine, pad_id).items()}
        with nullcontext() if last else self.ddp.no_sync():
            summed = self.ddp(batch["input_ids"], batch["attention_mask"], batch["labels"])
            (summed * (self.world.world_size / labelled)).backward()
        loss = self.world.total(summed.detach()).item() / labelled
        return loss, int(whole["attention_mask"].sum())

    def close(self) -> None:
        del self.ddp  # its hooks go with it: evaluating and answering need no gradient sync
