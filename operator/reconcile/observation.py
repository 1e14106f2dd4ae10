"""What the operator observes of an experiment's children, as small typed values.

The shell keeps these in kopf indices (filled from watch streams, so a reconcile makes no reads);
`plan()` takes them as input. Parsing a Kubernetes object into one of these is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

HASH_ANNOTATION = "negrl.io/spec-hash"
STAGE_LABEL = "negrl.io/stage"
POLICY_LABEL = "negrl.io/policy"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGER = "negrl-operator"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"


@dataclass(frozen=True)
class JobState:
    name: str
    stage: str
    complete: bool = False
    failed: bool = False  # the Job gave up (backoff limit reached)
    failure_message: str = ""  # the Job's Failed condition message
    failed_pods: int = 0
    active: int = 0
    suspended: bool = False
    completions: int = 1
    completion_time: str | None = None
    owner_uid: str = ""
    uid: str = ""
    queue: str = ""  # Kueue LocalQueue: Kueue, not the operator, owns this Job's spec.suspend
    kind: str = "Job"  # or JobSet (trainer.launcher); failed_pods then counts group restarts


@dataclass(frozen=True)
class DeploymentState:
    name: str
    policy: str
    spec_hash: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    owner_uid: str = ""


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


@dataclass(frozen=True)
class Observed:
    jobs: dict[str, JobState] = field(default_factory=dict)
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    others: dict[tuple[str, str], ChildState] = field(default_factory=dict)
    pods: tuple[PodReport, ...] = ()

    def pods_of(self, job: str) -> list[PodReport]:
        return [pod for pod in self.pods if pod.job == job]

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
        failure_message=(failed or {}).get("message", ""), failed_pods=int(status.get("failed") or 0),
        active=int(status.get("active") or 0), suspended=bool(spec.get("suspend")),
        completions=int(spec.get("completions") or 1),
        completion_time=status.get("completionTime"), owner_uid=_owner_uid(meta), uid=meta.get("uid", ""),
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
        uid=meta.get("uid", ""), queue=(meta.get("labels") or {}).get(QUEUE_LABEL, ""),
    )


def deployment_state(body: dict) -> DeploymentState:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
    return DeploymentState(
        name=meta["name"], policy=(meta.get("labels") or {}).get(POLICY_LABEL, ""),
        spec_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION, ""),
        replicas=int(spec.get("replicas") or 0), ready_replicas=int(status.get("readyReplicas") or 0),
        owner_uid=_owner_uid(meta),
    )


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
        owner_uid=_owner_uid(meta),
    )


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """A termination message as a dict; a message that is not a JSON object becomes {"message": ...}."""
    if not message or not message.strip():
        return None
    try:
        value = json.loads(message.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"message": message.strip()[-1024:]}
    return value if isinstance(value, dict) else {"message": message.strip()[-1024:]}
