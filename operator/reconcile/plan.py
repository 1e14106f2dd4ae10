"""plan(): from spec, recorded status and observed children to what should change (pure).

Rules:
- A stage is Succeeded once its Job completes (its summary is copied from the pods' termination
  messages) and Failed once its Job gives up (backoff limit); both are recorded and never revisited.
  Pod failures while the Job still retries make the experiment Degraded; a failed Job fails it.
- A stage starts (ConfigMap + Job are created) when its dependencies have succeeded and, if it
  samples a policy, that policy's sampler is ready. Children are created once: a running or
  finished stage is never re-rendered, so spec changes reach only stages that start later (and
  the samplers, which are re-applied whenever their rendering changes).
- A sampler exists exactly while some runnable stage samples its policy; others are deleted. The
  served teacher is one too (`<experiment>-teacher`): it goes as soon as the synthesize stage is done.
- `suspend`: samplers scale to zero, running Jobs are suspended, no Job is created.
- Kueue: a Job with a LocalQueue is created suspended and its spec.suspend is never touched (Kueue
  unsuspends it on admission); `suspend` deactivates its Workload instead (Kueue's supported way),
  and a queued Job's stage waits with a message saying so.
- Succeeded, Failed and Degraded are terminal: no child is created again; samplers and still-active
  Jobs are deleted.
- `failurePolicy: FailFast`: a failed stage fails the experiment. `Continue`: stages that need no
  failed stage (directly or not) go on; at the end the experiment is Degraded if some policy was
  evaluated, else Failed; the failed and the skipped stages are named in its message.
- `spec.retry` above `status.retry`: failed stages go back to Pending (a terminal experiment
  reopens); each failed Job is deleted, and its stage starts again once the Job is gone.
- Multi-node training on a plain Job (trainer.launcher Job, nodes > 1): a lost rank cannot rejoin
  the survivors' torchrun rendezvous in place, so the Job has no pod retries and, when it fails for
  a lost pod (BackoffLimitExceeded), the operator deletes it and starts the whole group again, which
  resumes from the last checkpoint: what JobSet does, up to trainer.maxRestarts times.
- A stage that does not progress says why with a reason (a stuck pod's ImagePullBackOff,
  Unschedulable, ..., a Job's FailedCreate, a retried pod's OOMKilled/Evicted, SamplerNotReady) and
  since when; condition.py turns the reasons into kstatus conditions and Events.
- Artifacts live under the experiment's uid (graph.storage_root), except for an experiment a
  version without the uid started: it keeps its root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.status import (
    TERMINAL_PHASES,
    ExperimentStatus,
    Phase,
    StageStatus,
    parse_time,
    rfc3339,
)
from negrl_operator.api.termination import shorten
from negrl_operator.reconcile.condition import (
    GROUP_RESTART,
    QUEUED_PREFIX,
    RETRY_PREFIX,
    RETRY_REQUESTED,
    EventRecord,
    conditions,
    events,
)
from negrl_operator.reconcile.graph import (
    StageNode,
    policies_to_serve,
    policy_model,
    runnable,
    stage_config,
    stage_dir,
    stage_graph,
)
from negrl_operator.reconcile.graph import storage_root as experiment_root
from negrl_operator.reconcile.manifest import METRICS_PORT, Owner, job_name, stage_children
from negrl_operator.reconcile.observation import JobState, Observed, PodReport
from negrl_operator.reconcile.result import failure_message, job_summary, results
from negrl_operator.reconcile.serving import (
    SERVER_COMPONENTS,
    sampler_deployment,
    sampler_name,
    sampler_service,
    server_ref,
    serving,
)
from negrl_operator.reconcile.storage import StorageCheck, storage_check

SUMMARY_GRACE_S = 20.0  # a completed Job's pods may report their termination message a moment later


@dataclass(frozen=True)
class ChildRef:
    kind: str
    name: str


@dataclass
class Plan:
    apply: list[dict] = field(default_factory=list)  # server-side apply, in order
    delete: list[ChildRef] = field(default_factory=list)
    suspend: dict[str, bool] = field(default_factory=dict)  # Job name -> spec.suspend to set
    suspend_jobsets: dict[str, bool] = field(default_factory=dict)  # the same for JobSets (trainer.launcher)
    # Kueue-managed Job uid -> whether its Workload should be active (Kueue's way to stop and resume it)
    workloads_active: dict[str, bool] = field(default_factory=dict)
    status: ExperimentStatus = field(default_factory=ExperimentStatus)
    events: list[EventRecord] = field(default_factory=list)
    requeue_after: float | None = None


def plan(owner: Owner, generation: int, spec: ExperimentSpec, status: ExperimentStatus, observed: Observed,
         now: datetime) -> Plan:
    nodes, root = stage_graph(spec), artifact_root(spec, owner, status)
    recorded = status
    if spec.retry > status.retry:
        status = _reopen(status, spec.retry)
    storage = storage_check(observed.claim, owner.namespace, spec, nodes) if observed.claim is not None else None
    if status.phase in TERMINAL_PHASES:
        return _finish(owner, generation, status, status, observed, now)
    result = Plan()
    stages = [_observe(node, status.stage_named(node.name), spec, observed, owner, root, now, result) for node in nodes]
    done = {stage.name for stage in stages if stage.state == "Succeeded"}
    failed = {stage.name for stage in stages if stage.state == "Failed"}
    blocked = _blocked(nodes, failed)
    serve = policies_to_serve([node for node in nodes if node.name not in failed], done)
    if (not failed or spec.failure_policy == "Continue") and len(done) < len(nodes):
        stages = _start(owner, spec, nodes, stages, done, serve, observed, root, now, result)
        _reconcile_samplers(owner, spec, serve, observed, root, result)
        active = [job for job in observed.jobs.values() if not (job.complete or job.failed)]
        flip = [job for job in active if not job.queue and job.suspended != spec.suspend]
        result.suspend = {job.name: spec.suspend for job in flip if job.kind == "Job"}
        result.suspend_jobsets = {job.name: spec.suspend for job in flip if job.kind == "JobSet"}
        result.workloads_active = {job.uid: not spec.suspend for job in active
                                   if job.queue and (spec.suspend or job.suspended)}
    new = _status(status, stages, spec, nodes, now, blocked)
    names = {node.name for node in nodes}
    result.delete += [ChildRef(job.kind, job.name) for job in observed.jobs.values() if job.stage not in names]
    if new.phase in TERMINAL_PHASES:
        return _finish(owner, generation, status, new, observed, now)
    result.status = _with_conditions(new, status, generation, now, storage)
    result.events = events(recorded, result.status)
    return result


def artifact_root(spec: ExperimentSpec, owner: Owner, status: ExperimentStatus) -> str:
    """The experiment's storage root, with its uid; an experiment started by a version that had no uid
    in the path keeps that root, so its later stages find their inputs."""
    legacy = experiment_root(spec, owner.namespace, owner.name)
    started = [stage.artifact for stage in status.stages if stage.artifact and stage.state != "Pending"]
    if started and all(path.rsplit("/", 1)[0] == legacy for path in started):
        return legacy
    return experiment_root(spec, owner.namespace, owner.name, owner.uid)


def _observe(node: StageNode, recorded: StageStatus | None, spec: ExperimentSpec, observed: Observed, owner: Owner,
             root: str, now: datetime, result: Plan) -> StageStatus:
    """The stage as its Job shows it; state Pending means "no Job" (the caller decides what to do)."""
    name = job_name(owner.name, node)
    stage = recorded or StageStatus(name=node.name, kind=node.kind, artifact=stage_dir(root, node.name), job=name)
    if stage.state in ("Succeeded", "Failed"):
        return stage
    job = observed.jobs.get(name)
    if job is None:
        return stage.model_copy(update={"state": "Pending"})
    if job.failed and stage.message.startswith(RETRY_REQUESTED):
        result.delete.append(ChildRef(job.kind, name))  # the stage starts again once this Job is gone
        return stage.model_copy(update={"state": "Waiting", "message": f"{RETRY_REQUESTED}: deleting failed Job {name}"})
    if job.failed and stage.reason == GROUP_RESTART:
        result.delete.append(ChildRef(job.kind, name))  # still going: the group restart already counted
        return stage
    if job.failed and restarts_group(node, job, stage, spec):
        result.delete.append(ChildRef(job.kind, name))
        restart = stage.restarts + 1
        message = (f"a rank was lost ({failure_message(observed.pods_of(name), job.failure_message)}); restarting "
                   f"the training group from its last checkpoint ({restart} of {spec.trainer.max_restarts})")
        return _reasoned(stage.model_copy(update={"state": "Waiting", "restarts": restart}), GROUP_RESTART,
                         shorten(message, 1024), now)
    pods = observed.pods_of(name)
    if job.complete:
        return _completed(stage, node, job, observed, now, result)
    if job.failed:
        message = failure_message(pods, job.failure_message)
        reason = next((pod.problem.reason for pod in reversed(pods) if pod.phase == "Failed" and pod.problem),
                      "JobFailed")
        return stage.model_copy(update={"state": "Failed", "finish_time": rfc3339(now), "message": message,
                                        "reason": reason, "since": rfc3339(now)})
    if job.queue and job.suspended and not job.failed_pods:  # Kueue, not the operator, unsuspends it
        queued = f"{QUEUED_PREFIX} in Kueue LocalQueue {job.queue}: not admitted yet (quota or a free flavor)"
        return stage.model_copy(update={"state": "Waiting", "message": queued, "reason": "", "since": None})
    reason, message = _running_problem(job, pods, observed)
    return _reasoned(stage.model_copy(update={"state": "Running", "start_time": stage.start_time or rfc3339(now)}),
                     reason, message, now)


def restarts_group(node: StageNode, job: JobState, stage: StageStatus, spec: ExperimentSpec) -> bool:
    """A failed plain training Job of several pods that lost a pod (not a config error, not its deadline)
    and has restarts left is restarted whole by the operator."""
    return (node.kind == "train" and job.kind == "Job" and spec.trainer.nodes > 1 and spec.trainer.launcher == "Job"
            and job.failure_reason == "BackoffLimitExceeded" and stage.restarts < spec.trainer.max_restarts)


def _running_problem(job: JobState, pods: list[PodReport], observed: Observed) -> tuple[str, str]:
    """Why a running stage does not progress (a stuck pod, no pods at all) or what it retries after."""
    stuck = [pod for pod in pods if pod.phase in ("Pending", "Running") and pod.problem is not None]
    if stuck:
        pod = stuck[-1]
        return pod.problem.reason, f"pod {pod.name}: {pod.problem.reason}: {pod.problem.message}".rstrip(": ")
    if not pods and not job.active and not job.suspended and job.name in observed.job_events:
        problem = observed.job_events[job.name]
        return problem.reason, f"the Job cannot create pods: {problem.message}"
    if job.failed_pods:
        ended = [pod for pod in pods if pod.phase == "Failed"]
        reason = next((pod.problem.reason for pod in reversed(ended) if pod.problem), "PodFailed")
        return reason, f"{RETRY_PREFIX} {job.failed_pods} failed pod(s): {failure_message(pods, reason)}"
    return "", ""


def _reasoned(stage: StageStatus, reason: str, message: str, now: datetime) -> StageStatus:
    """The stage with its reason and message; `since` stays while the reason does."""
    since = stage.since if reason and reason == stage.reason and stage.since else (rfc3339(now) if reason else None)
    return stage.model_copy(update={"reason": reason, "message": message, "since": since})


def _completed(stage: StageStatus, node: StageNode, job: JobState, observed: Observed, now: datetime,
               result: Plan) -> StageStatus:
    summary, missing = job_summary(node.kind, observed.pods_of(job.name), job.completions)
    finished = job.completion_time or rfc3339(now)
    if missing and (now - parse_time(finished)).total_seconds() < SUMMARY_GRACE_S:
        result.requeue_after = 2.0
        return stage.model_copy(update={"state": "Running", "message": "waiting for the Job's summary",
                                        "start_time": stage.start_time or rfc3339(now)})
    return stage.model_copy(update={"state": "Succeeded", "finish_time": finished, "summary": summary, "message": "",
                                    "reason": "", "since": None})


def _start(owner: Owner, spec: ExperimentSpec, nodes: list[StageNode], stages: list[StageStatus], done: set[str],
           serve: list[str], observed: Observed, root: str, now: datetime, result: Plan) -> list[StageStatus]:
    """Create the Jobs of runnable stages that have none; others wait (dependencies, sampler, suspend)."""
    ready = {p for p in serve if (d := observed.deployments.get(sampler_name(owner.name, p))) and d.ready_replicas}
    startable = {node.name for node in runnable(nodes, done)}
    by_name = {node.name: node for node in nodes}
    updated = []
    for stage in stages:
        node = by_name[stage.name]
        if stage.state != "Pending" or node.name not in startable:
            updated.append(stage)
        elif spec.suspend:
            updated.append(_reasoned(stage, "Suspended", "suspended", now))
        elif node.serves and node.serves not in ready:
            component = serving(spec, node.serves).component
            updated.append(_waiting(stage, owner, component, node.serves, observed, now))
        else:
            server = None
            if node.serves:  # the teacher's own concurrency; the samplers' is ServerRef's default
                limit = serving(spec, node.serves).max_concurrency
                server = server_ref(owner, node.serves, spec.sampler.client_wait_s, limit)
            config = stage_config(spec, node, root, server, experiment=owner.name, metrics_port=METRICS_PORT)
            result.apply += stage_children(owner, spec, node, config)
            updated.append(stage.model_copy(update={"state": "Running", "message": "", "reason": "", "since": None,
                                                    "start_time": stage.start_time or rfc3339(now)}))
    return updated


def _waiting(stage: StageStatus, owner: Owner, component: str, policy: str, observed: Observed,
             now: datetime) -> StageStatus:
    """Waiting for a sampler (or the served teacher): SamplerNotReady for how long (whole minutes, so the
    status changes once a minute, not every reconcile), with its pods' or Deployment's own problem when
    there is one."""
    name = sampler_name(owner.name, policy)
    waiting = _reasoned(stage.model_copy(update={"state": "Waiting"}), "SamplerNotReady", "", now)
    minutes = int((now - parse_time(waiting.since)).total_seconds() // 60) if waiting.since else 0
    message = f"waiting for {component} {name} to be ready ({f'{minutes}m' if minutes else 'under 1m'})"
    deployment = observed.deployments.get(name)
    problems = [pod.problem for pod in observed.sampler_pods(policy) if pod.problem]
    problems += [deployment.problem] if deployment is not None and deployment.problem else []
    if problems:
        message += f": {problems[0].reason}: {problems[0].message}".rstrip(": ")
    return waiting.model_copy(update={"message": message})


def _reconcile_samplers(owner: Owner, spec: ExperimentSpec, serve: list[str], observed: Observed, root: str,
                        result: Plan) -> None:
    for policy in serve:
        name, replicas = sampler_name(owner.name, policy), 0 if spec.suspend else serving(spec, policy).replicas
        deployment = sampler_deployment(owner, spec, policy, policy_model(spec, policy, root), replicas)
        service = sampler_service(owner, policy)
        current = observed.deployments.get(name)
        if current is None or current.spec_hash != _hash(deployment):
            result.apply.append(deployment)
        if not observed.has("Service", name) or observed.others[("Service", name)].spec_hash != _hash(service):
            result.apply.append(service)
    result.delete += _unneeded_samplers(owner, serve, observed)


def _unneeded_samplers(owner: Owner, serve: list[str], observed: Observed) -> list[ChildRef]:
    wanted = {sampler_name(owner.name, policy) for policy in serve}
    deployments = [ChildRef("Deployment", name) for name in sorted(observed.deployments) if name not in wanted]
    services = [ChildRef("Service", child.name) for child in observed.others.values()
                if child.kind == "Service" and child.component in SERVER_COMPONENTS and child.name not in wanted]
    return deployments + sorted(services, key=lambda ref: ref.name)


def _hash(manifest: dict) -> str:
    return manifest["metadata"]["annotations"]["negrl.io/spec-hash"]


def _reopen(status: ExperimentStatus, retry: int) -> ExperimentStatus:
    """spec.retry was raised: failed stages go back to Pending; a terminal experiment runs again."""
    stages = [stage.model_copy(update={"state": "Pending", "message": f"{RETRY_REQUESTED} ({retry})",
                                       "finish_time": None})
              if stage.state == "Failed" else stage for stage in status.stages]
    phase = "Running" if status.phase in TERMINAL_PHASES else status.phase
    return status.model_copy(update={"stages": stages, "retry": retry, "phase": phase, "finish_time": None})


def _blocked(nodes: list[StageNode], failed: set[str]) -> set[str]:
    """Stages that need a failed stage, directly or through others (nodes come dependencies first)."""
    blocked: set[str] = set()
    for node in nodes:
        if any(need in failed or need in blocked for need in node.needs):
            blocked.add(node.name)
    return blocked


def _phase(stages: list[StageStatus], spec: ExperimentSpec, started: bool, blocked: set[str]) -> Phase:
    if any(stage.state == "Failed" for stage in stages):
        if spec.failure_policy == "FailFast":
            return "Failed"
        if not any(s.state in ("Running", "Waiting") or (s.state == "Pending" and s.name not in blocked)
                   for s in stages):
            evaluated = any(s.kind == "evaluate" and s.state == "Succeeded" for s in stages)
            return "Degraded" if evaluated else "Failed"
    elif all(stage.state == "Succeeded" for stage in stages):
        return "Succeeded"
    if spec.suspend:
        return "Suspended"
    return "Running" if started or any(stage.state == "Running" for stage in stages) else "Pending"


def _headline(error: str) -> str:
    """The first line of a stage's error, bounded: the stage keeps the whole (bounded) text."""
    return shorten(error.strip().splitlines()[0], 256) if error.strip() else ""


