"""Resumable checkpoints and the final Hugging Face export.

Checkpoints live in <output_dir>/checkpoints/step-NNNNNNNN/: DeepSpeed's own files (model,
optimizer and scheduler state, per rank as ZeRO partitions them), one RNG file per rank, and
`complete.json`, written by rank 0 after every rank has finished writing. Only a folder with
`complete.json` and the same inputs hash is resumed from; the data position is the step number,
because the data order is a pure function of (seed, step).

The export gathers ZeRO-3 partitions layer by layer onto rank 0, writes the model (safetensors)
and tokenizer into a temporary folder and renames it to <output_dir>/model.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from negrl_operator.api.artifact import read_json, share_readable, write_json_atomic

CHECKPOINTS = "checkpoints"
COMPLETE = "complete.json"
MODEL = "model"


def checkpoint_tag(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(root: Path, inputs: str) -> list[tuple[int, str]]:
    """(step, tag) of every complete checkpoint made from these inputs, oldest first."""
    found = []
    for folder in sorted(root.glob("step-*")) if root.is_dir() else []:
        marker = folder / COMPLETE
        if marker.exists():
            info = read_json(marker)
            if info.get("inputs_hash") == inputs:
                found.append((int(info["step"]), folder.name))
    return sorted(found)


def rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(engine, root: Path, step: int, inputs: str, rank: int, keep: int = 2) -> None:
    """A collective: every rank calls it after optimizer step `step` (steps done so far)."""
    import torch.distributed as dist

    tag = checkpoint_tag(step)
    engine.save_checkpoint(str(root), tag=tag, client_state={"step": step, "inputs_hash": inputs},
                           save_latest=False)
    torch.save(rng_state(), root / tag / f"rng-rank{rank:05d}.pt")
    dist.barrier()
    if rank == 0:
        write_json_atomic(root / tag / COMPLETE, {"step": step, "inputs_hash": inputs})
        prune(root, keep)
    dist.barrier()


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop everything older than the newest one."""
    complete = sorted(folder.name for folder in root.glob("step-*") if (folder / COMPLETE).exists())
    kept = set(complete[-keep:])
    for folder in root.glob("step-*"):
        if complete and folder.name not in kept and folder.name < complete[-1]:
            shutil.rmtree(folder, ignore_errors=True)


def resume(engine, root: Path, inputs: str, rank: int) -> int:
    """Load the newest complete checkpoint of these inputs; return the steps it had done (0: none)."""
    found = complete_checkpoints(root, inputs)
    if not found:
        return 0
    step, tag = found[-1]
    load_path, client_state = engine.load_checkpoint(str(root), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {root / tag}")
    rng_file = root / tag / f"rng-rank{rank:05d}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return int(client_state.get("step", step))


def full_state_dict(engine, zero_stage: int, rank: int) -> dict | None:
    """The whole model's weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
    if zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return engine.module.state_dict() if rank == 0 else None


def export_initial_model(model_path: str, output_dir: Path) -> Path:
    """<output_dir>/model as an unchanged copy of the initial model, atomically (no data to train on)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final, partial = output_dir / MODEL, output_dir / f".{MODEL}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    AutoModelForCausalLM.from_pretrained(model_path).save_pretrained(partial, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(partial)
    share_readable(partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def export_model(engine, tokenizer, output_dir: Path, *, zero_stage: int, rank: int) -> Path:
    """Write <output_dir>/model as a complete HF folder (config, safetensors, tokenizer), atomically."""
    import torch.distributed as dist

    state = full_state_dict(engine, zero_stage, rank)
    final = output_dir / MODEL
    if rank == 0:
        partial = output_dir / f".{MODEL}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        module = engine.module
        module.config.use_cache = True
        module.save_pretrained(partial, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        share_readable(partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    dist.barrier()
    return final
