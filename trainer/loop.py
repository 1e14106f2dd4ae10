"""The training loop shared by SFT, RFT and DPO: set up, resume, step, checkpoint, export.

`run_training(config)` is the whole stage. It is a no-op returning the recorded summary when the
stage's manifest already matches its inputs. Per-step figures (reduced over all ranks) go to the
`on_step` callbacks of every rank, which the command chooses per rank: rank 0 shows them in a
progress bar and tracks them, local rank 0 of each pod serves them on /metrics; rank 0 appends them
to <output_dir>/train_log.jsonl.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from negrl_operator.api.artifact import (
    MANIFEST,
    TRAIN_LOG,
    inputs_hash,
    stage_done,
    stage_manifest,
    write_json_atomic,
)
from negrl_operator.api.stage_config import TrainStageConfig
from negrl_trainer.batch import Schedule, collate, packed_units, rank_micro_batches, step_indices
from negrl_trainer.checkpoint import CHECKPOINTS, export_initial_model, export_model, resume, save_checkpoint
from negrl_trainer.data import DataSummary, EmptyDataError, encode_records, read_data, summarise
from negrl_trainer.engine import (
    Distributed,
    deepspeed_config,
    grad_norm,
    initialise,
    load_model,
    setup_distributed,
    use_bf16,
)
from negrl_trainer.objective import DPOSettings, StepStats, dpo_loss_of, scored_tokens, sft_loss
from negrl_trainer.reference import reference_logps
from negrl_trainer.selection import Selector

StepCallback = Callable[[dict], None]


@dataclass
class Run:
    config: TrainStageConfig
    dist: Distributed
    tokenizer: object
    units: list
    data: DataSummary
    schedule: Schedule
    bf16: bool
    ds_config: dict
    inputs: str
    reference: torch.Tensor | None = None
    reference_cached: bool = False
    selector: Selector | None = None  # checkpoint selection on validation

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(config: TrainStageConfig, dist_info: Distributed) -> Run:
    """Tokenise the data and plan the run (no model loaded yet)."""
    from transformers import AutoTokenizer

    params = config.params
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    examples = encode_records(read_data(config.data), tokenizer, stage=config.stage, spec=config.prompt,
                              max_length=params.max_length, max_examples=config.max_examples)
    units = packed_units(examples, params.max_length) if params.packing and config.stage != "dpo" else examples
    bf16 = use_bf16(params.precision, dist_info.on_gpu)
    global_batch = params.micro_batch_size * params.gradient_accumulation * dist_info.world_size
    return Run(
        config=config, dist=dist_info, tokenizer=tokenizer, units=units, data=summarise(examples),
        schedule=Schedule(len(units), global_batch, params.epochs, params.max_steps, params.min_steps), bf16=bf16,
        ds_config=deepspeed_config(params, world_size=dist_info.world_size, bf16=bf16), inputs=inputs_hash(config),
    )


def attach_reference(run: Run) -> None:
    if run.config.stage != "dpo":
        return
    run.reference, run.reference_cached = reference_logps(
        run.config.reference_path or run.config.model_path, run.units, run.output_dir / "cache",
        ds_config=run.ds_config, bf16=run.bf16, batch_size=run.config.params.micro_batch_size,
        pad_id=run.pad_id, dist_info=run.dist,
    )


def step_scored_tokens(run: Run, batches: list) -> int:
    """SFT: tokens scored in the whole optimizer step, over all micro-batches and ranks."""
    import torch.distributed as dist

    total = torch.tensor([sum(scored_tokens(batch) for batch in batches)], device=run.dist.device)
    dist.all_reduce(total)
    return max(1, int(total.item()))


def micro_loss(run: Run, engine, batch, indices: list[int], step_tokens: int):
    """One micro-batch's share of the step's objective (see objective.py for the scaling)."""
    if run.config.stage == "dpo":
        settings = DPOSettings(run.config.params.beta, run.config.params.nll_weight)
        return dpo_loss_of(engine, batch, run.reference[indices], settings, step_pairs=run.schedule.global_batch,
                           device=run.dist.device)
    return sft_loss(engine, batch, step_tokens=step_tokens, device=run.dist.device)


def train_step(run: Run, engine, step: int) -> StepStats:
    params = run.config.params
    indices = step_indices(run.schedule, params.seed, step)
    micro = rank_micro_batches(indices, run.dist.rank, run.dist.world_size, params.micro_batch_size)
    batches = [collate([run.units[i] for i in chunk], run.pad_id) for chunk in micro]
    step_tokens = step_scored_tokens(run, batches) if run.config.stage != "dpo" else 0
    scale = params.gradient_accumulation * run.dist.world_size  # undoes DeepSpeed's division and averaging
    stats = StepStats()
    for batch, chunk in zip(batches, micro, strict=True):
        loss, values = micro_loss(run, engine, batch, chunk, step_tokens)
        engine.backward(loss * scale)
        if params.zero_stage == 0 and engine.is_gradient_accumulation_boundary():
            stats.grad_norm = grad_norm(engine.module)  # DeepSpeed records it only under ZeRO
        engine.step()
        stats.add(float(loss.detach()), batch.tokens, values)
    if stats.grad_norm is None:
        stats.grad_norm = engine.get_global_grad_norm()
    return stats


def step_record(run: Run, stats: StepStats, *, step: int, lr: float, seconds: float) -> dict:
    """Reduce a step's figures over ranks into the logged record."""
    import torch.distributed as dist

    keys = sorted(stats.values)
    reduced = torch.tensor([stats.loss, float(stats.tokens)] + [stats.values[k] for k in keys],
                           dtype=torch.float64, device=run.dist.device)
    dist.all_reduce(reduced)
    figures = dict(zip(["loss", "tokens", *keys], reduced.cpu().tolist(), strict=True))
    record = {"step": step, "loss": figures["loss"], "learning_rate": lr,
              "grad_norm": None if stats.grad_norm is None else float(stats.grad_norm),
              "tokens": int(figures["tokens"]), "tokens_per_second": figures["tokens"] / max(seconds, 1e-9),
              "epoch": step / run.schedule.steps_per_epoch}
    if "pairs" in figures:
        pairs = figures["pairs"]
        record.update(chosen_reward=figures["chosen_reward"] / pairs, rejected_reward=figures["rejected_reward"] / pairs,
                      preference_accuracy=figures["accuracy"] / pairs, chosen_nll=figures["chosen_nll"] / pairs,
                      chosen_logp=figures["chosen_logp"] / pairs, rejected_logp=figures["rejected_logp"] / pairs)
        record["reward_margin"] = record["chosen_reward"] - record["rejected_reward"]
    return record


