"""Stuck states: pod and Job statuses mapped to stage reasons, kstatus conditions and Events (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from negrl_operator.api.status import ExperimentStatus, parse_status
from negrl_operator.reconcile.condition import rejected
from negrl_operator.reconcile.observation import Observed, PodReport, Problem, deployment_state, pod_problem
from negrl_operator.reconcile.plan import artifact_root
from tests.unit.test_plan import OWNER, Run, condition, reasons

WAITING = {"phase": "Pending", "containerStatuses": [{"name": "stage", "state": {"waiting": {
    "reason": "ImagePullBackOff", "message": 'Back-off pulling image "negrl:typo"'}}}]}
CRASHING = {"phase": "Running", "containerStatuses": [{"name": "stage", "state": {"waiting": {
    "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]}
OOM = {"phase": "Failed", "containerStatuses": [{"name": "stage", "state": {"terminated": {
    "reason": "OOMKilled", "exitCode": 137}}}]}
EVICTED = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
UNSCHEDULABLE = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                     "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}


@pytest.mark.parametrize(("status", "expected"), [
    (WAITING, Problem("ImagePullBackOff", 'container stage: Back-off pulling image "negrl:typo"')),
    (CRASHING, Problem("CrashLoopBackOff", "container stage: back-off 40s restarting failed container")),
    (OOM, Problem("OOMKilled", "container stage ran out of memory (exit code 137)")),
    (EVICTED, Problem("Evicted", "The node was low on resource: memory.")),
    (UNSCHEDULABLE, Problem("Unschedulable", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")),
    ({"phase": "Running", "containerStatuses": [{"name": "stage", "state": {"running": {}}}]}, None),
    ({"phase": "Pending", "containerStatuses": [{"name": "s", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
     None),  # normal start-up is not a problem
    ({"phase": "Running", "containerStatuses": [{"name": "s", "state": {"running": {}},
                                                 "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]},
     Problem("OOMKilled", "container s ran out of memory (exit code 137)")),  # restarted after an OOM kill
])
def test_pod_status_maps_to_a_problem(status, expected):
    assert pod_problem(status) == expected


def stuck(run: Run, job: str, phase: str, problem: Problem, name: str = "p0") -> None:
    run.cluster.pods.append(PodReport(name, job, 0, phase, owner_uid=f"uid-{job}", problem=problem))


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "CrashLoopBackOff", "Unschedulable"])
def test_a_stuck_pod_stalls_the_experiment_with_its_reason_and_event(reason):
    run = Run()
    run.step()
    stuck(run, "exp-data-prepare", "Pending", Problem(reason, "detail"))
    result = run.step()
    stage = run.status.stage_named("prepare")
    assert (stage.state, stage.reason, stage.message) == ("Running", reason, f"pod p0: {reason}: detail")
    assert stage.since == run.status.condition("Stalled").last_transition_time
    assert condition(run.status, "Stalled") == ("True", reason)
    assert condition(run.status, "Reconciling") == ("False", "Running")
    assert condition(run.status, "Ready") == ("False", reason)
    assert run.status.message == f"prepare: pod p0: {reason}: detail"
    assert reasons(result) == [reason]
    assert run.step().events == []  # reported once
    run.cluster.pods.clear()  # the image is fixed: the pod runs
    run.step()
    assert condition(run.status, "Stalled") == ("False", "AsExpected")
    assert condition(run.status, "Reconciling") == ("True", "StagesRunning")
    assert run.status.stage_named("prepare").reason == ""


def test_a_job_that_cannot_create_pods_reports_failed_create():
    run = Run()
    run.step()
    forbidden = Problem("FailedCreate", 'pods "exp-data-prepare-x" is forbidden: exceeded quota: none')
    observed = run.cluster.observed
    run.cluster.observed = lambda: replace(observed(), job_events={"exp-data-prepare": forbidden})
    result = run.step()
    stage = run.status.stage_named("prepare")
    assert (stage.reason, stage.message) == ("FailedCreate", f"the Job cannot create pods: {forbidden.message}")
    assert condition(run.status, "Stalled") == ("True", "FailedCreate")
    assert reasons(result) == ["FailedCreate"]


@pytest.mark.parametrize("reason", ["OOMKilled", "Evicted"])
def test_a_retried_pod_names_why_it_ended(reason):
    run = Run()
    run.step()
    run.cluster.fail_pod("exp-data-prepare", "")
    run.cluster.pods[-1] = replace(run.cluster.pods[-1], problem=Problem(reason, "why"))
    result = run.step()
    assert run.status.stage_named("prepare").reason == reason
    assert condition(run.status, "Degraded") == ("True", reason)
    assert condition(run.status, "Stalled") == ("False", "AsExpected")  # the Job retries
    assert reasons(result) == [reason]
    run.cluster.fail_job("exp-data-prepare")
    run.step()
    assert run.status.phase == "Failed" and condition(run.status, "Stalled") == ("True", reason)
    assert condition(run.status, "Ready") == ("False", "Failed")


def test_waiting_for_a_sampler_says_how_long_and_why():
    run = Run()
    run.until("sft", "Succeeded")
    sample = run.status.stage_named("sample")
    assert (sample.state, sample.reason) == ("Waiting", "SamplerNotReady")
    assert sample.message == "waiting for sampler exp-sampler-sft to be ready (under 1m)"
    assert condition(run.status, "Reconciling") == ("True", "SamplerNotReady")
    assert condition(run.status, "Stalled") == ("False", "AsExpected")
    since = sample.since
    run.cluster.pods.append(PodReport("sampler-0", "", policy="sft", problem=Problem("ImagePullBackOff", "no image")))
    run.step(minutes=4)
    sample = run.status.stage_named("sample")
    assert sample.since == since and sample.message == (
        "waiting for sampler exp-sampler-sft to be ready (4m): ImagePullBackOff: no image")
    failing = deployment_state({"metadata": {"name": "d"}, "status": {"conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}]}})
    assert failing.problem == Problem("FailedCreate", "quota")


def test_a_refused_apply_is_stalled_not_ready_with_the_servers_message():
    run = Run()
    run.step()
    status = rejected(run.status, "ApplyRejected", "API error 422: Job.batch is invalid", 3, "2025-03-01T13:00:00Z")
    assert condition(status, "Stalled") == ("True", "ApplyRejected")
    assert condition(status, "Ready") == ("False", "ApplyRejected")
    assert condition(status, "Reconciling") == ("False", "ApplyRejected")
    assert status.message == "API error 422: Job.batch is invalid" and status.observed_generation == 3
    assert status.stages == run.status.stages
    assert rejected(status, "ApplyRejected", status.message, 3, "2025-03-01T14:00:00Z") == status  # no news


def test_succeeded_is_ready_and_nothing_else():
    run = Run()
    run.until("eval-step-dpo", "Running", limit=30)
    run.cluster.ready()
    run.cluster.finish_running()
    run.step()
    assert [(c.type, c.status) for c in run.status.conditions] == [
        ("Ready", "True"), ("Reconciling", "False"), ("Stalled", "False"), ("Progressing", "False"),
        ("Degraded", "False")]


def test_a_status_written_by_the_previous_version_still_parses():
    old = {  # as the version before kstatus conditions and stage reasons wrote it, plus a field it dropped
        "observedGeneration": 2, "phase": "Running", "stage": "sft", "startTime": "2025-03-01T12:00:00Z",
        "stages": [{"name": "prepare", "kind": "prepare", "state": "Succeeded", "artifact": "/data/team/exp/prepare",
                    "summary": {"train": 500}, "retries": 2},
                   {"name": "sft", "kind": "train", "state": "Training", "artifact": "/data/team/exp/sft"}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "Running", "lastTransitionTime":
                        "2025-03-01T12:00:00Z"}, {"type": "Available", "status": "True", "reason": "Old",
                                                  "lastTransitionTime": "2025-03-01T12:00:00Z"}],
        "results": {"bestPolicy": None}, "legacyField": 1,
    }
    status = parse_status(old)
    assert (status.phase, status.observed_generation, status.start_time) == ("Running", 2, "2025-03-01T12:00:00Z")
    assert [(s.name, s.state) for s in status.stages] == [("prepare", "Succeeded"), ("sft", "Pending")]
    assert status.stage_named("prepare").summary == {"train": 500}
    assert [c.type for c in status.conditions] == ["Ready"]
    assert parse_status(None) == ExperimentStatus()


def test_artifacts_carry_the_uid_and_an_older_experiment_keeps_its_root():
    run = Run()
    run.step()
    assert run.status.stage_named("sft").artifact == "/data/negrl/team/exp/uid-1/sft"
    other = replace(OWNER, uid="uid-2")
    assert artifact_root(run.spec, other, ExperimentStatus()) == "/data/negrl/team/exp/uid-2"
    legacy = parse_status({"stages": [{"name": "prepare", "kind": "prepare", "state": "Succeeded",
                                       "artifact": "/data/negrl/team/exp/prepare"}]})
    assert artifact_root(run.spec, OWNER, legacy) == "/data/negrl/team/exp"


def test_observed_sampler_pods_are_kept_apart_from_job_pods():
    observed = Observed(pods=(PodReport("a", "job"), PodReport("b", "", policy="sft")))
    assert [p.name for p in observed.sampler_pods("sft")] == ["b"] and [p.name for p in observed.pods_of("job")] == ["a"]


def test_minutes_since_is_whole_minutes():
    run = Run()
    run.until("sft", "Succeeded")
    run.step(minutes=timedelta(seconds=59).total_seconds() / 60)
    assert run.status.stage_named("sample").message.endswith("(under 1m)")
    run.step(minutes=1)
    assert run.status.stage_named("sample").message.endswith("(1m)")


def test_artifacts_are_retained_by_default_and_deleted_only_in_the_experiments_own_folder():
    from negrl_operator.reconcile.cleanup import cleanup_job

    run = Run()
    assert cleanup_job(OWNER, run.spec) is None  # Retain
    run.change(storage={"claimName": "negrl-data", "onDelete": "Delete"})
    job = cleanup_job(OWNER, run.spec)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["rm", "-rf", "--", "/data/negrl/team/exp/uid-1"]
    assert container["volumeMounts"] == [{"name": "storage", "mountPath": "/data"}]
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "negrl-data"}
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "negrl-operator"  # the admission policy
    assert "ownerReferences" not in job["metadata"] and job["spec"]["ttlSecondsAfterFinished"] == 600


def test_an_experiment_in_flight_under_the_previous_version_carries_on():
    """tests/unit/golden/status-v0.json: the status the previous version (45f88df) wrote mid-experiment
    (sample and eval-sft running, a sample pod failed), from its own planner."""
    import json
    from pathlib import Path

    old = json.loads((Path(__file__).parent / "golden" / "status-v0.json").read_text())
    run = Run()
    run.status = parse_status(old)
    assert [c.type for c in run.status.conditions] == ["Ready", "Progressing", "Degraded"]
    assert run.state("sft") == "Succeeded" and run.status.stage_named("prepare").summary["train"] == 500
    result = run.step()  # the new operator's first reconcile (an empty simulated cluster: the sampler again)
    assert [c.type for c in run.status.conditions] == ["Ready", "Reconciling", "Stalled", "Progressing", "Degraded"]
    assert ("Deployment", "exp-sampler-sft") in [(m["kind"], m["metadata"]["name"]) for m in result.apply]
    assert run.status.stage_named("sample").artifact == "/data/negrl/team/exp/sample"
    for _ in range(30):
        run.cluster.ready()
        run.cluster.finish_running()
        run.step()
        if run.status.phase == "Succeeded":
            break
    assert run.status.phase == "Succeeded"
    configs = [json.loads(body["data"]["stage.json"]) for (kind, _), body in run.cluster.objects.items()
               if kind == "ConfigMap" and "stage.json" in body.get("data", {})]
    assert configs and all(c["outputDir"].startswith("/data/negrl/team/exp/") for c in configs)
    assert not any("uid-1" in json.dumps(c) for c in configs)  # its inputs stay where the old version put them
