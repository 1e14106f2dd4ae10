"""plan(): each transition is a named case over a small simulated cluster, plus convergence."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.status import ExperimentStatus, rfc3339
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import (
    Observed,
    PodReport,
    child_state,
    deployment_state,
    job_state,
    jobset_state,
)
from negrl_operator.reconcile.plan import SUMMARY_GRACE_S, Plan, plan
from tests.unit.test_experiment import spec_with

OWNER = Owner("exp", "team", "uid-1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SUMMARIES = {
    "prepare": {"stage": "prepare", "train": 500, "test": 100},
    "train": {"stage": "sft", "steps": 120, "final_loss": 0.42},
    "sample": {"stage": "sample", "questions": 250, "samples": 1000, "correct": 400, "wrong": 560, "unparseable": 40},
    "credit": {"stage": "credit", "negatives": 300, "pits": 210, "rollouts": 9000, "generated_tokens": 2000000},
    "pairs": {"stage": "pairs", "rft": 380, "step": 200, "outcome": 350},
}


class Cluster:
    """What the API server would hold after applying plans, and what kwok/kubelets would report."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.pods: list[PodReport] = []
        self.now = T0
        self.evaluations: dict[str, float] = {}  # policy -> pass@1 its eval Job reports

    def apply(self, result: Plan) -> None:
        for manifest in result.apply:
            self.objects[(manifest["kind"], manifest["metadata"]["name"])] = copy.deepcopy(manifest)
        for name, suspend in result.suspend.items():
            self.objects[("Job", name)]["spec"]["suspend"] = suspend
        for ref in result.delete:
            self.objects.pop((ref.kind, ref.name), None)

    def observed(self) -> Observed:
        jobs, deployments, others = {}, {}, {}
        for (kind, name), body in self.objects.items():
            body = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
            if kind == "Job":
                jobs[name] = job_state(body)
            elif kind == "JobSet":
                jobs[name] = jobset_state(body)
            elif kind == "Deployment":
                deployments[name] = deployment_state(body)
            else:
                others[(kind, name)] = child_state(body)
        return Observed(jobs, deployments, others, tuple(self.pods))

    def jobs(self) -> list[str]:
        return sorted(name for kind, name in self.objects if kind == "Job")

    def stage_of(self, job: str) -> str:
        return self.objects[("Job", job)]["metadata"]["labels"]["negrl.io/stage"]

    def complete(self, job: str, summary: dict | None = None, shards: int | None = None) -> None:
        body = self.objects[("Job", job)]
        count = shards or body["spec"]["completions"]
        body["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": count,
                          "completionTime": rfc3339(self.now)}
        if summary is not None:
            self.pods += [PodReport(f"{job}-{i}", job, i, "Succeeded", json.dumps(summary), 0, rfc3339(self.now))
                          for i in range(count)]

    def fail_pod(self, job: str, message: str) -> None:
        body = self.objects[("Job", job)]
        body["status"] = {**body.get("status", {}), "failed": body.get("status", {}).get("failed", 0) + 1, "active": 1}
        self.pods.append(PodReport(f"{job}-f{len(self.pods)}", job, 0, "Failed", message, 1, rfc3339(self.now)))

    def fail_job(self, job: str, reason: str = "BackoffLimitExceeded") -> None:
        body = self.objects[("Job", job)]
        condition = {"type": "Failed", "status": "True", "reason": reason,
                     "message": "Job has reached the specified backoff limit"}
        body["status"] = {**body.get("status", {}), "conditions": [condition], "active": 0}

    def ready(self) -> None:
        for (kind, _), body in self.objects.items():
            if kind == "Deployment":
                body["status"] = {"readyReplicas": body["spec"]["replicas"]}

    def finish_running(self) -> None:
        for job in self.jobs():
            if not self.objects[("Job", job)].get("status", {}).get("conditions"):
                self.complete(job, self.summary_for(job))

    def summary_for(self, job: str) -> dict:
        stage = self.stage_of(job)
        if stage.startswith("eval-"):
            policy = stage.removeprefix("eval-")
            accuracy = self.evaluations.get(policy, 0.3)
            return {"stage": "evaluate", "policy": policy, "pass_at_1": accuracy,
                    "pass_at_1_ci95": [accuracy - 0.02, accuracy + 0.02], "pass_at_k": accuracy + 0.2, "k": 4,
                    "questions": 100}
        kind = self.objects[("ConfigMap", f"exp-config-{stage}")]["data"]["stage.json"]
        return SUMMARIES[json.loads(kind)["kind"]]


