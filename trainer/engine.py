"""The DeepSpeed engine: a pure config builder and LR schedule, and the short functions that set up
torch.distributed (torchrun's environment, or a one-process group) and build the engine.

Precision: `auto` is bf16 on a GPU and fp32 on CPU. Collectives: nccl on GPU, gloo on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass

from negrl_operator.api.stage_config import TrainParams


def use_bf16(precision: str, on_gpu: bool) -> bool:
    if precision == "auto":
        return on_gpu
    return precision == "bf16"


def deepspeed_config(params: TrainParams, *, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed config of one training run (the optimizer and scheduler are passed as objects)."""
    zero: dict = {"stage": params.zero_stage}
    if params.zero_stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True)
    if params.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=0)
    return {
        "train_micro_batch_size_per_gpu": params.micro_batch_size,
        "gradient_accumulation_steps": params.gradient_accumulation,
        "train_batch_size": params.micro_batch_size * params.gradient_accumulation * world_size,
        "gradient_clipping": params.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def lr_factor(step: int, *, total_steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based): linear warmup from
    0, then cosine or linear decay to 0 at total_steps, or constant (the usual HF schedules)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: str
    on_gpu: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_distributed() -> Distributed:
    """Join the torchrun group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or form a
    one-process group when started without torchrun."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)  # DeepSpeed's INFO lines would drown the Job's log
    accelerator = get_accelerator()
    on_gpu = accelerator.device_name() == "cuda"
    local_rank = int(os.environ["LOCAL_RANK"])
    if on_gpu:
        accelerator.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False, verbose=False)
    import torch.distributed as dist

    return Distributed(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
        device=accelerator.device_name(local_rank) if on_gpu else "cpu", on_gpu=on_gpu,
    )


def load_model(path: str, *, bf16: bool, gradient_checkpointing: bool = False):
    """A causal LM from an HF folder, in host memory; DeepSpeed moves it to the device, and under
    ZeRO-3 partitions it, when the engine is built."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def grad_norm(module) -> float:
    """Global 2-norm of the module's gradients (ZeRO-0 in fp32, where DeepSpeed does not record it)."""
    import torch

    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on norms and biases), as is usual for transformers."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            shape = getattr(parameter, "ds_shape", parameter.shape)
            (decay if len(shape) >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def initialise(model, ds_config: dict, params: TrainParams, total_steps: int):
    """DeepSpeed engine with AdamW and warmup + decay; returns (engine, scheduler)."""
    import deepspeed
    import torch

    optimizer = torch.optim.AdamW(
        parameter_groups(model, params.weight_decay), lr=params.learning_rate, betas=(0.9, 0.999), eps=1e-8,
    )
    warmup = warmup_steps(total_steps, params.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, ScheduleFactor(total_steps=total_steps, warmup=warmup, schedule=params.schedule)
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
    )
    return engine, scheduler


@dataclass(frozen=True)
class ScheduleFactor:
    """lr_factor as a picklable callable (LambdaLR saves callable objects with the checkpoint)."""

    total_steps: int
    warmup: int
    schedule: str

    def __call__(self, step: int) -> float:
        return lr_factor(step, total_steps=self.total_steps, warmup=self.warmup, schedule=self.schedule)
