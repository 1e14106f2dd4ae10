"""Conditions (kstatus Ready, Reconciling, Stalled; Progressing, Degraded; StorageShared) and Events,
derived from the old and new status (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from negrl_operator.api.status import Condition, ExperimentStatus, StageStatus, parse_time
from negrl_operator.reconcile.storage import StorageCheck

RETRY_PREFIX = "retrying after"
RETRY_REQUESTED = "retry requested"  # spec.retry reset a failed stage
QUEUED_PREFIX = "queued"  # a Kueue-managed Job not admitted yet
GROUP_RESTART = "GroupRestart"  # a multi-node training Job lost a rank: the operator restarts the group


@dataclass(frozen=True)
class EventRecord:
    type: str  # Normal or Warning
    reason: str
    message: str


def _condition(kind: str, true: bool, reason: str, message: str, generation: int, old: Condition | None,
               now: str) -> Condition:
    status = "True" if true else "False"
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(type=kind, status=status, reason=reason, message=message, last_transition_time=since,
                     observed_generation=generation)


# Stage reasons that do not clear without a change (image, spec, quota, placement, a crashing
# container): kstatus Stalled. OOMKilled and Evicted pods are retried by the Job: Degraded only.
STALLED_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                   "CreateContainerConfigError", "CreateContainerError", "Unschedulable", "FailedCreate")
REJECTED_REASONS = ("InvalidSpec", "ApplyRejected")  # set by the shell: the spec or a child was refused
INVALID_SPEC, APPLY_REJECTED, APPLY_RETRYING = "InvalidSpec", "ApplyRejected", "ApplyRetrying"


def _blocking(status: ExperimentStatus) -> StageStatus | None:
    """The first stage whose reason explains why the experiment does not progress."""
    active = [s for s in status.stages if s.state in ("Running", "Waiting") and s.reason]
    return next((s for s in active if s.reason in STALLED_REASONS), active[0] if active else None)


def conditions(status: ExperimentStatus, old: ExperimentStatus, generation: int, now: str,
               storage: StorageCheck | None = None) -> list[Condition]:
    """kstatus's Ready/Reconciling/Stalled (Ready only once Succeeded: a Failed experiment is not
    Ready), the older Progressing/Degraded pair, each with a machine-readable reason, and StorageShared
    (`storage`; None: the claim was not read, the last StorageShared stays). StorageShared False does
    not stall the experiment: a ReadWriteOnce claim works while every pod runs on one node."""
    phase, message = status.phase, status.message
    retrying = [s for s in status.stages if s.state == "Running" and s.message.startswith(RETRY_PREFIX)]
    failed_any = any(s.state == "Failed" for s in status.stages)  # failurePolicy Continue: before the end too
    degraded_reason = "StageFailed" if failed_any else ("PodFailed" if retrying else "AsExpected")
    degraded_message = message if failed_any else "; ".join(f"{s.name}: {s.message}" for s in retrying)
    if retrying and not failed_any and retrying[0].reason not in ("", "PodFailed"):
        degraded_reason = retrying[0].reason  # OOMKilled, Evicted
    progressing_reason = {"Pending": "Waiting", "Running": "StagesRunning"}.get(phase, phase)
    active = [s for s in status.stages if s.state in ("Running", "Waiting")]
    if phase == "Running" and active and all(s.message.startswith(QUEUED_PREFIX) for s in active):
        progressing_reason = "Queued"
    # A failure's text is said once, in Degraded (and status.message); the others point there.
    ended = f"stage {status.stage} failed (see Degraded)" if phase == "Failed" else message
    progressing_message = f"running: {status.stage}" if status.stage and phase == "Running" else ended
    blocking = _blocking(status)
    failed = next((s for s in status.stages if s.state == "Failed"), None)
    stalled_reason = ""
    if phase == "Failed":
        stalled_reason = failed.reason if failed is not None and failed.reason not in ("", "JobFailed") else "StageFailed"
    elif blocking is not None and blocking.reason in STALLED_REASONS:
        stalled_reason = blocking.reason
    stalled_message = ended if phase == "Failed" else (f"{blocking.name}: {blocking.message}" if blocking else "")
    reconciling = phase in ("Pending", "Running") and not stalled_reason
    reconciling_reason = blocking.reason if blocking is not None else progressing_reason
    ready_reason = phase if phase in ("Succeeded", "Failed") or blocking is None else blocking.reason
    return [
        _condition("Ready", phase == "Succeeded", ready_reason, stalled_message or ended, generation,
                   old.condition("Ready"), now),
        _condition("Reconciling", reconciling, reconciling_reason if reconciling else phase,
                   (stalled_message or progressing_message) if reconciling else "", generation,
                   old.condition("Reconciling"), now),
        _condition("Stalled", bool(stalled_reason), stalled_reason or "AsExpected", stalled_message if stalled_reason
                   else "", generation, old.condition("Stalled"), now),
        _condition("Progressing", phase in ("Pending", "Running"), progressing_reason, progressing_message,
                   generation, old.condition("Progressing"), now),
        _condition("Degraded", degraded_reason != "AsExpected", degraded_reason, degraded_message, generation,
                   old.condition("Degraded"), now),
        *_storage_condition(storage, generation, old.condition("StorageShared"), now),
    ]


def _storage_condition(check: StorageCheck | None, generation: int, old: Condition | None, now: str) -> list[Condition]:
    if check is None:
        return [old] if old is not None else []
    since = old.last_transition_time if old is not None and old.status == check.status else now
    return [Condition(type="StorageShared", status=check.status, reason=check.reason, message=check.message,
                      last_transition_time=since, observed_generation=generation)]


def rejected(status: ExperimentStatus, reason: str, message: str, generation: int, now: str) -> ExperimentStatus:
    """The status after the spec or a child was refused (InvalidSpec, ApplyRejected): Stalled with the
    refusal's words, not Ready, not Reconciling; a spec the operator cannot read makes the phase Invalid
    (until the spec changes); the stages stay as they were."""
    old = status
    stalled = [
        _condition("Ready", False, reason, message, generation, old.condition("Ready"), now),
        _condition("Reconciling", False, reason, "", generation, old.condition("Reconciling"), now),
        _condition("Stalled", True, reason, message, generation, old.condition("Stalled"), now),
    ]
    kept = [c for c in old.conditions if c.type not in ("Ready", "Reconciling", "Stalled")]
    phase = "Invalid" if reason == INVALID_SPEC else status.phase
    return status.model_copy(update={"conditions": stalled + kept, "message": message, "phase": phase,
                                     "observed_generation": generation})


def retrying(status: ExperimentStatus, message: str, generation: int, now: str) -> ExperimentStatus:
    """The status while writes to the API server fail for a reason that may pass (connection, 429, 5xx):
    Reconciling ApplyRetrying with the last error, not Ready, not Stalled; the stages stay as they were."""
    old = status
    updated = [
        _condition("Ready", False, APPLY_RETRYING, message, generation, old.condition("Ready"), now),
        _condition("Reconciling", True, APPLY_RETRYING, message, generation, old.condition("Reconciling"), now),
        _condition("Stalled", False, "AsExpected", "", generation, old.condition("Stalled"), now),
    ]
    kept = [c for c in old.conditions if c.type not in ("Ready", "Reconciling", "Stalled")]
    return status.model_copy(update={"conditions": updated + kept, "message": message})


def refresh_after(status: ExperimentStatus, now: datetime) -> float | None:
    """Seconds until a waiting stage's "(Nm)" in its message goes stale (the next whole minute since it
    began to wait, plus a second so the reconcile lands past it), so the shell reconciles it then; None
    when no message counts minutes."""
    waiting = [parse_time(s.since) for s in status.stages if s.state == "Waiting" and s.reason == "SamplerNotReady"
               and s.since]
    if not waiting:
        return None
    return min(61.0 - (now - since).total_seconds() % 60.0 for since in waiting)


def _summary_text(stage: StageStatus) -> str:
    parts = [f"{k}={v}" for k, v in sorted(stage.summary.items()) if isinstance(v, int | float | str)][:8]
    return ", ".join(parts)


def _stage_event(old: StageStatus | None, new: StageStatus) -> EventRecord | None:
    before = old.state if old else "Pending"
    if new.state == before and new.reason and new.reason != (old.reason if old else "") and new.reason != "Suspended":
        if new.reason == "SamplerNotReady":
            return None  # StageWaiting said it when the stage began to wait
        return EventRecord("Warning", new.reason, f"stage {new.name}: {new.message}")
    if new.state == before:
        if new.message.startswith(RETRY_PREFIX) and (old is None or new.message != old.message):
            return EventRecord("Warning", "PodFailed", f"stage {new.name}: {new.message}")
        return None
    if new.state == "Running":
        return EventRecord("Normal", "StageStarted", f"stage {new.name} started (Job {new.job})")
    if new.state == "Succeeded":
        return EventRecord("Normal", "StageSucceeded", f"stage {new.name} succeeded: {_summary_text(new)}")
    if new.state == "Failed":
        return EventRecord("Warning", "StageFailed", f"stage {new.name} failed: {new.message}")
    if new.state == "Waiting":
        return EventRecord("Normal", "StageWaiting", f"stage {new.name}: {new.message}")
    return None


PHASE_EVENTS = {
    "Succeeded": ("Normal", "Succeeded"), "Failed": ("Warning", "Failed"), "Suspended": ("Normal", "Suspended"),
    "Degraded": ("Warning", "Degraded"),
}


def _best_text(status: ExperimentStatus) -> str:
    results = status.results
    if results.best_accuracy is None:
        return "no policy was evaluated"
    return f"best pass@1 {results.best_accuracy:.4g} ({results.best_policy})"


def events(old: ExperimentStatus, new: ExperimentStatus) -> list[EventRecord]:
    """One Event per transition: stages starting, finishing, failing or retrying, phase changes, and a
    claim that the experiment's pods cannot share (StorageShared turning False or changing reason)."""
    recorded = {stage.name: stage for stage in old.stages}
    found = [_stage_event(recorded.get(stage.name), stage) for stage in new.stages]
    result = [event for event in found if event is not None]
    storage, before = new.condition("StorageShared"), old.condition("StorageShared")
    if storage is not None and storage.status == "False" and (
            before is None or (before.status, before.reason, before.message) != ("False", storage.reason, storage.message)):
        result.append(EventRecord("Warning", storage.reason, storage.message))
    if new.phase != old.phase:
        if new.phase in PHASE_EVENTS:
            kind, reason = PHASE_EVENTS[new.phase]
            text = new.message or _best_text(new)
            result.append(EventRecord(kind, reason, f"experiment {new.phase.lower()}: {text}"))
        elif old.phase == "Suspended":
            result.append(EventRecord("Normal", "Resumed", "experiment resumed"))
        elif old.phase in ("Failed", "Degraded"):
            result.append(EventRecord("Normal", "Retrying", f"experiment reopened for retry {new.retry}"))
    return result