class Run:
    """An experiment under the planner: each step plans with the recorded status, then applies."""

    def __init__(self, generation: int = 1, **changes):
        self.spec = ExperimentSpec.model_validate(spec_with(data__syntheticSize=250, **changes))
        self.generation = generation
        self.status = ExperimentStatus()
        self.cluster = Cluster()
        self.last: Plan | None = None

    def step(self, minutes: float = 1) -> Plan:
        self.cluster.now += timedelta(minutes=minutes)
        self.last = plan(OWNER, self.generation, self.spec, self.status, self.cluster.observed(), self.cluster.now)
        self.cluster.apply(self.last)
        self.status = self.last.status
        return self.last

    def change(self, **changes) -> None:
        self.spec = ExperimentSpec.model_validate(spec_with(data__syntheticSize=250, **changes))
        self.generation += 1

    def state(self, stage: str) -> str:
        return self.status.stage_named(stage).state

    def until(self, stage: str, state: str = "Running", limit: int = 20) -> None:
        for _ in range(limit):
            if self.status.stage_named(stage) and self.state(stage) == state:
                return
            self.cluster.ready()
            self.cluster.finish_running()
            self.step()
        raise AssertionError(f"{stage} never reached {state}: {self.status.stage}")


def applied(result: Plan) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in result.apply]


def reasons(result: Plan) -> list[str]:
    return [event.reason for event in result.events]


def condition(status: ExperimentStatus, kind: str) -> tuple[str, str]:
    found = status.condition(kind)
    return found.status, found.reason


# ---- named transitions -----------------------------------------------------------------------

def test_new_experiment_starts_its_first_stage():
    run = Run()
    result = run.step()
    assert applied(result) == [("ConfigMap", "exp-config-prepare"), ("Job", "exp-data-prepare")]
    assert (run.status.phase, run.status.stage, run.state("prepare")) == ("Running", "prepare", "Running")
    assert reasons(result) == ["StageStarted"]
    assert condition(run.status, "Progressing") == ("True", "StagesRunning")
    assert condition(run.status, "Ready") == ("False", "Running")
    assert all(c.observed_generation == 1 for c in run.status.conditions)
    assert [s.name for s in run.status.stages][:3] == ["prepare", "sft", "sample"]


def test_running_stage_changes_nothing():
    run = Run()
    run.step()
    before = run.status
    result = run.step()
    assert (result.apply, result.delete, result.events, result.status) == ([], [], [], before)


def test_finished_stage_records_summary_and_starts_the_next():
    run = Run()
    run.step()
    run.cluster.complete("exp-data-prepare", SUMMARIES["prepare"])
    result = run.step()
    assert run.state("prepare") == "Succeeded" and run.status.stage_named("prepare").summary == SUMMARIES["prepare"]
    assert applied(result) == [("ConfigMap", "exp-config-sft"), ("Job", "exp-trainer-sft")]
    assert reasons(result) == ["StageSucceeded", "StageStarted"]


def test_stages_that_sample_wait_for_their_sampler():
    run = Run()
    run.until("sft", "Succeeded")
    assert ("Deployment", "exp-sampler-sft") in applied(run.last)
    assert run.state("sample") == run.state("eval-sft") == "Waiting"
    assert "waiting for sampler exp-sampler-sft" in run.status.message
    run.cluster.ready()
    result = run.step()
    assert ("Job", "exp-rollout-sample") in applied(result) and ("Job", "exp-eval-sft") in applied(result)
    config = json.loads(run.cluster.objects[("ConfigMap", "exp-config-sample")]["data"]["stage.json"])
    assert config["server"]["baseUrl"] == "http://exp-sampler-sft.team.svc:8000/v1"
    assert config["server"]["healthWaitS"] == 600.0  # sampler.clientWaitS: rides out a sampler restart


