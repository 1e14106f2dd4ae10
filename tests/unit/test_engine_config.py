"""The DeepSpeed config builder, precision choice and LR schedule (pure functions)."""

import math
import pickle

import pytest
import torch

from negrl_operator.api.stage_config import TrainParams, TrainStageConfig
from negrl_trainer.engine import (
    ScheduleFactor,
    deepspeed_config,
    lr_factor,
    parameter_groups,
    use_bf16,
    warmup_steps,
)


@pytest.mark.parametrize(("precision", "on_gpu", "expected"), [
    ("auto", True, True), ("auto", False, False), ("bf16", False, True), ("fp32", True, False),
])
def test_precision(precision, on_gpu, expected):
    assert use_bf16(precision, on_gpu) is expected


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_config_per_zero_stage(stage):
    params = TrainParams(micro_batch_size=2, gradient_accumulation=4, zero_stage=stage, max_grad_norm=0.5)
    config = deepspeed_config(params, world_size=8, bf16=True)
    assert config["train_micro_batch_size_per_gpu"] == 2
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 2 * 4 * 8
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"]["stage"] == stage
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) is (stage == 3)
    assert "optimizer" not in config and "scheduler" not in config  # passed as objects


def test_deepspeed_config_fp32_on_cpu():
    # a stage config fills in the engine defaults neither the stage nor spec.trainer set: ZeRO 2, precision auto
    params = TrainStageConfig(output_dir="/o", stage="sft", model_path="m", data=["d"]).params
    assert (params.zero_stage, params.precision) == (2, "auto")
    config = deepspeed_config(params, world_size=1, bf16=False)
    assert config["bf16"] == {"enabled": False} and config["zero_optimization"]["stage"] == 2
    assert config["train_batch_size"] == TrainParams().micro_batch_size


@pytest.mark.parametrize(("total", "ratio", "expected"), [(100, 0.1, 10), (7, 0.1, 1), (10, 0.0, 0), (3, 0.5, 2)])
def test_warmup_steps(total, ratio, expected):
    assert warmup_steps(total, ratio) == expected


# (step, total, warmup, schedule) -> factor of the peak learning rate
LR_CASES = [
    ((0, 100, 10, "cosine"), 0.0),
    ((5, 100, 10, "cosine"), 0.5),
    ((10, 100, 10, "cosine"), 1.0),
    ((55, 100, 10, "cosine"), 0.5),
    ((100, 100, 10, "cosine"), 0.0),
    ((55, 100, 10, "linear"), 0.5),
    ((100, 100, 10, "linear"), 0.0),
    ((77, 100, 10, "constant"), 1.0),
    ((0, 10, 0, "cosine"), 1.0),
    ((4, 8, 0, "cosine"), 0.5 * (1 + math.cos(math.pi * 0.5))),
]


@pytest.mark.parametrize(("args", "expected"), LR_CASES)
def test_lr_schedule(args, expected):
    step, total, warmup, schedule = args
    assert lr_factor(step, total_steps=total, warmup=warmup, schedule=schedule) == pytest.approx(expected, abs=1e-12)


def test_lr_schedule_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(20, total_steps=30, warmup=0, schedule="step")


def test_schedule_factor_survives_a_scheduler_checkpoint():
    factor = ScheduleFactor(total_steps=10, warmup=2, schedule="linear")
    assert pickle.loads(pickle.dumps(factor)) == factor
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh = torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0), factor)
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == scheduler.get_last_lr() == [pytest.approx(1.0 - 2 / 8)]


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in decay["params"]] == [(4, 3)]
    assert sorted(tuple(p.shape) for p in no_decay["params"]) == [(4,), (4,), (4,)]
