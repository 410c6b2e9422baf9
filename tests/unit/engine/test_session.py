"""A finished run's variants loaded again (engine.session): what a run scored is read back, a changed adapter is
scored anew."""

from __future__ import annotations

import shutil

import pytest
from helpers import one_step_config, run_saying, tiny_config

from workbench.engine import score_cache
from workbench.engine.session import Session
from workbench.experiments import run_setup
from workbench.experiments.comparison import run_compare
from workbench.records import runs


def test_evaluate_reads_back_every_variant_a_bfloat16_run_scored(bf16_native, tiny_model_dir, tiny_jsonl, tmp_path):
    """The run's 4-bit variant is keyed by its own float32 choice, as the Compare tab's session keys it."""
    from workbench.engine.session import Session
    from workbench.experiments import run_setup

    cfg = tiny_config(tiny_model_dir, tiny_jsonl, steps=1)
    run_compare(cfg, tmp_path / "run")
    examples = run_setup.setup(cfg).eval_set
    s = Session.from_run(tmp_path / "run")
    for variant in ("base", "lora", "qlora"):
        assert s.kept(variant, examples, seq_len=cfg.train.seq_len) is not None, variant
    s.release()


@pytest.mark.usefixtures("cold_home")
def test_evaluate_reads_back_a_runs_base_and_its_adapter_and_a_changed_adapter_misses(
    tiny_model_dir, tiny_jsonl, tmp_path, scored
):
    cfg = one_step_config(tiny_model_dir, tiny_jsonl, variants="base,lora,qlora")
    out = tmp_path / "run"
    run_saying(cfg, out)
    examples = run_setup.setup(cfg).eval_set
    kept = runs.Run(out).scores()
    scored.clear()

    s = Session.from_run(out)  # the Compare tab's Evaluate of this run
    # qlora too: on a float32 CPU, peft's k-bit preparation casts nothing, so the run's model and the one read
    # back hold their parameters in the same dtypes (where it casts, the keys differ and it is scored again)
    for variant in ("base", "lora", "qlora"):
        ev, entry = s.scored(variant, examples, seq_len=32)
        assert entry is not None, variant
        assert ev.scores() == kept[variant]["eval"]
    assert scored == []
    s.release()

    # the adapter trained in the run, scored afresh once read back from disk, gives what the run kept: storing
    # the run's own scoring under the saved adapter's digest is sound
    shutil.rmtree(score_cache.cache_dir())
    s = Session.from_run(out)
    fresh, entry = s.scored("lora", examples, seq_len=32)
    assert entry is None and scored == [("session", False)]
    assert fresh.losses == kept["lora"]["eval"]["losses"]
    assert fresh.correct == kept["lora"]["eval"]["correct"]
    s.scored("base", examples, seq_len=32)  # kept again, for the base's turn below
    s.release()

    from safetensors.torch import load_file, save_file

    weights = out / "adapters" / "lora" / "adapter_model.safetensors"
    save_file({k: v + 0.05 for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    s = Session.from_run(out)
    nudged, entry = s.scored("lora", examples, seq_len=32)
    assert entry is None and scored == [("session", False), ("session", True), ("session", False)]
    assert nudged.losses != fresh.losses
    _, entry = s.scored("base", examples, seq_len=32)  # the base did not change with the adapter
    assert entry is not None and len(scored) == 3
    s.release()