def test_completed_job_waits_briefly_for_its_summary():
    run = Run()
    run.step()
    run.cluster.complete("exp-data-prepare")
    run.step(minutes=0)
    assert run.state("prepare") == "Running" and run.last.requeue_after
    assert "summary" in run.status.stage_named("prepare").message
    run.step(minutes=SUMMARY_GRACE_S / 60 + 0.1)
    assert run.state("prepare") == "Succeeded" and run.status.stage_named("prepare").summary == {}


def test_shard_summaries_add_up():
    run = Run(worker={"shards": 2})
    run.until("sample")
    assert run.cluster.objects[("Job", "exp-rollout-sample")]["spec"]["completions"] == 2
    run.cluster.complete("exp-rollout-sample", SUMMARIES["sample"])
    run.step()
    assert run.status.stage_named("sample").summary["samples"] == 2000
    assert run.status.results.counts.positives == 800


def test_long_failure_keeps_its_head_in_the_stage_and_one_line_in_the_experiment():
    run = Run()
    run.step()
    error = "CalledProcessError: Command 'c++ " + "-I/usr/include/x " * 400 + "' failed\nexit status 1"
    run.cluster.fail_pod("exp-data-prepare", json.dumps({"stage": "prepare", "error": error}))
    run.cluster.fail_job("exp-data-prepare")
    run.step()
    stage = run.status.stage_named("prepare").message
    assert stage.startswith("CalledProcessError: Command 'c++ -I") and stage.endswith("exit status 1")
    assert len(stage) <= 1024
    assert run.status.message.startswith("stage prepare failed: CalledProcessError: Command")
    assert "\n" not in run.status.message and len(run.status.message) <= 300


def test_failed_pod_makes_the_experiment_degraded():
    run = Run()
    run.step()
    run.cluster.fail_pod("exp-data-prepare", '{"stage":"prepare","error":"train.jsonl: no such file"}')
    result = run.step()
    assert run.status.phase == "Running" and run.state("prepare") == "Running"
    assert condition(run.status, "Degraded") == ("True", "PodFailed")
    assert "train.jsonl: no such file" in run.status.condition("Degraded").message
    assert reasons(result) == ["PodFailed"]


def test_failed_job_fails_the_experiment_with_its_message():
    run = Run()
    run.until("sample")
    run.cluster.fail_pod("exp-rollout-sample", '{"stage":"sample","error":"sampler unreachable"}')
    run.cluster.fail_job("exp-rollout-sample")
    result = run.step()
    assert (run.status.phase, run.status.stage) == ("Failed", "sample")
    assert run.status.message == "stage sample failed: sampler unreachable"
    assert condition(run.status, "Degraded") == ("True", "StageFailed")
    assert condition(run.status, "Ready") == ("False", "Failed")
    assert condition(run.status, "Progressing") == ("False", "Failed")
    # the error is said once among the conditions (Degraded); Ready and Progressing point there
    said = [c.type for c in run.status.conditions if "sampler unreachable" in c.message]
    assert said == ["Degraded"] and run.status.condition("Ready").message == "stage sample failed (see Degraded)"
    assert ("Deployment", "exp-sampler-sft") in [(r.kind, r.name) for r in result.delete]
    assert ("Job", "exp-eval-sft") in [(r.kind, r.name) for r in result.delete]  # still active: stopped
    assert reasons(result) == ["StageFailed", "Failed"] and result.apply == []
    assert run.status.finish_time is not None


def test_terminal_states_never_recreate_children():
    run = Run()
    run.until("sample")
    run.cluster.fail_job("exp-rollout-sample")
    run.step()
    run.cluster.objects.clear()
    run.change(stages__sampling={"params": {"temperature": 1.0}})
    result = run.step()
    assert (result.apply, result.delete, result.suspend) == ([], [], {})
    assert run.status.phase == "Failed"
    assert run.status.conditions[0].observed_generation == run.generation


