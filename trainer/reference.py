"""Reference log-probabilities for DPO, computed once with the reference model in eval mode and
cached as an artifact keyed by the reference model and the tokenised data.

The ranks share the work (each scores every world_size-th pair, in length order, the same number
of forwards on every rank so ZeRO-3's collectives line up), gather the results, and rank 0 writes
the cache file atomically. A later run (a restarted Job) finds it and skips the pass.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path

import torch

from negrl_operator.api.artifact import temporary_beside
from negrl_trainer.batch import collate
from negrl_trainer.data import EncodedPair
from negrl_trainer.engine import Distributed, load_model
from negrl_trainer.loss import sequence_logps
from negrl_trainer.objective import logits_of


def model_fingerprint(path: str) -> str:
    """The inputs hash of the stage that exported the model (<stage>/model + <stage>/manifest.json),
    else the path and the name, size and modification time of each of its files."""
    folder = Path(path)
    manifest = folder.parent / "manifest.json"
    if folder.name == "model" and manifest.exists():
        stage_hash = json.loads(manifest.read_text()).get("inputs_hash")
        if stage_hash:
            return f"stage:{stage_hash}"
    if not folder.is_dir():
        return f"name:{path}"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([str(folder.resolve()), stats]).encode()).hexdigest()


def data_fingerprint(pairs: list[EncodedPair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        for side in (pair.chosen, pair.rejected):
            digest.update(json.dumps([side.input_ids, side.labels]).encode())
    return digest.hexdigest()


def reference_key(model_path: str, pairs: list[EncodedPair], bf16: bool) -> str:
    parts = [model_fingerprint(model_path), data_fingerprint(pairs), "bf16" if bf16 else "fp32"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def rank_share(pairs: list[EncodedPair], rank: int, world_size: int) -> list[int]:
    """This rank's pair indices, longest first; every rank gets ceil(N / world) (repeats pad)."""
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i].chosen.input_ids) - len(pairs[i].rejected.input_ids))
    per_rank = -(-len(order) // world_size)
    padded = order + order[: per_rank * world_size - len(order)]
    return padded[rank::world_size]


@torch.no_grad()
def score_pairs(model, pairs: list[EncodedPair], indices: list[int], *, batch_size: int, pad_id: int,
                device) -> torch.Tensor:
    """[len(indices), 2] summed (chosen, rejected) response log-probs under `model`."""
    out = torch.zeros((len(indices), 2), dtype=torch.float32)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start: start + batch_size]
        batch = collate([pairs[i] for i in chunk], pad_id)
        logps, _ = sequence_logps(logits_of(model, batch, device), batch.labels.to(device))
        out[start: start + len(chunk)] = torch.stack([logps[: len(chunk)], logps[len(chunk):]], dim=1).float().cpu()
    return out


def load_reference_model(path: str, ds_config: dict, bf16: bool, dist_info: Distributed):
    """The reference in eval mode: partitioned by a ZeRO-3 inference engine, else on the device."""
    model = load_model(path, bf16=bf16)
    model.eval()
    if ds_config["zero_optimization"]["stage"] == 3:
        import deepspeed

        config = {k: v for k, v in ds_config.items() if k not in {"gradient_clipping"}}
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.eval()
        return engine
    return model.to(dist_info.device)


def compute_reference(path: str, pairs: list[EncodedPair], *, ds_config: dict, bf16: bool, batch_size: int,
                      pad_id: int, dist_info: Distributed) -> torch.Tensor:
    import torch.distributed as dist

    model = load_reference_model(path, ds_config, bf16, dist_info)
    indices = rank_share(pairs, dist_info.rank, dist_info.world_size)
    scores = score_pairs(model, pairs, indices, batch_size=batch_size, pad_id=pad_id, device=dist_info.device)
    del model
    gc.collect()
    if dist_info.on_gpu:
        torch.cuda.empty_cache()
    gathered_scores = [torch.zeros_like(scores, device=dist_info.device) for _ in range(dist_info.world_size)]
    gathered_indices = [torch.zeros(len(indices), dtype=torch.long, device=dist_info.device)
                        for _ in range(dist_info.world_size)]
    dist.all_gather(gathered_scores, scores.to(dist_info.device))
    dist.all_gather(gathered_indices, torch.tensor(indices, dtype=torch.long, device=dist_info.device))
    result = torch.zeros((len(pairs), 2), dtype=torch.float32)
    for rank_scores, rank_indices in zip(gathered_scores, gathered_indices, strict=True):
        result[rank_indices.cpu()] = rank_scores.cpu()
    return result


def reference_logps(path: str, pairs: list[EncodedPair], cache_dir: Path, *, ds_config: dict, bf16: bool,
                    batch_size: int, pad_id: int, dist_info: Distributed) -> tuple[torch.Tensor, bool]:
    """[N, 2] reference log-probs, from the cache when it has them; also says whether it did."""
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file

    cache = cache_dir / f"reference-{reference_key(path, pairs, bf16)}.safetensors"
    if cache.exists():
        return load_file(cache)["logps"], True
    logps = compute_reference(path, pairs, ds_config=ds_config, bf16=bf16, batch_size=batch_size,
                              pad_id=pad_id, dist_info=dist_info)
    if dist_info.rank == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = temporary_beside(cache)
        os.close(descriptor)
        save_file({"logps": logps.contiguous()}, temporary)
        os.replace(temporary, cache)
    dist.barrier()
    return logps, False
