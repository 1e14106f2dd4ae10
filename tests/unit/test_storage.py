"""StorageShared: whether the experiment's claim can be mounted by every pod that runs at once,
with the reason and the field to change; its condition and Warning Event through plan()."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.status import ExperimentStatus
from negrl_operator.reconcile.graph import StageNode, stage_graph
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import ClaimState, Observed, claim_state
from negrl_operator.reconcile.plan import plan
from negrl_operator.reconcile.storage import StorageCheck, concurrent_mounts, storage_check
from tests.unit.test_experiment import spec_with

pytestmark = pytest.mark.unit

FIX = "use a ReadWriteMany claim (NFS, CephFS, a CSI file store) in spec.storage.claimName"
SAMPLERS = "the sampler pods and the stage Jobs that call them"
PVC = "PersistentVolumeClaim team/data"
ALONE = [StageNode("prepare", "prepare", "prepare"), StageNode("sft", "train", "sft")]  # nothing served


def spec(**changes) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec_with(**changes))


def bound(*modes: str) -> ClaimState:
    return ClaimState("data", access_modes=modes, phase="Bound")


@pytest.mark.parametrize(("claim", "changes", "nodes", "expected"), [
    pytest.param(ClaimState("data", found=False), {}, None, StorageCheck(
        "False", "ClaimNotFound", f"{PVC} not found: the experiment's pods wait (Pending) until it exists; "
                                  f"create it or {FIX}"), id="missing"),
    pytest.param(bound("ReadWriteMany"), {}, None, StorageCheck(
        "True", "ReadWriteMany", f"{PVC} is ReadWriteMany: every pod can mount it"), id="rwx"),
    pytest.param(bound("ReadWriteOnce", "ReadWriteMany"), {}, None, StorageCheck(
        "True", "ReadWriteMany", f"{PVC} is ReadWriteMany: every pod can mount it"), id="rwo-and-rwx"),
    pytest.param(bound("ReadWriteOnce"), {}, None, StorageCheck(
        "False", "StorageNotShared", f"{PVC} is ReadWriteOnce, but {SAMPLERS} mount it at the same time: it works "
                                     "only while every pod runs on one node (elsewhere pods fail with Multi-Attach "
                                     f"errors); {FIX}"), id="rwo-samplers"),
    pytest.param(bound("ReadWriteOncePod"), {}, None, StorageCheck(
        "False", "StorageNotShared", f"{PVC} is ReadWriteOncePod: one pod at a time can mount it, but {SAMPLERS} "
                                     f"mount it at the same time (the others stay Pending); {FIX}"), id="rwop"),
    pytest.param(bound("ReadOnlyMany"), {}, None, StorageCheck(
        "False", "StorageReadOnly", f"{PVC} is ReadOnlyMany: the stages cannot write their artifacts; {FIX}"),
        id="read-only"),
    pytest.param(bound("ReadWriteOnce"), {}, ALONE, StorageCheck(
        "True", "OnePodAtATime", f"{PVC} is ReadWriteOnce: enough, as one pod at a time mounts it"),
        id="rwo-one-pod-at-a-time"),
    pytest.param(ClaimState("data", access_modes=("ReadWriteMany",), phase="Pending"), {}, None, StorageCheck(
        "True", "ReadWriteMany", f"{PVC} is ReadWriteMany (Pending: not bound to a volume yet): every pod can mount "
                                 "it"), id="rwx-pending"),
    pytest.param(ClaimState("data", phase="Pending"), {}, None, StorageCheck(
        "Unknown", "AccessModesUnknown", f"{PVC} has no access modes yet (Pending: not bound to a volume yet)"),
        id="no-modes"),
])
def test_storage_check(claim, changes, nodes, expected):
    experiment = spec(**changes)
    assert storage_check(claim, "team", experiment, nodes if nodes is not None else stage_graph(experiment)) == expected


@pytest.mark.parametrize(("changes", "nodes", "expected"), [
    pytest.param({}, None, [SAMPLERS], id="minimal"),
    pytest.param({"worker__shards": 4, "trainer__nodes": 2}, None,
                 [SAMPLERS, "the 4 shards of each sample and credit Job", "the 2 pods of each training Job"],
                 id="shards-and-nodes"),
    pytest.param({"worker__shards": 4, "trainer__nodes": 2}, ALONE, ["the 2 pods of each training Job"],
                 id="no-sharded-stage"),
    pytest.param({}, ALONE, [], id="one-pod-at-a-time"),
])
def test_concurrent_mounts(changes, nodes, expected):
    experiment = spec(**changes)
    assert concurrent_mounts(experiment, nodes if nodes is not None else stage_graph(experiment)) == expected


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(None, ClaimState("data", found=False), id="absent"),
    pytest.param({"spec": {"accessModes": ["ReadWriteOnce"]},
                  "status": {"phase": "Bound", "accessModes": ["ReadWriteMany"]}},
                 ClaimState("data", access_modes=("ReadWriteMany",), phase="Bound"), id="bound-volume-wins"),
    pytest.param({"spec": {"accessModes": ["ReadWriteOnce"]}, "status": {"phase": "Pending"}},
                 ClaimState("data", access_modes=("ReadWriteOnce",), phase="Pending"), id="pending-requested"),
])
def test_claim_state(body, expected):
    assert claim_state("data", body) == expected


OWNER, T0 = Owner("exp", "team", "uid-1"), datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_claim_pods_cannot_share_is_a_condition_and_one_warning_not_a_stall():
    experiment = spec()
    first = plan(OWNER, 1, experiment, ExperimentStatus(), Observed(claim=bound("ReadWriteOnce")), T0)
    storage = first.status.condition("StorageShared")
    assert (storage.status, storage.reason, storage.observed_generation) == ("False", "StorageNotShared", 1)
    assert "works only while every pod runs on one node" in storage.message and FIX in storage.message
    warnings = [e for e in first.events if e.type == "Warning"]
    assert [(e.reason, e.message) for e in warnings] == [("StorageNotShared", storage.message)]
    assert first.status.condition("Stalled").status == "False" and first.status.phase != "Failed"
    assert first.apply  # the stages start all the same
    again = plan(OWNER, 1, experiment, first.status, Observed(claim=bound("ReadWriteOnce")), T0)
    assert not [e for e in again.events if e.type == "Warning"]  # said once
    assert again.status.condition("StorageShared") == storage
    unread = plan(OWNER, 1, experiment, first.status, Observed(), T0)
    assert unread.status.condition("StorageShared") == storage  # not read this time: kept


def test_a_shared_claim_is_true_without_an_event_and_no_claim_read_means_no_condition():
    shared = plan(OWNER, 1, spec(), ExperimentStatus(), Observed(claim=bound("ReadWriteMany")), T0)
    assert shared.status.condition("StorageShared").status == "True"
    assert not [e for e in shared.events if e.type == "Warning"]
    assert plan(OWNER, 1, spec(), ExperimentStatus(), Observed(), T0).status.condition("StorageShared") is None