def test_fail_fast_stops_every_branch():
    run = Run(seeds=[0, 1])
    run.until("sft-s1")
    run.cluster.fail_job("exp-trainer-sft-s1")
    result = run.step()
    assert run.status.phase == "Failed" and run.state("sft-s0") == "Running"
    assert ("Job", "exp-trainer-sft-s0") in [(r.kind, r.name) for r in result.delete]  # the other seed stops too


def test_continue_lets_independent_branches_finish_and_ends_degraded():
    run = Run(seeds=[0, 1], failurePolicy="Continue")
    run.until("sft-s1")
    run.cluster.fail_pod("exp-trainer-sft-s1", '{"stage":"sft","error":"CUDA error: an illegal memory access"}')
    run.cluster.fail_job("exp-trainer-sft-s1")
    run.step()
    assert (run.status.phase, run.state("sft-s1"), run.state("sft-s0")) == ("Running", "Failed", "Running")
    assert condition(run.status, "Degraded") == ("True", "StageFailed")
    for _ in range(40):
        run.cluster.ready()
        run.cluster.finish_running()
        run.step()
        if run.status.phase != "Running":
            break
    skipped = [s.name for s in run.status.stages if s.name.endswith("-s1") and s.name != "sft-s1"]
    assert run.status.phase == "Degraded"
    assert all(run.state(name) == "Pending" for name in skipped)  # nothing of seed 1 ran after its SFT
    assert all(s.state == "Succeeded" for s in run.status.stages if not s.name.endswith("-s1"))
    assert run.status.stage == "sft-s1"
    assert run.status.message == (
        f"failed: sft-s1; not run (they need a failed stage): {', '.join(skipped)}; "
        "stage sft-s1 failed: CUDA error: an illegal memory access")
    assert {p.policy for p in run.status.results.policies} == {"sft-s0", "rft-s0", "outcome-dpo-s0", "step-dpo-s0"}
    assert condition(run.status, "Ready") == ("False", "Degraded")
    assert reasons(run.last)[-1] == "Degraded"
    assert not [j for j in run.cluster.jobs() if "-s1" in j and j != "exp-trainer-sft-s1"]


def test_continue_ends_failed_when_no_policy_was_evaluated():
    run = Run(failurePolicy="Continue")
    run.step()
    run.cluster.fail_job("exp-data-prepare")
    run.step()
    assert run.status.phase == "Failed"  # everything needs prepare


def test_retry_reruns_the_failed_stage_and_keeps_finished_ones():
    run = Run()
    run.until("sample")
    sft_finish = run.status.stage_named("sft").finish_time
    run.cluster.fail_job("exp-rollout-sample")
    run.step()
    assert run.status.phase == "Failed"
    run.spec, run.generation = run.spec.model_copy(update={"retry": 1}), run.generation + 1
    result = run.step()
    assert run.status.phase == "Running" and run.status.retry == 1 and run.status.finish_time is None
    assert run.state("sample") == "Waiting" and run.status.stage_named("sample").message.startswith("retry requested")
    assert ("Job", "exp-rollout-sample") in [(r.kind, r.name) for r in result.delete]
    assert "Retrying" in reasons(result)
    assert ("Deployment", "exp-sampler-sft") in applied(result)  # the sampler comes back for it
    run.cluster.ready()
    result = run.step()  # the failed Job is gone and the sampler ready: the stage starts again
    assert ("Job", "exp-rollout-sample") in applied(result) and run.state("sample") == "Running"
    assert run.status.stage_named("sft").finish_time == sft_finish  # finished stages are not redone
    assert run.step().apply == []  # the same retry value does nothing more
    for _ in range(40):
        run.cluster.ready()
        run.cluster.finish_running()
        run.step()
    assert run.status.phase == "Succeeded"


def deleted(result: Plan) -> list[tuple[str, str]]:
    return [(ref.kind, ref.name) for ref in result.delete]