def keep_log_until(path: Path, step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop them from the log."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def run_training(config: TrainStageConfig, on_step: list[StepCallback] = ()) -> dict:
    """The whole training stage. Returns the summary recorded in manifest.json."""
    inputs = inputs_hash(config)
    if stage_done(config.output_dir, inputs):
        return {**stage_manifest(config.output_dir)["summary"], "skipped": True}
    dist_info = setup_distributed()
    if dist_info.rank == 0:  # a manifest of other inputs: its model is about to be replaced
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / MANIFEST).unlink(missing_ok=True)
    seed_everything(config.params.seed)
    try:
        run = prepare(config, dist_info)
    except EmptyDataError:
        return keep_initial_model(config, inputs, dist_info.rank)
    attach_reference(run)
    model = load_model(config.model_path, bf16=run.bf16,
                       gradient_checkpointing=config.params.gradient_checkpointing)
    engine, _ = initialise(model, run.ds_config, config.params, run.schedule.total_steps)
    engine.train()
    checkpoints = run.output_dir / CHECKPOINTS
    start = resume(engine, checkpoints, run.inputs, dist_info.rank)
    log_path = run.output_dir / TRAIN_LOG
    if dist_info.rank == 0:
        keep_log_until(log_path, start)
    if config.selection:
        run.selector = Selector.start(config.selection, config.prompt, run.output_dir,
                                      run.schedule.steps_per_epoch, run.schedule.total_steps, start)
    records = train_steps(run, engine, start, on_step, log_path)
    if not config.selection or not (run.output_dir / "model").exists():  # selection exports the best as it goes
        export_model(engine, run.tokenizer, run.output_dir, zero_stage=config.params.zero_stage, rank=dist_info.rank)
    summary = run_summary(run, start, records)
    if dist_info.rank == 0:
        write_json_atomic(run.output_dir / MANIFEST, {"inputs_hash": run.inputs, "model": "model", "summary": summary})
    return summary


