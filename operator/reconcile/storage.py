"""Whether the experiment's artifact claim (spec.storage.claimName) can be mounted by every pod that
runs at the same time (pure): the StorageShared condition's status, reason and message.

Samplers run beside the Jobs that call them, sample and credit Jobs run in shards, training runs on
several nodes: a ReadWriteOnce claim attaches to one node only (the other nodes' pods fail with
Multi-Attach errors), a ReadWriteOncePod claim to one pod only. Neither fails the experiment (a
one-node cluster runs fine on ReadWriteOnce); the condition and a Warning Event say what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.reconcile.graph import StageNode
from negrl_operator.reconcile.manifest import SHARDED_KINDS
from negrl_operator.reconcile.observation import ClaimState

FIELD = "spec.storage.claimName"
ADVICE = f"use a ReadWriteMany claim (NFS, CephFS, a CSI file store) in {FIELD}"
NOT_SHARED = ("StorageNotShared", "ClaimNotFound", "StorageReadOnly")  # reasons of StorageShared=False


@dataclass(frozen=True)
class StorageCheck:
    status: str  # True, False or Unknown (the StorageShared condition's status)
    reason: str
    message: str


def concurrent_mounts(spec: ExperimentSpec, nodes: list[StageNode]) -> list[str]:
    """What mounts the claim at the same time, in words (empty: one pod at a time)."""
    kinds = {node.kind for node in nodes}
    found = []
    if any(node.serves for node in nodes):
        found.append("the sampler pods and the stage Jobs that call them")
    if spec.worker.shards > 1 and kinds & set(SHARDED_KINDS):
        found.append(f"the {spec.worker.shards} shards of each {' and '.join(k for k in SHARDED_KINDS if k in kinds)} Job")
    if spec.trainer.nodes > 1 and "train" in kinds:
        found.append(f"the {spec.trainer.nodes} pods of each training Job")
    return found


def storage_check(claim: ClaimState, namespace: str, spec: ExperimentSpec, nodes: list[StageNode]) -> StorageCheck:
    """The StorageShared condition for `claim`, naming the field to change when it is False."""
    name = f"PersistentVolumeClaim {namespace}/{claim.name}"
    if not claim.found:
        return StorageCheck("False", "ClaimNotFound", f"{name} not found: the experiment's pods wait (Pending) until "
                                                      f"it exists; create it or {ADVICE}")
    modes = set(claim.access_modes)
    pending = " (Pending: not bound to a volume yet)" if claim.phase == "Pending" else ""
    if "ReadWriteMany" in modes:
        return StorageCheck("True", "ReadWriteMany", f"{name} is ReadWriteMany{pending}: every pod can mount it")
    if not modes:
        return StorageCheck("Unknown", "AccessModesUnknown", f"{name} has no access modes yet{pending}")
    if modes == {"ReadOnlyMany"}:
        return StorageCheck("False", "StorageReadOnly", f"{name} is ReadOnlyMany: the stages cannot write their "
                                                        f"artifacts; {ADVICE}")
    together = concurrent_mounts(spec, nodes)
    if not together:
        return StorageCheck("True", "OnePodAtATime", f"{name} is {_mode(modes)}{pending}: enough, as one pod at a time "
                                                     "mounts it")
    if "ReadWriteOncePod" in modes and "ReadWriteOnce" not in modes:
        return StorageCheck("False", "StorageNotShared", f"{name} is ReadWriteOncePod{pending}: one pod at a time can "
                                                         f"mount it, but {'; '.join(together)} mount it at the same "
                                                         f"time (the others stay Pending); {ADVICE}")
    return StorageCheck("False", "StorageNotShared", f"{name} is ReadWriteOnce{pending}, but {'; '.join(together)} "
                                                     "mount it at the same time: it works only while every pod runs "
                                                     "on one node (elsewhere pods fail with Multi-Attach errors); "
                                                     f"{ADVICE}")


def _mode(modes: set[str]) -> str:
    return ", ".join(sorted(modes))