def test_a_lost_rank_restarts_a_multi_node_training_group_until_its_restarts_are_spent():
    run = Run(trainer={"nodes": 2, "maxRestarts": 2})
    run.until("sft")
    for restart in (1, 2):
        run.cluster.fail_pod("exp-trainer-sft", '{"stage":"sft","error":"gloo: connection reset by peer"}')
        run.cluster.fail_job("exp-trainer-sft")
        failed_job = copy.deepcopy(run.cluster.objects[("Job", "exp-trainer-sft")])
        result = run.step()
        stage = run.status.stage_named("sft")
        assert (stage.state, stage.reason, stage.restarts, run.status.phase) == ("Waiting", "GroupRestart", restart,
                                                                                  "Running")
        assert stage.message == ("a rank was lost (gloo: connection reset by peer); restarting the training group "
                                 f"from its last checkpoint ({restart} of 2)")
        assert ("Job", "exp-trainer-sft") in deleted(result) and not applied(result)
        run.cluster.objects[("Job", "exp-trainer-sft")] = failed_job  # still there (deletion under way)
        result = run.step()
        assert ("Job", "exp-trainer-sft") in deleted(result) and run.status.stage_named("sft").restarts == restart
        result = run.step()  # gone: every pod of the group starts again (they resume from the last checkpoint)
        assert ("Job", "exp-trainer-sft") in applied(result) and run.state("sft") == "Running"
        assert (run.status.stage_named("sft").reason, run.status.stage_named("sft").restarts) == ("", restart)
    run.cluster.fail_job("exp-trainer-sft")  # a third loss: no restart left
    run.step()
    assert (run.status.phase, run.state("sft"), run.status.stage_named("sft").restarts) == ("Failed", "Failed", 2)


@pytest.mark.parametrize(("trainer", "reason"), [
    ({"nodes": 2}, "PodFailurePolicy"),  # exit CONFIG_ERROR: no restart can fix the config
    ({"nodes": 2}, "DeadlineExceeded"),  # its activeDeadlineSeconds is spent, not a rank
    ({"nodes": 2, "maxRestarts": 0}, "BackoffLimitExceeded"),
    ({"nodes": 1}, "BackoffLimitExceeded"),  # one pod: the Job's own pod retries were spent
    ({"nodes": 2, "launcher": "JobSet"}, "BackoffLimitExceeded"),  # JobSet restarts the group itself
])
def test_training_failures_that_are_not_a_lost_rank_fail_the_stage(trainer, reason):
    run = Run(trainer=trainer)
    run.until("sft")
    kind = "JobSet" if trainer.get("launcher") == "JobSet" else "Job"
    body = run.cluster.objects[(kind, "exp-trainer-sft")]
    if kind == "JobSet":
        body["status"] = {"terminalState": "Failed", "conditions": [{"type": "Failed", "status": "True",
                                                                     "reason": reason}]}
    else:
        run.cluster.fail_job("exp-trainer-sft", reason)
    result = run.step()
    assert (run.status.phase, run.state("sft"), run.status.stage_named("sft").restarts) == ("Failed", "Failed", 0)
    assert (kind, "exp-trainer-sft") not in applied(result)


def kueue_run() -> Run:
    return Run(scheduling={"worker": {"queueName": "cpu"}, "trainer": {"queueName": "gpu"}})


def admit(run: Run, job: str) -> None:
    run.cluster.objects[("Job", job)]["spec"]["suspend"] = False  # what Kueue does on admission


def test_kueue_jobs_start_suspended_and_the_operator_never_flips_them():
    run = kueue_run()
    result = run.step()
    job = run.cluster.objects[("Job", "exp-data-prepare")]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "cpu"
    result = run.step()
    assert result.suspend == {} and result.workloads_active == {"uid-exp-data-prepare": True}  # no-op if active
    assert run.state("prepare") == "Waiting"
    assert run.status.stage_named("prepare").message == (
        "queued in Kueue LocalQueue cpu: not admitted yet (quota or a free flavor)")
    assert run.status.message.startswith("prepare: queued in Kueue LocalQueue cpu")
    assert condition(run.status, "Progressing") == ("True", "Queued")
    admit(run, "exp-data-prepare")
    result = run.step()
    assert run.state("prepare") == "Running" and result.suspend == {} and result.workloads_active == {}
    assert condition(run.status, "Progressing") == ("True", "StagesRunning")


