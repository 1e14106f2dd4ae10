"""What the operator observes of an experiment's children, as small typed values.

The shell keeps these in kopf indices (filled from watch streams, so a reconcile makes no reads);
`plan()` takes them as input. Parsing a Kubernetes object into one of these is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from negrl_operator.api.termination import shorten

HASH_ANNOTATION = "negrl.io/spec-hash"
STAGE_LABEL = "negrl.io/stage"
POLICY_LABEL = "negrl.io/policy"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGER = "negrl-operator"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Container waiting reasons that do not clear by themselves (a kubelet's names).
STUCK_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"


@dataclass(frozen=True)
class JobState:
    name: str
    stage: str
    complete: bool = False
    failed: bool = False  # the Job gave up (backoff limit reached)
    failure_message: str = ""  # the Job's Failed condition message
    failure_reason: str = ""  # and its reason: BackoffLimitExceeded, PodFailurePolicy, DeadlineExceeded, ...
    failed_pods: int = 0
    active: int = 0
    suspended: bool = False
    completions: int = 1
    completion_time: str | None = None
    owner_uid: str = ""
    uid: str = ""
    queue: str = ""  # Kueue LocalQueue: Kueue, not the operator, owns this Job's spec.suspend
    kind: str = "Job"  # or JobSet (trainer.launcher); failed_pods then counts group restarts
    created: str | None = None


@dataclass(frozen=True)
class Problem:
    """Why a child does not progress: a machine-readable reason (a kubelet's, scheduler's or
    controller's word, e.g. ImagePullBackOff, Unschedulable, FailedCreate, OOMKilled) and its detail."""

    reason: str
    message: str = ""


@dataclass(frozen=True)
class DeploymentState:
    name: str
    policy: str
    spec_hash: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    owner_uid: str = ""
    problem: Problem | None = None  # the ReplicaFailure condition (e.g. FailedCreate)


@dataclass(frozen=True)
class ChildState:
    """A ConfigMap or Service: only existence and the hash of what was applied matter."""

    kind: str
    name: str
    spec_hash: str = ""
    owner_uid: str = ""
    component: str = ""


@dataclass(frozen=True)
class PodReport:
    """A finished stage pod: its completion index and termination message (the stage's summary)."""

    name: str
    job: str
    index: int = 0
    phase: str = "Pending"
    message: str | None = None
    exit_code: int | None = None
    finished_at: str | None = None
    owner_uid: str = ""
    policy: str = ""  # a sampler pod's policy (job is empty then)
    problem: Problem | None = None


@dataclass(frozen=True)
class ClaimState:
    """The experiment's PersistentVolumeClaim (spec.storage.claimName): whether it exists, its access
    modes (the bound volume's once Bound, the requested ones before) and its phase."""

    name: str
    found: bool = True
    access_modes: tuple[str, ...] = ()
    phase: str = ""


@dataclass(frozen=True)
class Observed:
    jobs: dict[str, JobState] = field(default_factory=dict)
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    others: dict[tuple[str, str], ChildState] = field(default_factory=dict)
    pods: tuple[PodReport, ...] = ()
    job_events: dict[str, Problem] = field(default_factory=dict)  # Job name -> its last FailedCreate Event
    claim: ClaimState | None = None  # None: not read (the shell could not, e.g. no RBAC to read claims)

    def pods_of(self, job: str) -> list[PodReport]:
        return [pod for pod in self.pods if pod.job == job]

    def sampler_pods(self, policy: str) -> list[PodReport]:
        return [pod for pod in self.pods if not pod.job and pod.policy == policy]

    def has(self, kind: str, name: str) -> bool:
        return (kind, name) in self.others


def _owner_uid(meta: dict) -> str:
    owners = meta.get("ownerReferences") or []
    return next((ref.get("uid", "") for ref in owners if ref.get("controller")), owners[0]["uid"] if owners else "")


def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind and c.get("status") == "True"), None)


def job_state(body: dict) -> JobState:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
    failed = _condition(status, "Failed")
    return JobState(
        name=meta["name"], stage=(meta.get("labels") or {}).get(STAGE_LABEL, ""),
        complete=_condition(status, "Complete") is not None, failed=failed is not None,
        failure_message=(failed or {}).get("message", ""), failure_reason=(failed or {}).get("reason", ""),
        failed_pods=int(status.get("failed") or 0), active=int(status.get("active") or 0), suspended=bool(spec.get("suspend")),
        completions=int(spec.get("completions") or 1),
        completion_time=status.get("completionTime"), owner_uid=_owner_uid(meta), uid=meta.get("uid", ""),
        created=meta.get("creationTimestamp"),
        queue=(meta.get("labels") or {}).get(QUEUE_LABEL, ""),
    )