def _status(old: ExperimentStatus, stages: list[StageStatus], spec: ExperimentSpec, nodes: list[StageNode],
            now: datetime, blocked: set[str]) -> ExperimentStatus:
    phase = _phase(stages, spec, old.start_time is not None, blocked)
    running = [s.name for s in stages if s.state == "Running"] or [s.name for s in stages if s.state == "Waiting"]
    failed = [s for s in stages if s.state == "Failed"]
    message = _failure_message(failed, stages, blocked, spec.failure_policy == "Continue") if failed else ""
    if not message and phase != "Succeeded":
        waiting = (s for s in stages if s.state == "Waiting" or (s.state == "Running" and s.reason))
        message = next((f"{s.name}: {s.message}" for s in waiting), "")
    policy_of = {node.name: node.serves for node in nodes if node.role == "eval"}  # not eval-train
    shown = failed if phase in TERMINAL_PHASES or not running else []
    return old.model_copy(update={
        "phase": phase, "stage": ",".join(s.name for s in shown) if shown else ",".join(running),
        "message": message, "stages": stages, "results": results(stages, policy_of),
        "start_time": old.start_time or (rfc3339(now) if phase in ("Running", *TERMINAL_PHASES) else None),
        "finish_time": (old.finish_time or rfc3339(now)) if phase in TERMINAL_PHASES else None,
    })