def test_suspend_deactivates_kueue_workloads_instead_of_suspending_jobs():
    run = kueue_run()
    run.step()
    admit(run, "exp-data-prepare")
    run.step()
    run.spec, run.generation = run.spec.model_copy(update={"suspend": True}), run.generation + 1
    result = run.step()
    assert result.suspend == {} and result.workloads_active == {"uid-exp-data-prepare": False}
    assert run.status.phase == "Suspended"
    run.cluster.objects[("Job", "exp-data-prepare")]["spec"]["suspend"] = True  # Kueue evicts it
    run.spec, run.generation = run.spec.model_copy(update={"suspend": False}), run.generation + 1
    result = run.step()
    assert result.suspend == {} and result.workloads_active == {"uid-exp-data-prepare": True}
    assert run.status.phase == "Running"


def test_whole_experiment_succeeds_with_results():
    run = Run()
    run.cluster.evaluations = {"sft": 0.3, "rft": 0.35, "outcome-dpo": 0.33, "step-dpo": 0.41}
    run.until("eval-step-dpo", "Running", limit=30)
    run.cluster.ready()
    run.cluster.finish_running()
    result = run.step()
    assert run.status.phase == "Succeeded" and run.status.stage == ""
    assert {p.policy: p.accuracy for p in run.status.results.policies} == {
        "sft": 0.3, "rft": 0.35, "outcome-dpo": 0.33, "step-dpo": 0.41}
    assert (run.status.results.best_policy, run.status.results.best_accuracy) == ("step-dpo", 0.41)
    counts = run.status.results.counts
    assert (counts.positives, counts.negatives, counts.pits, counts.step_pairs) == (400, 560, 210, 400)
    assert condition(run.status, "Ready") == ("True", "Succeeded")
    assert "Succeeded" in reasons(result)
    assert not [key for key in run.cluster.objects if key[0] == "Deployment"]
    assert all(s.start_time and s.finish_time for s in run.status.stages)
    assert run.step().apply == []


def test_suspend_scales_samplers_to_zero_and_suspends_jobs():
    run = Run()
    run.until("sample")
    run.change(suspend=True)
    result = run.step()
    assert run.status.phase == "Suspended" and reasons(result) == ["Suspended"]
    assert run.cluster.objects[("Deployment", "exp-sampler-sft")]["spec"]["replicas"] == 0
    assert result.suspend == {"exp-eval-sft": True, "exp-rollout-sample": True}
    run.cluster.finish_running()
    run.step()
    assert run.state("rft-data") == "Pending" and run.status.stage_named("rft-data").message == "suspended"
    assert not [job for job in run.cluster.jobs() if "rft-data" in job]
    run.change(suspend=False)
    result = run.step()
    assert run.status.phase == "Running" and "Resumed" in reasons(result)
    assert ("Job", "exp-rollout-rft-data") in applied(result)
    assert run.cluster.objects[("Deployment", "exp-sampler-sft")]["spec"]["replicas"] == 1


def test_operator_restart_mid_stage_creates_no_duplicate():
    run = Run()
    run.until("sft")
    before = dict(run.cluster.objects)
    recorded = ExperimentStatus.model_validate(run.status.model_dump(mode="json", by_alias=True))
    result = plan(OWNER, 1, run.spec, recorded, run.cluster.observed(), run.cluster.now + timedelta(hours=1))
    assert (result.apply, result.delete) == ([], [])
    assert result.status == run.status and run.cluster.objects == before


def test_restart_after_a_lost_status_adopts_running_jobs():
    run = Run()
    run.until("sft")
    result = plan(OWNER, 1, run.spec, ExperimentStatus(), run.cluster.observed(), run.cluster.now)
    assert result.apply == []  # prepare's and sft's Jobs are seen: nothing is created twice
    assert result.status.stage_named("sft").state == "Running"


def test_a_deleted_job_of_a_running_stage_is_recreated():
    run = Run()
    run.until("sft")
    del run.cluster.objects[("Job", "exp-trainer-sft")]
    result = run.step()
    assert ("Job", "exp-trainer-sft") in applied(result) and run.state("sft") == "Running"
    assert reasons(result) == []


