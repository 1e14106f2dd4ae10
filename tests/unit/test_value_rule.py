"""Rules on one value: the Python side of each (the cluster tier checks that the API server's CEL agrees),
the spec fields that carry them, and their place in the generated CRD."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from negrl_operator.api import crd as crd_module
from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.value_rule import (
    DNS_SUBDOMAIN,
    IMAGE,
    QUANTITY,
    QUANTITY_STRING,
    QUESTION_PLACEHOLDER,
    SECRET_KEY,
)
from tests.unit.test_experiment import spec_with


@pytest.mark.parametrize(("rule", "good", "bad"), [
    (DNS_SUBDOMAIN, ["negrl-data", "a", "a.b-c", "0x", "x" * 253], ["Bad_Name!!/x", "-a", "a-", "A", "a..b", "a.", ""]),
    (SECRET_KEY, ["token", "tls.crt", "a_b-C.9"], ["bad key", "a/b", ""]),
    (IMAGE, ["vllm/vllm-openai:v0.32.0", "localhost:5000/x/y:tag", "busybox", "ghcr.io/a/b@sha256:" + "a" * 64],
     ["Upper/Case", "x:", "x::y", "http://x", "a b", "x:" + "t" * 129]),
    (QUANTITY, ["4", "500m", "64Gi", "1.5", ".5", "1.", "1e3", "+1", "100n", 4, 0],
     ["lots", "-1", -1, "1Kb", "1K", "1e", "", "1.5.5", "1e1000", " 1", "1" * 65, True]),
    (QUANTITY_STRING, ["8Gi", "0"], ["big", "-1Gi"]),
    (QUESTION_PLACEHOLDER, ["Q: {question}\nA:", "{question}"], ["no placeholder", "{Question}"]),
])
def test_each_rule_accepts_and_refuses_in_python(rule, good, bad):
    assert [value for value in good if not rule.check(value)] == []
    assert [value for value in bad if rule.check(value)] == []


@pytest.mark.parametrize(("changes", "field", "fix"), [
    ({"storage": {"claimName": "Bad_Name!!/x"}}, "storage.claimName", "DNS-1123 subdomain"),
    ({"worker": {"resources": {"requests": {"cpu": "lots"}}}}, "worker.resources.requests.cpu",
     "non-negative Kubernetes quantity"),
    ({"trainer": {"shmSize": "big"}}, "trainer.shmSize", "non-negative Kubernetes quantity"),
    ({"sampler": {"image": "Vllm/Vllm"}}, "sampler.image", "image reference"),
    ({"model": {"name": "m", "tokenSecret": {"name": "hf_token"}}}, "model.tokenSecret.name", "DNS-1123"),
    ({"data__prompt": {"template": "Answer:"}}, "data.prompt.template", "{question}"),
    ({"seeds": [-1]}, "seeds.0", "greater than or equal to 0"),
    ({"stages": {"credit": {"params": {"seed": -3}}}}, "stages.credit.params.seed", "greater than or equal to 0"),
    ({"scheduling": {"worker": {"priorityClassName": "High"}}}, "scheduling.worker.priorityClassName", "DNS-1123"),
    ({"scheduling": {"worker": {"queueName": "q" * 64}}}, "scheduling.worker.queueName", "at most 63"),
    ({"worker": {"runAsUser": 2**31}}, "worker.runAsUser", "less than or equal to 2147483647"),
])
def test_the_spec_refuses_what_the_api_server_refuses_naming_field_and_fix(changes, field, fix):
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec.model_validate(spec_with(**changes))
    (problem,) = caught.value.errors()
    assert ".".join(str(part) for part in problem["loc"]) == field and fix in problem["msg"]


def test_engine_defaults_are_unset_in_the_spec_so_describe_shows_what_runs():
    spec = ExperimentSpec.model_validate(spec_with(trainer={"zeroStage": 0, "precision": "fp32"}))
    assert (spec.stages.sft.params.zero_stage, spec.stages.sft.params.precision) == (None, None)
    root = crd_module.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    sft = root["properties"]["spec"]["properties"]["stages"]["properties"]["sft"]
    assert "zeroStage" not in sft["default"]["params"] and "precision" not in sft["default"]["params"]
    assert "default" not in sft["properties"]["params"]["properties"]["zeroStage"]


def test_every_quantity_and_name_in_the_crd_carries_its_rule():
    root = crd_module.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    requests = root["worker"]["properties"]["resources"]["properties"]["requests"]
    assert requests["additionalProperties"]["x-kubernetes-validations"] == [QUANTITY.cel_rule()]
    assert requests["additionalProperties"]["maxLength"] == 64 and requests["maxProperties"] == 32
    assert root["storage"]["properties"]["claimName"]["x-kubernetes-validations"] == [DNS_SUBDOMAIN.cel_rule()]
    assert root["seeds"]["items"] == {"maximum": 2**31 - 1, "minimum": 0, "type": "integer"}
    sweep = root["sweep"]
    assert sweep["properties"]["sftMultipliers"]["x-kubernetes-list-type"] == "set"
    assert {"rule": "self.sftMultipliers.all(k, k >= 2)", "fieldPath": ".sftMultipliers"}.items() <= \
        sweep["x-kubernetes-validations"][0].items()
