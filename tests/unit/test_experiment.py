"""The NegRLExperiment spec model and the CRD generated from it."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from negrl_operator.api import crd as crd_module
from negrl_operator.api.experiment import (
    EXTERNAL_RULES,
    ROOT_RULES,
    Checked,
    ExperimentSpec,
    NegRLExperiment,
    StagesSpec,
    TrainStageSpec,
)
from negrl_operator.api.stage_config import TrainParams
from negrl_operator.api.value_rule import (
    DNS_SUBDOMAIN,
    IMAGE,
    QUANTITY,
    QUANTITY_STRING,
    QUESTION_PLACEHOLDER,
    SECRET_KEY,
)

MINIMAL = {
    "model": {"name": "Qwen/Qwen2.5-Math-1.5B"},
    "data": {"task": "gsm8k", "source": {"kind": "gsm8k-jsonl", "trainPath": "/d/train.jsonl", "testPath": "/d/t.jsonl"}},
    "storage": {"claimName": "negrl-data"},
}


def spec_with(**changes) -> dict:
    doc = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        node = doc
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return doc


def test_minimal_spec_gets_every_default_from_one_place():
    spec = ExperimentSpec.model_validate(MINIMAL)
    assert spec.stages.sft.params == TrainParams()
    assert spec.seeds == [0] and spec.suspend is False
    assert spec.stages.rft.init == "sft"
    assert all(getattr(spec.stages, name).enabled for name in ("sft", "sampling", "rft", "credit", "step_dpo"))


def test_camel_case_on_the_wire_and_snake_case_in_python():
    spec = ExperimentSpec.model_validate(spec_with(stages__stepDpo={"params": {"learningRate": 1e-6}}))
    assert spec.stages.step_dpo.params.learning_rate == 1e-6
    dumped = spec.model_dump(mode="json", by_alias=True)
    assert "stepDpo" in dumped["stages"] and "learningRate" in dumped["stages"]["stepDpo"]["params"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"stages__credit": {"enabled": False}}, "stepDpo needs credit.enabled", id="step-dpo-needs-credit"),
        pytest.param({"stages__sampling": {"enabled": False}}, "need sampling.enabled", id="rft-needs-sampling"),
        pytest.param({"sweep": {"sftMultipliers": [2]}}, "needs data.syntheticSize", id="sweep-needs-dsyn"),
        pytest.param({"sweep": {"sftMultipliers": [2, 2]}, "data__syntheticSize": 10}, "distinct", id="sweep-distinct"),
        pytest.param({"seeds": [1, 1]}, "seeds must be distinct", id="seeds-distinct"),
        pytest.param({"data__task": "sequence"}, "task sequence goes with source kind stargraph", id="task-source"),
        pytest.param({"data__source": {"kind": "gsm8k-jsonl"}}, "needs trainPath and testPath", id="source-files"),
        pytest.param({"stages__sampling": {"params": {"samplesPerQuestion": 0}}}, "samplesPerQuestion",
                     id="bound-named-by-alias"),
        pytest.param({"sampler": {"tensorParalel": 2}}, "tensorParalel", id="typo-is-an-error"),
        pytest.param({"storage": {"claimName": "x", "mountPath": "data"}}, "mountPath", id="relative-mount"),
    ],
)
def test_invalid_specs_are_rejected_with_a_message_naming_the_field(changes, message):
    with pytest.raises(ValidationError, match=message):
        ExperimentSpec.model_validate(spec_with(**changes))


def test_disabling_what_needs_sampling_makes_sampling_optional():
    stages = {name: {"enabled": False} for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")}
    spec = ExperimentSpec.model_validate(spec_with(stages=stages))
    assert not spec.stages.sampling.enabled


def test_the_manifest_name_must_be_a_dns_label():
    doc = {"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment", "metadata": {"name": "Bad_Name"},
           "spec": MINIMAL}
    with pytest.raises(ValidationError, match="DNS-1035"):
        NegRLExperiment.model_validate(doc)
    doc["metadata"]["name"] = "good-name"
    assert NegRLExperiment.model_validate(doc).metadata.name == "good-name"


# ---- the CRD ---------------------------------------------------------------------------------

def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def generated() -> dict:
    return crd_module.crd()


def test_committed_crds_are_up_to_date():
    text = crd_module.crd_yaml()
    for path in crd_module.COMMITTED:
        assert path.read_text() == text, f"{path} is stale: run `negrl crd --write`"
    assert crd_module.main(["--check"]) == 0


def test_crd_names_columns_and_subresources(generated):
    spec = generated["spec"]
    assert spec["group"] == "negrl.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["nrx"] and spec["names"]["categories"] == ["negrl"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    ready = '.status.conditions[?(@.type=="Ready")]'
    assert columns == [("Phase", ".status.phase", 0), ("Stage", ".status.stage", 0), ("Ready", f"{ready}.status", 0),
                       ("Reason", f"{ready}.reason", 0), ("Best", ".status.results.bestAccuracy", 0),
                       ("Age", ".metadata.creationTimestamp", 0), ("Message", ".status.message", 1)]


def test_schema_is_structural_and_documented(generated):
    root = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = []
    for path, node in _walk(root["properties"]["spec"], "spec"):
        assert "anyOf" not in node and "$ref" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        is_int_or_string = node.get("x-kubernetes-int-or-string")
        assert "type" in node or is_int_or_string, f"{path} has no type"
        if path.count(".") > 1 and not path.endswith(("[]", "{}")) and "description" not in node:
            undocumented.append(path)
    assert not undocumented, f"fields without a description: {undocumented}"


def test_defaults_of_nested_objects_are_in_the_schema(generated):
    spec = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    sft = spec["properties"]["stages"]["properties"]["sft"]
    assert sft["default"]["params"]["learningRate"] == TrainParams().learning_rate
    assert spec["properties"]["seeds"]["default"] == [0]
    assert spec["properties"]["seeds"]["x-kubernetes-list-type"] == "set"
    assert "null" not in yaml.safe_dump(spec["properties"]["scheduling"]["default"])


def test_every_cross_field_rule_is_a_cel_rule(generated):
    root = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    emitted = {(rule["rule"], rule["message"]) for _, node in _walk(root)
               for rule in node.get("x-kubernetes-validations", [])}
    rules = [*ROOT_RULES, *StagesSpec.rules, *ExperimentSpec.rules, *TrainStageSpec.rules,
             *(rule for group in EXTERNAL_RULES.values() for rule in group),
             DNS_SUBDOMAIN, SECRET_KEY, IMAGE, QUANTITY, QUANTITY_STRING, QUESTION_PLACEHOLDER]  # value rules: on the field itself
    assert all(issubclass(model, Checked) for model in (StagesSpec, ExperimentSpec))
    assert {(rule.cel, rule.message) for rule in rules} == emitted


def test_crd_command_prints_yaml(capsys):
    assert crd_module.main([]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "CustomResourceDefinition"


def test_storage_is_optional_in_the_model_and_required_by_the_api_server(generated):
    doc = {k: v for k, v in MINIMAL.items() if k != "storage"}
    assert ExperimentSpec.model_validate(doc).storage is None  # `negrl run` writes under --workdir
    root = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rule = next(r for r in root["x-kubernetes-validations"] if r["rule"] == "has(self.spec.storage)")
    assert rule["fieldPath"] == ".spec.storage" and "claimName" in rule["message"]
    assert "storage" not in root["properties"]["spec"].get("required", [])


def test_tracking_defaults_to_tensorboard_only():
    tracking = ExperimentSpec.model_validate(MINIMAL).tracking
    assert tracking.tensorboard is True and tracking.mlflow_uri is None and tracking.mlflow_experiment == "negrl"
    assert tracking.params().model_dump(by_alias=False) == {"tensorboard": True, "mlflow_uri": None, "mlflow_experiment": "negrl"}


def test_fields_that_running_stages_ignore_are_immutable_in_the_crd():
    spec = crd_module.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {rule["fieldPath"]: rule["rule"] for rule in spec["x-kubernetes-validations"] if "oldSelf" in rule["rule"]}
    assert rules == {".storage": "self.storage == oldSelf.storage", ".model": "self.model == oldSelf.model",
                     ".seeds": "self.seeds == oldSelf.seeds"}


def test_the_operator_refuses_what_only_negrl_run_can_run_naming_the_field():
    from negrl_operator.api.experiment import ClusterExperimentSpec
    from negrl_operator.controller.refusal import spec_problems

    teacher = spec_with(teacher={"endpoint": {"baseUrl": "http://127.0.0.1:9/v1", "model": "m"}})
    assert ClusterExperimentSpec.model_validate(teacher).teacher.endpoint.model == "m"  # a cluster runs teachers (#22)
    no_volume = {key: value for key, value in MINIMAL.items() if key != "storage"}
    with pytest.raises(ValidationError) as error:
        ClusterExperimentSpec.model_validate(no_volume)
    assert spec_problems(error.value).startswith("invalid spec: spec.storage is required on a cluster")
