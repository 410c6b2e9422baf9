"""One experiment: one trained variant, its settings in a YAML file, run in one process or in many.

`workbench train CONFIG.yaml` reads a RunConfig written as YAML (`write_config`, the Train tab's *Export run*)
and trains its one variant with experiments.phases into the same run folder a comparison writes. Started by
`torchrun` or `accelerate launch` (`launch_command` gives the line), every process trains its share of each
global batch (engine.train, under DistributedDataParallel) and rank 0 alone writes files, scores and answers.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import VARIANTS, RunConfig
from workbench.core.events import Hooks
from workbench.core.files import check_writable_dir, write_text
from workbench.engine.resolve import resolve_model
from workbench.experiments.phases import load_group, run_trained, train_variant
from workbench.experiments.run_setup import check_fit, planned_stages, setup, start_result, unfinished_result
from workbench.experiments.skeleton import run_skeleton
from workbench.machine import admission, memory
from workbench.machine.distributed import World
from workbench.records.results import CompareResult
from workbench.records.runs import Run, default_user

log = logging.getLogger(__name__)

LAUNCHERS = ("accelerate", "torchrun")


# --------------------------------------------------------------------------- the config file


def to_yaml(cfg: RunConfig) -> str:
    """The settings as YAML, every field written out (RunConfig.to_dict), so the file says what will run."""
    import yaml

    head = (
        "# One workbench experiment: workbench.core.config.RunConfig as YAML, one trained variant.\n"
        "# Run it with `workbench train THIS.yaml`; on several GPUs or machines see docs/scale.md.\n"
    )
    return head + yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def from_yaml(path: str | Path) -> RunConfig:
    """A RunConfig from a YAML file; a missing file, broken YAML or a wrong setting is a ValueError naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: {path} is not a file; give a YAML file such as the one Export run writes")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"config: {path} is not text; give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"config: {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"config: {path} must hold settings (model, lora, train, ...); got {type(doc).__name__}")
    return RunConfig.from_dict(doc)


def write_config(cfg: RunConfig, path: str | Path) -> Path:
    """The settings as a YAML file, written whole or not at all; checked first: one trained variant."""
    trained_variant(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, to_yaml(cfg))


def trained_variant(cfg: RunConfig) -> str:
    """The one variant an experiment trains; ValueError when the config names none, several, or base too."""
    trained = [v for v in cfg.variants if VARIANTS[v].trained]
    if len(trained) != 1 or len(cfg.variants) != 1:
        raise ValueError(
            f"variants: an experiment trains exactly one of lora, lora8 or qlora; got {','.join(cfg.variants)} "
            "(compare several with workbench compare)"
        )
    return trained[0]


def for_variant(cfg: RunConfig, name: str) -> RunConfig:
    """The same settings training `name` alone (the Train tab exports one experiment per trained variant)."""
    return RunConfig.from_dict({**cfg.to_dict(), "variants": [name]})


