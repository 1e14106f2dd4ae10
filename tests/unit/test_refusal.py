"""What a failed reconcile shows: refused writes vs writes worth retrying, the one-line message of an
invalid spec, the Invalid phase, ApplyRetrying, minute counts kept current, Events without "None",
and the status's one key style (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.status import ExperimentResults, ExperimentStatus, StageStatus, camel, parse_status
from negrl_operator.controller.refusal import api_message, refused, spec_problems
from negrl_operator.reconcile.condition import events, refresh_after, rejected, retrying
from tests.unit.test_experiment import spec_with
from tests.unit.test_plan import Run, condition

NOW = "2025-03-01T13:00:00Z"
# What the real API server answered to a server-side apply of a Job with resources.requests.cpu "lots"
LOTS = ("failed to convert new object (nrx-6ac841/lots-data-prepare; batch/v1, Kind=Job) to proper version: unable "
        "to convert unstructured object to batch/v1, Kind=Job: quantities must match the regular expression "
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


def api_error(status: int, message: str = "", reason: str = "") -> ApiException:
    error = ApiException(status=status, reason="HTTP reason")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": reason})
    return error


@pytest.mark.parametrize(("status", "message", "reason", "expected"), [
    (422, "Job.batch is invalid: metadata.annotations: Invalid value", "Invalid", True),
    (400, "bad request", "BadRequest", True),
    (403, "forbidden: namespace is being terminated", "Forbidden", True),
    (404, "the server could not find the requested resource (jobsets)", "NotFound", True),
    (409, "jobs.batch \"x\" already exists", "AlreadyExists", True),
    (409, "the object has been modified; please apply your changes to the latest version", "Conflict", False),
    (500, LOTS, "InternalError", True),
    (500, "etcdserver: request timed out", "InternalError", False),
    (429, "too many requests", "TooManyRequests", False),
    (503, "service unavailable", "ServiceUnavailable", False),
    (504, "the server was unable to return a response in the time allotted", "Timeout", False),
    (0, "", "", False),  # no HTTP answer (the client wraps a TLS failure so)
])
def test_a_write_is_refused_for_good_or_worth_retrying(status, message, reason, expected):
    assert refused(api_error(status, message, reason)) is expected


def test_the_api_message_is_one_bounded_line_and_falls_back_to_the_http_reason():
    assert api_message(api_error(500, LOTS)) == LOTS
    assert api_message(api_error(422, "a\n  b" + "x" * 2000)).startswith("a bxxx") and len(
        api_message(api_error(422, "x" * 2000))) == 900
    error = ApiException(status=503, reason="Service Unavailable")
    assert api_message(error) == "Service Unavailable"


def test_an_invalid_spec_is_one_line_naming_each_field_without_a_dump_or_url():
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate(spec_with(storage={"claimName": "Bad_Name!!/x"}, seeds=[-1],
                                                sweep={"sftMultipliers": [0]}))
    text = spec_problems(caught.value)
    assert text.startswith("invalid spec: ") and "\n" not in text and "http" not in text and "input_value" not in text
    assert "spec.storage.claimName: must be a Kubernetes object name (DNS-1123 subdomain)" in text
    assert "spec.seeds.0: Input should be greater than or equal to 0" in text
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate(spec_with(stages={"credit": {"enabled": False}}))
    assert spec_problems(caught.value) == (
        "invalid spec: spec.stages: stepDpo.enabled: stepDpo needs credit.enabled (pairs come from pits)")


def test_an_unreadable_spec_makes_the_phase_invalid_until_the_spec_changes():
    run = Run()
    run.step()
    status = rejected(run.status, "InvalidSpec", "invalid spec: spec.seeds.0: too small", 2, NOW)
    assert (status.phase, status.message, status.observed_generation) == (
        "Invalid", "invalid spec: spec.seeds.0: too small", 2)
    assert condition(status, "Ready") == ("False", "InvalidSpec") and condition(status, "Stalled") == (
        "True", "InvalidSpec")
    run.status = status
    run.step()  # the spec was fixed: the next plan recomputes the phase from the stages
    assert run.status.phase == "Running" and condition(run.status, "Stalled") == ("False", "AsExpected")


def test_a_write_worth_retrying_is_reconciling_with_the_last_error_then_clears():
    run = Run()
    run.step()
    message = "API error 503: service unavailable (attempt 2, next in 1s)"
    status = retrying(run.status, message, 1, NOW)
    assert condition(status, "Reconciling") == ("True", "ApplyRetrying")
    assert status.condition("Reconciling").message == message and status.message == message
    assert condition(status, "Ready") == ("False", "ApplyRetrying") and condition(status, "Stalled") == (
        "False", "AsExpected")
    assert status.phase == run.status.phase and status.stages == run.status.stages
    run.status = status
    run.step()  # the write went through
    assert condition(run.status, "Reconciling")[1] != "ApplyRetrying" and "API error" not in run.status.message


def test_a_waiting_stage_is_reconciled_when_its_minute_count_goes_stale():
    waiting = StageStatus(name="sample", kind="sample", state="Waiting", reason="SamplerNotReady",
                          since="2025-03-01T12:58:20Z", message="waiting for sampler s to be ready (1m)")
    status = ExperimentStatus(stages=[waiting])
    assert refresh_after(status, datetime(2025, 3, 1, 13, 0, 0, tzinfo=UTC)) == 21.0  # 1m40s waited; (2m) from 13:00:20
    assert refresh_after(ExperimentStatus(stages=[waiting.model_copy(update={"state": "Running"})]),
                         datetime(2025, 3, 1, 13, 0, tzinfo=UTC)) is None


def test_a_finished_experiment_without_an_evaluated_policy_says_so_not_none():
    old = ExperimentStatus(phase="Running")
    done = [e.message for e in events(old, ExperimentStatus(phase="Succeeded"))]
    assert done == ["experiment succeeded: no policy was evaluated"]
    best = ExperimentStatus(phase="Succeeded", results=ExperimentResults(best_policy="step-dpo", best_accuracy=0.421875))
    assert [e.message for e in events(old, best)] == ["experiment succeeded: best pass@1 0.4219 (step-dpo)"]


@pytest.mark.parametrize(("key", "expected"), [
    ("generated_tokens", "generatedTokens"), ("pass_at_1", "passAt1"), ("pass_at_1_ci95", "passAt1Ci95"),
    ("samples", "samples"), ("stepPairs", "stepPairs"),
])
def test_summary_keys_are_camel_case_like_every_other_status_key(key, expected):
    assert camel(key) == expected


def test_a_status_with_snake_case_summaries_reads_in_camel_case():
    status = parse_status({"stages": [{"name": "credit", "kind": "credit", "state": "Succeeded",
                                       "summary": {"generated_tokens": 5, "pits": 2}}]})
    assert status.stage_named("credit").summary == {"generatedTokens": 5, "pits": 2}
    dumped = status.model_dump(mode="json", by_alias=True)["stages"][0]["summary"]
    assert dumped == {"generatedTokens": 5, "pits": 2}