def test_samplers_no_longer_needed_are_deleted():
    run = Run()
    run.until("credit")
    run.cluster.finish_running()
    result = run.step()
    assert {(r.kind, r.name) for r in result.delete} == {("Deployment", "exp-sampler-sft"), ("Service", "exp-sampler-sft")}


def test_spec_changes_reach_only_stages_that_start_later():
    run = Run()
    run.until("sft")
    job = copy.deepcopy(run.cluster.objects[("Job", "exp-trainer-sft")])
    run.change(trainer={"gpusPerNode": 4}, stages__sampling={"params": {"temperature": 1.1}})
    result = run.step()
    assert result.apply == [] and run.cluster.objects[("Job", "exp-trainer-sft")] == job
    assert all(c.observed_generation == 2 for c in run.status.conditions)
    run.until("sample")
    config = json.loads(run.cluster.objects[("ConfigMap", "exp-config-sample")]["data"]["stage.json"])
    assert config["params"]["temperature"] == 1.1


def test_sampler_spec_changes_are_applied_in_place():
    run = Run()
    run.until("sample")
    run.change(sampler={"replicas": 3})
    result = run.step()
    assert applied(result) == [("Deployment", "exp-sampler-sft")]
    assert run.cluster.objects[("Deployment", "exp-sampler-sft")]["spec"]["replicas"] == 3


def test_jobs_of_stages_removed_from_the_graph_are_deleted():
    run = Run()
    run.until("rft")
    run.change(stages__rft={"enabled": False})
    result = run.step()
    assert ("Job", "exp-trainer-rft") in [(r.kind, r.name) for r in result.delete]
    assert run.status.stage_named("rft") is None


# ---- convergence -----------------------------------------------------------------------------

ACTIONS = st.lists(st.sampled_from(["finish", "ready", "fail-pod", "fail-job", "suspend", "resume", "tick"]),
                   max_size=25)
TOGGLES = st.fixed_dictionaries({
    "rft": st.booleans(), "outcomeDpo": st.booleans(), "stepDpo": st.booleans(), "shards": st.integers(1, 3),
    "seeds": st.sampled_from([[0], [0, 1]]), "failurePolicy": st.sampled_from(["FailFast", "Continue"]),
})


def _act(run: Run, action: str) -> None:
    jobs = [j for j in run.cluster.jobs() if not run.cluster.objects[("Job", j)].get("status", {}).get("conditions")]
    if action == "finish":
        run.cluster.finish_running()
    elif action == "ready":
        run.cluster.ready()
    elif action == "fail-pod" and jobs:
        run.cluster.fail_pod(jobs[0], "boom")
    elif action == "fail-job" and jobs:
        run.cluster.fail_job(jobs[-1])
    elif action in ("suspend", "resume"):
        run.spec = run.spec.model_copy(update={"suspend": action == "suspend"})
        run.generation += 1


@settings(max_examples=60, deadline=None)
@given(TOGGLES, ACTIONS)
def test_applying_a_plan_then_planning_again_changes_nothing(toggles, actions):
    run = Run(stages={"rft": {"enabled": toggles["rft"]}, "outcomeDpo": {"enabled": toggles["outcomeDpo"]},
                      "stepDpo": {"enabled": toggles["stepDpo"]}},
              worker={"shards": toggles["shards"]}, seeds=toggles["seeds"], failurePolicy=toggles["failurePolicy"])
    for action in actions:
        _act(run, action)
        run.step()
        again = plan(OWNER, run.generation, run.spec, run.status, run.cluster.observed(), run.cluster.now)
        assert (again.apply, again.delete, again.suspend, again.events) == ([], [], {}, [])
        assert again.status == run.status


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_every_graph_walks_to_succeeded(seeds):
    run = Run(seeds=seeds, sweep={"sftMultipliers": [2]})
    for _ in range(40):
        run.cluster.ready()
        run.cluster.finish_running()
        run.step()
        if run.status.phase == "Succeeded":
            break
    assert run.status.phase == "Succeeded"
    assert len(run.status.results.policies) == len(seeds) * 5