def launch_command(path: str | Path, processes: int, launcher: str = "accelerate") -> str:
    """The shell line that trains the experiment in `path` in `processes` processes on this machine.

    accelerate starts several processes only with --multi_gpu (without it a machine with fewer than two GPUs
    gets one); that flag also serves CPUs, where the processes use gloo. Port 0 lets the launcher pick a free
    port, so two experiments on one machine never collide (torchrun's --standalone does the same)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a whole number of at least 1; got {processes!r}")
    target = f"-m workbench.cli train {shlex.quote(str(path))}"
    if launcher == "accelerate":
        spread = "--multi_gpu " if processes > 1 else ""
        return f"accelerate launch {spread}--num_processes {processes} --main_process_port 0 {target}"
    if launcher == "torchrun":
        return f"torchrun --standalone --nproc_per_node {processes} {target}"
    raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")


def check_launch(env: dict | None = None) -> None:
    """Refuse an accelerate config that asks for FSDP or DeepSpeed: this loop trains data-parallel (DDP) only,
    and running DDP under such a config would quietly hold the whole model on every device."""
    env = os.environ if env is None else env
    for key, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if env.get(key, "").strip().lower() in ("1", "true"):
            raise ValueError(
                f"distributed_type: workbench train runs data-parallel (DDP) only, and this accelerate config asks "
                f"for {name}; launch without it (docs/scale.md says how to run FSDP-QLoRA)"
            )


# --------------------------------------------------------------------------- the run


@dataclass
class ExperimentResult(CompareResult):
    """A comparison's result, with how many processes trained it and the batch each optimizer step saw."""

    world_size: int = 1
    backend: str = ""  # gloo, nccl, or "" in one process
    per_device_batch: int = 0
    grad_accum: int = 1

    @property
    def global_batch(self) -> int:
        return self.per_device_batch * self.world_size * self.grad_accum

    def to_json(self) -> dict:
        return {
            **super().to_json(),
            "world_size": self.world_size,
            "backend": self.backend,
            "per_device_batch": self.per_device_batch,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
        }

    def describe_batch(self) -> str:
        """'global batch 8 = 4 per device × 2 processes × 1 accumulation (gloo)'."""
        how = f" ({self.backend})" if self.backend else ""
        processes = "process" if self.world_size == 1 else "processes"
        return (
            f"global batch {self.global_batch} = {self.per_device_batch} per device × {self.world_size} {processes}"
            f" × {self.grad_accum} accumulation{how}"
        )


def run_experiment(
    cfg: RunConfig,
    out_dir: str | Path,
    hooks: Hooks | None = None,
    *,
    fit_check: bool = True,
    command: str = "",
    backend: str = "",
) -> ExperimentResult | None:
    """Train cfg's one variant in this process's share (all of it alone) and, on rank 0, write the run folder.

    Every process reads the data and loads the model; rank 0 alone gets the hooks' sinks, status and progress,
    writes metrics.csv, the adapter (once), results.json with the global batch, the figures and the answers,
    and returns the result (the other ranks return None once their share is trained)."""
    name = trained_variant(cfg)
    world = World.current()
    hooks = hooks or Hooks()
    hooks = (hooks if world.is_main else hooks.quiet()).counted(planned_stages(cfg))
    run = Run(check_writable_dir(out_dir))
    world.main_first(lambda: resolve_model(cfg.model.name))  # the embedded model is converted once, by rank 0
    s = setup(cfg, hooks=hooks)
    tight = check_fit(s, world.sharing(s.choice.type)) if fit_check else []
    # one turn in the machine's ledger for all of this run's processes here (machine.admission): rank 0 waits
    # in line for their estimates together, the others wait for it at the barrier
    peak = s.estimate(name) * world.sharing(s.choice.type)
    ticket = world.main_first(
        lambda: (
            admission.take_turn(peak, s.choice.device, f"{default_user()}: {run.path.name}", hooks.status, hooks.stop)
            if world.is_main
            else None
        )
    )
    try:
        result = start_result(
            s,
            tight,
            ExperimentResult,
            command=command,
            user=default_user(),
            world_size=world.world_size,
            backend=backend,
            per_device_batch=cfg.train.batch_size,
            grad_accum=cfg.train.grad_accum,
        )
        if world.distributed:
            result.notes.append(f"trained in {world.world_size} processes: {result.describe_batch()}")
        for note in result.notes:
            hooks.status(note)
        memory.release()
        model = load_group(s, VARIANTS[name].bits, [name], hooks)
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise
    monitor = memory.MemoryMonitor(s.choice.device).start()
    if not world.is_main:
        try:
            train_variant(s, model, name, monitor, hooks)
        finally:
            monitor.stop()
        return None
    with run_skeleton(run, result, ticket) as writer:
        try:
            hooks = hooks.adding([writer.metrics, result.metrics.append])
            writer.keep(name, run_trained(s, model, name, monitor, hooks, adapter_dir=run.adapter_dir(name)))
            result.stopped = hooks.stop.is_set()
        except Exception as exc:  # the failed row is written with what finished, then the error goes on up
            result.variants.append(unfinished_result(s, name, exc))
            raise
        finally:
            monitor.stop()
    return result
