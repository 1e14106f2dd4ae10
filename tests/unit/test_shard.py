"""Which shard a rollout-stage pod runs: `--shard i/n`, else an Indexed Job's completion index of the
config's count, else the config's own (one table for every sharded stage command)."""

import pytest

from negrl_operator.api.stage_config import CreditStageConfig
from negrl_sampler.stages.rollout import with_shard

CONFIG = CreditStageConfig(output_dir="o", samples_dir="s", task="gsm8k", shard_count=4,
                           server={"baseUrl": "http://127.0.0.1:9/v1", "model": "m"})


@pytest.mark.parametrize(("flag", "index_env", "expected"), [
    ("2/3", "1", (2, 3)),    # the flag wins over the environment
    (None, "3", (3, 4)),     # an Indexed Job: its index of the config's count
    (None, " ", (0, 4)),     # an empty index counts as none
    (None, None, (0, 4)),    # the config's own
])
def test_the_flag_then_the_completion_index_then_the_config(monkeypatch, flag, index_env, expected):
    if index_env is None:
        monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    else:
        monkeypatch.setenv("JOB_COMPLETION_INDEX", index_env)
    config = with_shard(CONFIG, flag)
    assert (config.shard_index, config.shard_count) == expected