# ---- observation parsing (what the shell's indices hold) --------------------------------------

def test_job_and_pod_bodies_parse_into_observations():
    from negrl_operator.reconcile.observation import parse_summary, pod_report

    job = job_state({
        "metadata": {"name": "exp-data-prepare", "uid": "j1", "labels": {"negrl.io/stage": "prepare"},
                     "ownerReferences": [{"uid": "uid-1", "controller": True}]},
        "spec": {"completions": 2, "suspend": True},
        "status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]},
    })
    assert (job.failed, job.failed_pods, job.suspended, job.completions, job.owner_uid) == (True, 3, True, 2, "uid-1")
    pod = pod_report({
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "exp-data-prepare"},
                     "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
                     "ownerReferences": [{"uid": "j1", "controller": True}]},
        "status": {"phase": "Failed", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 1, "message": "Traceback...\nValueError: bad"}}}]},
    })
    assert (pod.job, pod.index, pod.exit_code, pod.owner_uid) == ("exp-data-prepare", 1, 1, "j1")
    assert parse_summary(pod.message) == {"message": "Traceback...\nValueError: bad"}
    assert parse_summary('{"stage":"sample","samples":4}') == {"stage": "sample", "samples": 4}
    assert parse_summary("") is None


# ---- what the shell exports from a status --------------------------------------------------------

def test_status_is_exported_as_metrics_and_forgotten_on_delete():
    from prometheus_client import generate_latest

    from negrl_operator.controller.metrics import Heartbeat, OperatorMetrics

    run = Run()
    run.cluster.evaluations = {"step-dpo": 0.41}
    run.until("eval-step-dpo", "Succeeded", limit=40)
    metrics = OperatorMetrics()
    metrics.record("team", "exp", run.status)
    text = generate_latest(metrics.registry).decode()
    assert 'negrl_operator_experiments{phase="Succeeded"} 1.0' in text
    assert 'negrl_operator_policy_accuracy_ratio{experiment="exp",namespace="team",policy="step-dpo"} 0.41' in text
    assert 'negrl_operator_result_items{experiment="exp",item="pits",namespace="team"} 210.0' in text
    assert 'negrl_operator_stage_duration_seconds{experiment="exp",kind="train",namespace="team",stage="sft"}' in text
    metrics.forget("team", "exp")
    text = generate_latest(metrics.registry).decode()
    assert 'experiment="exp"' not in text and 'negrl_operator_experiments{phase="Succeeded"} 0.0' in text

    heartbeat = Heartbeat(metrics, stall_after_s=0.0)
    assert heartbeat.health()[0]  # no experiment: nothing can stall
    metrics.record("team", "exp", run.status)
    heartbeat.last -= 1
    assert not heartbeat.health()[0]  # experiments exist, no reconcile finished in time
    heartbeat.beat()
    heartbeat.stall_after_s = 60
    assert heartbeat.health() == (True, "ok\n")


def test_jobset_parses_into_a_job_state_with_restarts_as_failures():
    from negrl_operator.reconcile.observation import jobset_state

    body = {"metadata": {"name": "exp-trainer-sft", "uid": "u", "labels": {"negrl.io/stage": "sft"},
                         "ownerReferences": [{"uid": "uid-1", "controller": True}]},
            "spec": {"replicatedJobs": [{"replicas": 1, "template": {"spec": {"completions": 2}}}]},
            "status": {"restarts": 2, "terminalState": "Completed", "conditions": [
                {"type": "Completed", "status": "True", "lastTransitionTime": "2025-03-01T12:00:00Z"}]}}
    state = jobset_state(body)
    assert (state.kind, state.complete, state.failed, state.failed_pods, state.completions) == ("JobSet", True, False, 2, 2)
    assert state.completion_time == "2025-03-01T12:00:00Z" and state.owner_uid == "uid-1"
    failed = jobset_state({**body, "status": {"terminalState": "Failed", "conditions": [
        {"type": "Failed", "status": "True", "message": "jobset failed: reached max restarts"}]}})
    assert failed.failed and failed.failure_message == "jobset failed: reached max restarts"