def keep_initial_model(config: TrainStageConfig, inputs: str, rank: int) -> dict:
    """No example to learn from: the stage's policy is its initial model, and the summary says so
    (the experiment goes on; its report flags the policy as untrained)."""
    output_dir = Path(config.output_dir)
    summary = {"stage": config.stage, "examples": 0, "steps": 0, "model": str(output_dir / "model"),
               "untrained": "no training examples: the policy is the initial model"}
    if rank == 0:
        export_initial_model(config.model_path, output_dir)
        write_json_atomic(output_dir / MANIFEST, {"inputs_hash": inputs, "model": "model", "summary": summary})
    return summary


def score_step(run: Run, engine, step: int) -> None:
    """Score the model on validation (rank 0) and export it when it beats every earlier score."""
    import torch.distributed as dist

    improved = torch.zeros(1, device=run.dist.device)
    if run.dist.rank == 0:
        improved[0] = float(run.selector.score(engine.module, run.tokenizer, step))
    dist.broadcast(improved, 0)
    if improved.item():
        export_model(engine, run.tokenizer, run.output_dir, zero_stage=run.config.params.zero_stage,
                     rank=run.dist.rank)


def train_steps(run: Run, engine, start: int, on_step, log_path: Path) -> list[dict]:
    params = run.config.params
    total = run.schedule.total_steps
    records = []
    for step in range(start, total):
        began = time.perf_counter()
        lr = engine.get_lr()[0]
        stats = train_step(run, engine, step)
        record = step_record(run, stats, step=step + 1, lr=lr, seconds=time.perf_counter() - began)
        records.append(record)
        if run.dist.rank == 0:
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        for callback in on_step:  # every rank has the reduced record; the caller chose its callbacks per rank
            callback({**record, "total_steps": total})
        scored = run.selector is not None and run.selector.due(step + 1)
        if scored:  # before the checkpoint: a resume from it never scores this step again
            score_step(run, engine, step + 1)
        periodic = params.checkpoint_every_steps and (step + 1) % params.checkpoint_every_steps == 0
        if periodic or scored or step + 1 == total:
            save_checkpoint(engine, run.output_dir / CHECKPOINTS, step + 1, run.inputs, run.dist.rank)
    return records


def run_summary(run: Run, start: int, records: list[dict]) -> dict:
    total = run.schedule.total_steps
    tokens = sum(record["tokens"] for record in records)
    seconds = sum(record["tokens"] / record["tokens_per_second"] for record in records if record["tokens"])
    summary = {
        "stage": run.config.stage, "steps": total, "resumed_from_step": start,
        "epochs": round(total / run.schedule.steps_per_epoch, 4), "examples": run.data.examples,
        "truncated": run.data.truncated, "units": len(run.units), "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
        "loss": records[-1]["loss"] if records else None,
        "first_loss": records[0]["loss"] if records and start == 0 else None,
        "model": str(run.output_dir / "model"), "world_size": run.dist.world_size,
        "zero_stage": run.config.params.zero_stage, "precision": "bf16" if run.bf16 else "fp32",
    }
    if run.selector is not None:
        summary.update(run.selector.summary())
    if run.config.stage == "dpo" and records:
        last = records[-1]
        summary.update(reward_margin=last["reward_margin"], preference_accuracy=last["preference_accuracy"],
                       reference_cached=run.reference_cached)
    return summary
