"""Seeds as repeats (experiments.seeds): the seed counts allowed, the seeds a config gives, and a data file's
split kept across them."""

from __future__ import annotations

import pytest

from workbench.analysis.settings import setting_key
from workbench.experiments.seeds import check_seeds, seed_values


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, 101])
def test_bad_seed_counts_are_refused(bad):
    with pytest.raises(ValueError, match="seeds must be a whole number from 1 to 100"):
        check_seeds(bad)


def test_seed_values_follow_the_config_seed():
    from workbench.core.config import RunConfig, TrainSettings

    assert seed_values(RunConfig(train=TrainSettings(seed=7)), 3) == [7, 8, 9]
    with pytest.raises(ValueError, match="passes the largest seed"):
        seed_values(RunConfig(train=TrainSettings(seed=2**32 - 1)), 2)


def test_repeats_of_a_data_file_keep_the_first_seeds_split():
    from workbench.core.config import RunConfig, TrainSettings
    from workbench.experiments.seeds import with_seed

    cfg = RunConfig(task=None, data="mine.jsonl", train=TrainSettings(seed=5))
    again = with_seed(cfg, 6)
    assert again.train.seed == 6 and again.held_out_seed == 5 and with_seed(cfg, 5).split_seed is None
    # the same setting, whichever way its split seed was written; another split is another setting
    assert setting_key(cfg.to_dict(), "lora") == setting_key(again.to_dict(), "lora")
    other = RunConfig(task=None, data="mine.jsonl", train=TrainSettings(seed=6))
    assert setting_key(other.to_dict(), "lora") != setting_key(cfg.to_dict(), "lora")
    # a built-in task's eval split is fixed: the seed alone never separates two settings
    assert setting_key(RunConfig(train=TrainSettings(seed=1)).to_dict(), "lora") == setting_key(
        RunConfig().to_dict(), "lora"
    )