def jobset_state(body: dict) -> JobState:
    """A JobSet as a JobState: terminal when its terminalState is set; restarts count as failures."""
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
    terminal = status.get("terminalState", "")
    failed = _condition(status, "Failed")
    jobs = spec.get("replicatedJobs") or [{}]
    pods = sum(int(j.get("replicas") or 1) * int((j.get("template") or {}).get("spec", {}).get("completions") or 1)
               for j in jobs)
    completed = _condition(status, "Completed")
    return JobState(
        name=meta["name"], stage=(meta.get("labels") or {}).get(STAGE_LABEL, ""), kind="JobSet",
        complete=terminal == "Completed" or completed is not None, failed=terminal == "Failed" or failed is not None,
        failure_message=(failed or {}).get("message", ""), failed_pods=int(status.get("restarts") or 0),
        suspended=bool(spec.get("suspend")), completions=pods,
        completion_time=(completed or {}).get("lastTransitionTime"), owner_uid=_owner_uid(meta),
        uid=meta.get("uid", ""), queue=(meta.get("labels") or {}).get(QUEUE_LABEL, ""), created=meta.get("creationTimestamp"),
    )


def deployment_state(body: dict) -> DeploymentState:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
    return DeploymentState(
        name=meta["name"], policy=(meta.get("labels") or {}).get(POLICY_LABEL, ""),
        spec_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION, ""),
        replicas=int(spec.get("replicas") or 0), ready_replicas=int(status.get("readyReplicas") or 0),
        owner_uid=_owner_uid(meta), problem=_replica_failure(status),
    )


def _replica_failure(status: dict) -> Problem | None:
    failure = _condition(status, "ReplicaFailure")
    return Problem(failure.get("reason") or "FailedCreate", failure.get("message", "")) if failure else None


def child_state(body: dict) -> ChildState:
    meta = body.get("metadata", {})
    return ChildState(
        kind=body.get("kind", ""), name=meta["name"],
        spec_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION, ""), owner_uid=_owner_uid(meta),
        component=(meta.get("labels") or {}).get(COMPONENT_LABEL, ""),
    )


def pod_report(body: dict) -> PodReport:
    meta, status = body.get("metadata", {}), body.get("status") or {}
    terminated = {}
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or terminated
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return PodReport(
        name=meta["name"], job=labels.get(JOBSET_LABEL) or labels.get(JOB_NAME_LABEL) or labels.get("job-name", ""),
        index=int(annotations.get(INDEX_ANNOTATION, labels.get(INDEX_ANNOTATION, 0)) or 0),
        phase=status.get("phase", "Pending"), message=terminated.get("message"),
        exit_code=terminated.get("exitCode"), finished_at=terminated.get("finishedAt"),
        owner_uid=_owner_uid(meta), policy=labels.get(POLICY_LABEL, "") if not labels.get(JOB_NAME_LABEL) else "",
        problem=pod_problem(status),
    )


def pod_problem(status: dict) -> Problem | None:
    """Why a pod does not run or why it ended, in the words Kubernetes uses (None: nothing wrong).
    Eviction and OOM kills end a pod; a stuck container or an unschedulable pod keeps it Pending."""
    if status.get("reason") == "Evicted":
        return Problem("Evicted", status.get("message", ""))
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in containers:
        for state in (container.get("state") or {}, container.get("lastState") or {}):
            terminated = state.get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                return Problem("OOMKilled", f"container {container.get('name')} ran out of memory (exit code "
                                            f"{terminated.get('exitCode', 137)})")
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return Problem(waiting["reason"], f"container {container.get('name')}: {waiting.get('message', '')}".strip())
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Problem("Unschedulable", scheduled.get("message", ""))
    return None


def claim_state(name: str, body: dict | None) -> ClaimState:
    """A PersistentVolumeClaim as a ClaimState (body None: the API server has no such claim)."""
    if body is None:
        return ClaimState(name, found=False)
    spec, status = body.get("spec") or {}, body.get("status") or {}
    phase = status.get("phase", "")
    modes = (status.get("accessModes") if phase == "Bound" else None) or spec.get("accessModes") or []
    return ClaimState(name, access_modes=tuple(modes), phase=phase)


def failed_create(body: dict) -> Problem | None:
    """A Job controller's FailedCreate Event (quota, Pod Security, a missing PriorityClass): the only
    place Kubernetes reports why a Job has no pods."""
    if body.get("reason") != "FailedCreate":
        return None
    return Problem("FailedCreate", body.get("message", ""))


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """A termination message as a dict; a message that is not a JSON object becomes {"message": ...}."""
    if not message or not message.strip():
        return None
    try:
        value = json.loads(message.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"message": shorten(message)}
    return value if isinstance(value, dict) else {"message": shorten(message)}