def _failure_message(failed: list[StageStatus], stages: list[StageStatus], blocked: set[str], named: bool) -> str:
    """The first failure's message; with failurePolicy Continue also every failed and skipped stage."""
    message = f"stage {failed[0].name} failed: {_headline(failed[0].message)}"
    if not named:
        return message
    skipped = [s.name for s in stages if s.name in blocked and s.state == "Pending"]
    names = f"failed: {', '.join(s.name for s in failed)}"
    return f"{names}; not run (they need a failed stage): {', '.join(skipped) or 'none'}; {message}"


def _with_conditions(new: ExperimentStatus, old: ExperimentStatus, generation: int, now: datetime,
                     storage: StorageCheck | None = None) -> ExperimentStatus:
    new = new.model_copy(update={"observed_generation": generation})
    return new.model_copy(update={"conditions": conditions(new, old, generation, rfc3339(now), storage)})


def _finish(owner: Owner, generation: int, old: ExperimentStatus, new: ExperimentStatus, observed: Observed,
            now: datetime) -> Plan:
    """Terminal: nothing is created; samplers and active Jobs go (their GPUs are no longer needed)."""
    if old.phase in TERMINAL_PHASES:
        new = old
    active = sorted((job.name, job.kind) for job in observed.jobs.values() if not (job.complete or job.failed))
    delete = [ChildRef(kind, name) for name, kind in active] + _unneeded_samplers(owner, [], observed)
    status = _with_conditions(new, old, generation, now)
    return Plan(delete=delete, status=status, events=events(old, status))
