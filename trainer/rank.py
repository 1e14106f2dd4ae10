"""A training process's part in its torchrun group, read from torchrun's environment (pure).

Global rank 0 leads: it tracks the run (TensorBoard, MLflow), shows progress and writes the summary.
Local rank 0 of every pod serves /metrics on the port the pod template declares, so each training
pod serves that port (the figures are reduced over all ranks, so every pod's are the same), and
the processes of one pod never compete for it. Without torchrun (RANK and LOCAL_RANK unset) the
one process is both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RankRole:
    leader: bool  # global rank 0
    serves_metrics: bool  # local rank 0 of its pod, with a metrics port set
    node_rank: str  # torchrun's GROUP_RANK: which pod of the group (a label of the served series)


def rank_role(env: Mapping[str, str], metrics_port: int | None) -> RankRole:
    local_leader = env.get("LOCAL_RANK", "0") == "0"
    return RankRole(leader=env.get("RANK", "0") == "0", serves_metrics=bool(metrics_port) and local_leader,
                    node_rank=env.get("GROUP_RANK", "0"))
