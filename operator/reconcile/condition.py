"""Conditions (Ready, Progressing, Degraded) and Events, derived from the old and new status (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from negrl_operator.api.status import Condition, ExperimentStatus, StageStatus

RETRY_PREFIX = "retrying after"
RETRY_REQUESTED = "retry requested"  # spec.retry reset a failed stage
QUEUED_PREFIX = "queued"  # a Kueue-managed Job not admitted yet


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


def conditions(status: ExperimentStatus, old: ExperimentStatus, generation: int, now: str) -> list[Condition]:
    phase, message = status.phase, status.message
    retrying = [s for s in status.stages if s.state == "Running" and s.message.startswith(RETRY_PREFIX)]
    failed = any(s.state == "Failed" for s in status.stages)  # failurePolicy Continue: before the end too
    degraded_reason = "StageFailed" if failed else ("PodFailed" if retrying else "AsExpected")
    degraded_message = message if failed else "; ".join(f"{s.name}: {s.message}" for s in retrying)
    progressing_reason = {"Pending": "Waiting", "Running": "StagesRunning"}.get(phase, phase)
    active = [s for s in status.stages if s.state in ("Running", "Waiting")]
    if phase == "Running" and active and all(s.message.startswith(QUEUED_PREFIX) for s in active):
        progressing_reason = "Queued"
    progressing_message = f"running: {status.stage}" if status.stage and phase == "Running" else message
    return [
        _condition("Ready", phase == "Succeeded", phase, message, generation, old.condition("Ready"), now),
        _condition("Progressing", phase in ("Pending", "Running"), progressing_reason, progressing_message,
                   generation, old.condition("Progressing"), now),
        _condition("Degraded", degraded_reason != "AsExpected", degraded_reason, degraded_message, generation,
                   old.condition("Degraded"), now),
    ]


def _summary_text(stage: StageStatus) -> str:
    parts = [f"{k}={v}" for k, v in sorted(stage.summary.items()) if isinstance(v, int | float | str)][:8]
    return ", ".join(parts)


def _stage_event(old: StageStatus | None, new: StageStatus) -> EventRecord | None:
    before = old.state if old else "Pending"
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


def events(old: ExperimentStatus, new: ExperimentStatus) -> list[EventRecord]:
    """One Event per transition: stages starting, finishing, failing or retrying, and phase changes."""
    recorded = {stage.name: stage for stage in old.stages}
    found = [_stage_event(recorded.get(stage.name), stage) for stage in new.stages]
    result = [event for event in found if event is not None]
    if new.phase != old.phase:
        if new.phase in PHASE_EVENTS:
            kind, reason = PHASE_EVENTS[new.phase]
            text = new.message or f"best pass@1 {new.results.best_accuracy} ({new.results.best_policy})"
            result.append(EventRecord(kind, reason, f"experiment {new.phase.lower()}: {text}"))
        elif old.phase == "Suspended":
            result.append(EventRecord("Normal", "Resumed", "experiment resumed"))
        elif old.phase in ("Failed", "Degraded"):
            result.append(EventRecord("Normal", "Retrying", f"experiment reopened for retry {new.retry}"))
    return result
