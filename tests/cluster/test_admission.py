"""Admission agrees with the operator: on the real API server (server-side dry-run create of the committed
CRD), a NegRLExperiment is admitted exactly when the pydantic model the operator reads it with accepts it,
and every refusal, by either, names the field.

The property test generates manifests around every constraint the model declares: each bound of every
number (just inside, on, just outside), every enum, every length limit, every pattern and value rule
(Kubernetes names, Secret keys, images, quantities, the prompt's placeholder) with valid and
just-invalid values and random text, list sizes and duplicates, and the cross-field rules, combined.
The table is the hand-written list of invalid manifests a platform engineer tried.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from negrl_operator.api.experiment import ClusterExperimentSpec, ExperimentSpec
from negrl_operator.api.value_rule import (
    DNS_SUBDOMAIN,
    IMAGE,
    QUANTITY,
    QUANTITY_STRING,
    QUESTION_PLACEHOLDER,
    SECRET_KEY,
)
from negrl_operator.controller.refusal import spec_problems
from tests.fixtures.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "negrl.io", "v1alpha1", "negrlexperiments"
NAMESPACE = "admission"
BASE = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "NegRLExperiment", "metadata": {"name": "probe", "namespace": NAMESPACE},
    "spec": {
        "model": {"name": "Qwen/Qwen2.5-Math-1.5B"},
        "data": {"task": "gsm8k", "source": {"kind": "gsm8k-jsonl", "trainPath": "/d/train.jsonl",
                                             "testPath": "/d/test.jsonl"}},
        "storage": {"claimName": "negrl-data"},
    },
}
Path_ = tuple[str | int, ...]
Mutation = tuple[Path_, Any]
# Teachers a cluster runs (#22): an endpoint with its key in a Secret, a model served on GPUs of its own.
ENDPOINT_TEACHER = {"baseUrl": "https://api.example.com/v1", "model": "big", "apiKeySecret": {"name": "teacher-key"}}
SERVED_TEACHER = {"model": "/data/models/teacher-70b", "tensorParallel": 8, "resources": {"requests": {"cpu": 16}}}
SCRATCH_TEACHER = {"hidden": 256, "layers": 4, "heads": 4, "training": {"examples": 64000, "chainLengths": [4]}}
ARITHMETIC = {"kind": "arithmetic", "maxValue": 50}

# Valid and just-invalid values of each value rule (the rule is found on the field's schema).
RULE_SAMPLES: dict[str, list] = {
    DNS_SUBDOMAIN.cel: ["negrl-data", "a", "a.b-c", "0x", "x" * 253, "Bad_Name!!/x", "-a", "a-", "A", "a..b",
                        "a_b", "x" * 254, "a.", "é"],
    SECRET_KEY.cel: ["token", "tls.crt", "a_b-C.9", "bad key", "a/b", "", "x" * 253],
    IMAGE.cel: ["vllm/vllm-openai:v0.32.0", "localhost:5000/x/y:tag", "busybox", "a__b/c---d.e:_t",
                "ghcr.io/negrl/negrl-worker@sha256:" + "a" * 64, "Upper/Case", "x:", "x::y", "http://x", "a b",
                "x:" + "t" * 129, "registry.example.com:port/x"],
    QUANTITY.cel: ["4", "500m", "64Gi", "1.5", ".5", "1.", "1e3", "1E-2", "+1", "100n", "2Ei", 4, 0, 2**40,
                   "lots", "-1", -1, "1Kb", "1K", "1e", "", "1.5.5", "1e1000", "Gi", " 1", "1" * 64, "1" * 65],
    QUANTITY_STRING.cel: ["8Gi", "1.5", "500M", "0", "big", "-1Gi", "", "1" * 64, "1" * 65],
    QUESTION_PLACEHOLDER.cel: ["Q: {question}\nA:", "{question}", "no placeholder", "{Question}", "{ question }"],
}
RULE_ALPHABETS = {DNS_SUBDOMAIN.cel: "az09.-_A/", SECRET_KEY.cel: "aZ9._- /", IMAGE.cel: "az09.-_:/@A",
                  QUANTITY.cel: "0159.-+emkKMGiE ", QUANTITY_STRING.cel: "0159.-+emkKMGiE ",
                  QUESTION_PLACEHOLDER.cel: "{question} }{"}
PATTERN_SAMPLES = {"^/": ["/data", "/", "data", ""], "^[^/].*$|^$": ["negrl", "", "a/b", "/abs"]}
# Rules across fields, as (mutations) groups: each alone breaks or satisfies one rule.
CROSS_FIELD: list[list[Mutation]] = [
    [(("stages", "credit", "enabled"), False)],
    [(("stages", "credit", "enabled"), False), (("stages", "stepDpo", "enabled"), False)],
    [(("stages", "sampling", "enabled"), False)],
    [(("stages", name, "enabled"), False) for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")],
    [(("sweep", "sftMultipliers"), [2])],
    [(("sweep", "sftMultipliers"), [2, 4]), (("data", "syntheticSize"), 10)],
    [(("sweep", "sftMultipliers"), [2]), (("data", "syntheticSize"), 10), (("stages", "sft", "enabled"), False)],
    [(("data", "task"), "sequence")],
    [(("data", "task"), "sequence"), (("data", "source"), {"kind": "stargraph"})],
    [(("data", "source"), {"kind": "stargraph"})],
    [(("data", "source"), {"kind": "gsm8k-jsonl"})],
    [(("stages", "eval", "split"), "validation")],
    [(("stages", "eval", "split"), "validation"), (("data", "source", "validationPath"), "/d/v.jsonl")],
    [(("seeds",), [0, 0])], [(("seeds",), [3, 1])], [(("seeds",), [-2])],
    [(("sweep", "sftMultipliers"), [0]), (("data", "syntheticSize"), 10)],
    [(("sweep", "sftMultipliers"), [-2]), (("data", "syntheticSize"), 10)],
    [(("sweep", "sftMultipliers"), [2, 2]), (("data", "syntheticSize"), 10)],
    [(("teacher", "endpoint"), ENDPOINT_TEACHER)], [(("teacher", "served"), SERVED_TEACHER)],
    [(("teacher", "endpoint"), ENDPOINT_TEACHER), (("teacher", "served"), SERVED_TEACHER)],
    [(("teacher", "served"), SERVED_TEACHER), (("scheduling", "teacher", "nodeSelector"), {"pool": "teacher"})],
]


def _resolve(node: dict, defs: dict) -> dict:
    if "$ref" in node:
        return _resolve({**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        merged = {**_resolve(options[0], defs), **{k: v for k, v in node.items() if k != "anyOf"}}
        if len(options) > 1:  # int | str: a quantity
            merged.pop("type", None)
        return merged
    return node


def fields(node: dict, defs: dict, path: Path_ = ()) -> Iterator[tuple[Path_, dict]]:
    """Every field of the model's JSON schema with its path (a list's first item, a map's key `cpu`)."""
    node = _resolve(node, defs)
    if path:
        yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from fields(sub, defs, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from fields(node["items"], defs, (*path, 0))
    if isinstance(node.get("additionalProperties"), dict):
        yield from fields(node["additionalProperties"], defs, (*path, "cpu"))


def _numbers(node: dict) -> list:
    integer = node.get("type") == "integer"
    step = 1 if integer else 1e-3
    values = []
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            bound = node[key]
            values += [bound - step, bound, bound + step]
    if not values:
        values = [0, -1, 2**40] if integer else [0.0, -1.0, 1e6]
    return [int(v) if integer else float(v) for v in values]


def candidates(path: Path_, node: dict) -> list[Any]:
    """Values around each constraint of one field."""
    rules = [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]
    found: list[Any] = []
    for rule in rules:
        found += RULE_SAMPLES.get(rule, [])
    if "enum" in node:
        found += [*node["enum"], "bogus"]
    kind = node.get("type")
    if kind in ("integer", "number"):
        found += _numbers(node)
    if kind == "string" and not rules:
        found += PATTERN_SAMPLES.get(node.get("pattern", ""), [])
        if "maxLength" in node:
            found += ["a" * node["maxLength"], "a" * (node["maxLength"] + 1)]
        if node.get("minLength"):
            found += [""]
    if kind == "array" and node.get("items", {}).get("type") in ("integer", "string"):
        item = (lambda i: i + 2) if node["items"].get("type") == "integer" else (lambda i: f"s{i}")
        for size in (node.get("minItems", 1) - 1, node.get("maxItems", 0), node.get("maxItems", 0) + 1):
            if size >= 0:
                found.append([item(i) for i in range(size)])
    return found


SCHEMA = ExperimentSpec.model_json_schema(by_alias=True, mode="validation")
POINT_MUTATIONS: list[Mutation] = [(path, value) for path, node in fields(SCHEMA, SCHEMA.get("$defs", {}))
                                   for value in candidates(path, node)]
RULED_FIELDS = [(path, rule["rule"]) for path, node in fields(SCHEMA, SCHEMA.get("$defs", {}))
                for rule in node.get("x-kubernetes-validations", []) if rule["rule"] in RULE_ALPHABETS]


@st.composite
def mutation_groups(draw) -> list[Mutation]:
    kind = draw(st.sampled_from(["point", "point", "text", "cross"]))
    if kind == "point":
        return [draw(st.sampled_from(POINT_MUTATIONS))]
    if kind == "text":
        path, rule = draw(st.sampled_from(RULED_FIELDS))
        return [(path, draw(st.text(alphabet=RULE_ALPHABETS[rule], max_size=24)))]
    return draw(st.sampled_from(CROSS_FIELD))


def with_changes(mutations: list[Mutation]) -> dict:
    doc = copy.deepcopy(BASE)
    for path, value in mutations:
        node: Any = doc["spec"]
        for part, after in zip(path[:-1], path[1:], strict=True):
            empty: Any = [] if isinstance(after, int) else {}
            if isinstance(part, int):
                while len(node) <= part:
                    node.append(empty)
                node = node[part]
            else:
                node = node.setdefault(part, empty)
        if isinstance(path[-1], int):
            while len(node) <= path[-1]:
                node.append(None)
        node[path[-1]] = copy.deepcopy(value)
    return doc


def field_name(path: Path_) -> str:
    """A path as the API server spells it: spec.seeds[0], spec.worker.resources.requests[cpu]."""
    text = "spec"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) or part == "cpu" else f".{part}"
    return text


KNOWN_FIELDS = {field_name(path).split("[")[0] for path, _ in fields(SCHEMA, SCHEMA.get("$defs", {}))}


def names_a_field(message: str, mutations: list[Mutation]) -> bool:
    """The message names a changed field or an object that holds it, or (a rule across fields reports
    on the field it is about, e.g. a stage's `select` needs data.source.validationSize) a field of the spec."""
    prefixes = {field_name(path[:n]).split("[")[0] for path, _ in mutations for n in range(len(path), 0, -1)}
    return any(prefix in message for prefix in prefixes) or any(
        field in message for field in KNOWN_FIELDS if field.count(".") >= 2)


def operator_verdict(doc: dict) -> str | None:
    """None when the operator accepts the manifest, else the one-line message it would show."""
    try:
        ClusterExperimentSpec.model_validate(doc["spec"])  # as the operator reads it (the name is always valid here)
    except ValidationError as error:
        return spec_problems(error)
    return None


def install_crd(kube_cluster) -> None:
    """The committed CRD, applied as is (the API server checks every CEL rule and its cost on the way)."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                         str(REPO / "crds" / "negrl.io_negrlexperiments.yaml"))
    established = '{.status.conditions[?(@.type=="Established")].status}'
    wait_for("the CRD to be established", lambda: kube_cluster.kubectl(
        "get", "crd", "negrlexperiments.negrl.io", "-o", f"jsonpath={established}", check=False).stdout,
        lambda found: found == "True", timeout=60)  # no conditions yet: kubectl fails, and the wait goes on


@pytest.fixture(scope="module")
def admit(kube_cluster, api):
    install_crd(kube_cluster)
    kube_cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    objects = client.CustomObjectsApi(api)

    def verdict(doc: dict) -> str | None:
        """None when the API server admits the manifest (server-side dry run), else its message."""
        try:
            objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, doc, dry_run="All")
        except ApiException as error:
            assert error.status == 422, error.body
            return json.loads(error.body)["message"]
        return None

    assert verdict(BASE) is None and operator_verdict(BASE) is None
    return verdict


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(groups=st.lists(mutation_groups(), min_size=1, max_size=3))
def test_the_api_server_admits_exactly_what_the_operator_accepts(admit, groups):
    mutations = [mutation for group in groups for mutation in group]
    doc = with_changes(mutations)
    api, operator = admit(doc), operator_verdict(doc)
    assert (api is None) == (operator is None), f"{mutations}\nAPI server: {api}\noperator: {operator}"
    event("admitted" if api is None else "refused")  # --hypothesis-show-statistics shows the balance
    if api is not None:
        assert names_a_field(api, mutations), f"{mutations}: the API server does not name the field: {api}"
        assert names_a_field(operator, mutations), f"{mutations}: the operator does not name the field: {operator}"


def test_the_generated_cases_cover_every_constraint():
    covered = {path for path, _ in POINT_MUTATIONS}
    for path in [("seeds", 0), ("storage", "claimName"), ("worker", "resources", "requests", "cpu"),
                 ("sampler", "image"), ("data", "prompt", "template"), ("model", "tokenSecret", "key"),
                 ("stages", "sampling", "params", "seed"), ("sampler", "shmSize"), ("scheduling", "worker",
                 "priorityClassName"), ("stages", "sft", "params", "zeroStage"), ("sampler", "tensorParallel")]:
        assert path in covered, path
    assert len(POINT_MUTATIONS) > 400


# The invalid manifests of issue 21 and more: (changes, the field the refusal must name).
INVALID: list[tuple[str, list[Mutation], str]] = [
    ("sweep-multiplier-0", [(("sweep", "sftMultipliers"), [0]), (("data", "syntheticSize"), 10)],
     "spec.sweep.sftMultipliers"),
    ("sweep-multiplier-negative", [(("sweep", "sftMultipliers"), [-2]), (("data", "syntheticSize"), 10)],
     "spec.sweep.sftMultipliers"),
    ("sweep-multiplier-duplicate", [(("sweep", "sftMultipliers"), [2, 2]), (("data", "syntheticSize"), 10)],
     "spec.sweep.sftMultipliers"),
    ("sweep-without-dsyn", [(("sweep", "sftMultipliers"), [2])], "spec.sweep.sftMultipliers"),
    ("claim-name", [(("storage", "claimName"), "Bad_Name!!/x")], "spec.storage.claimName"),
    ("claim-name-upper", [(("storage", "claimName"), "Data")], "spec.storage.claimName"),
    ("worker-cpu-lots", [(("worker", "resources", "requests", "cpu"), "lots")], "spec.worker.resources.requests[cpu]"),
    ("trainer-memory-negative", [(("trainer", "resources", "limits", "memory"), "-1Gi")],
     "spec.trainer.resources.limits[memory]"),
    ("sampler-cpu-negative-int", [(("sampler", "resources", "requests", "cpu"), -2)],
     "spec.sampler.resources.requests[cpu]"),
    ("shm-size", [(("trainer", "shmSize"), "big")], "spec.trainer.shmSize"),
    ("negative-seed", [(("seeds",), [-1])], "spec.seeds[0]"),
    ("duplicate-seeds", [(("seeds",), [1, 1])], "spec.seeds[1]"),
    ("negative-stage-seed", [(("stages", "sampling", "params", "seed"), -5)], "spec.stages.sampling.params.seed"),
    ("template-without-question", [(("data", "prompt", "template"), "Answer:")], "spec.data.prompt.template"),
    ("worker-image", [(("worker", "image"), "Ghcr.io/Negrl Worker")], "spec.worker.image"),
    ("sampler-image", [(("sampler", "image"), "vllm/vllm-openai::latest")], "spec.sampler.image"),
    ("token-secret-name", [(("model", "tokenSecret", "name"), "hf_token")], "spec.model.tokenSecret.name"),
    ("secret-key", [(("model", "tokenSecret"), {"name": "hf", "key": "a/b"})], "spec.model.tokenSecret.key"),
    ("mlflow-secret", [(("tracking", "mlflowCredentials", "token", "name"), "Bad!")],
     "spec.tracking.mlflowCredentials.token.name"),
    ("priority-class", [(("scheduling", "trainer", "priorityClassName"), "High_Priority")],
     "spec.scheduling.trainer.priorityClassName"),
    ("queue-name", [(("scheduling", "worker", "queueName"), "q" * 64)], "spec.scheduling.worker.queueName"),
    ("samples-per-question", [(("stages", "sampling", "params", "samplesPerQuestion"), 0)],
     "spec.stages.sampling.params.samplesPerQuestion"),
    ("zero-stage", [(("trainer", "zeroStage"), 5)], "spec.trainer.zeroStage"),
    ("stage-zero-stage", [(("stages", "rft", "params", "zeroStage"), 4)], "spec.stages.rft.params.zeroStage"),
    ("learning-rate", [(("stages", "sft", "params", "learningRate"), 0)], "spec.stages.sft.params.learningRate"),
    ("run-as-user", [(("worker", "runAsUser"), 2**31)], "spec.worker.runAsUser"),
    ("unknown-field", [(("sampler", "tensorParalel"), 2)], "tensorParalel"),
    ("step-dpo-without-credit", [(("stages", "credit", "enabled"), False)], "spec.stages.stepDpo.enabled"),
    ("task-source", [(("data", "task"), "sequence")], "spec.data.task"),
    ("arithmetic-task", [(("data", "source"), ARITHMETIC)], "spec.data.task"),
    ("mount-path", [(("storage", "mountPath"), "data")], "spec.storage.mountPath"),
    ("validation-split", [(("stages", "eval", "split"), "validation")], "spec.stages.eval.split"),
    ("teacher-both-kinds", [(("teacher",), {"endpoint": ENDPOINT_TEACHER, "served": SERVED_TEACHER})],
     "spec.teacher.endpoint"),
    ("teacher-secret-name", [(("teacher",), {"endpoint": {**ENDPOINT_TEACHER, "apiKeySecret": {"name": "Teacher_Key"}}})],
     "spec.teacher.endpoint.apiKeySecret.name"),
    ("teacher-key-env", [(("teacher",), {"endpoint": {**ENDPOINT_TEACHER, "apiKeyEnv": "HF_TOKEN"}})],
     "spec.teacher.endpoint.apiKeyEnv"),
    ("teacher-queue-name", [(("teacher",), {"served": SERVED_TEACHER}), (("scheduling", "teacher", "queueName"), "q" * 64)],
     "spec.scheduling.teacher.queueName"),
    ("teacher-model-and-scratch", [(("teacher",), {"served": {**SERVED_TEACHER, "scratch": SCRATCH_TEACHER}}),
                                   (("data", "source"), ARITHMETIC), (("data", "task"), "arithmetic")], "spec.teacher.served.model"),
    ("teacher-scratch-source", [(("teacher",), {"served": {"scratch": SCRATCH_TEACHER}})], "spec.teacher.served.scratch"),
    ("teacher-scratch-range", [(("teacher",), {"served": {"scratch": {**SCRATCH_TEACHER, "training": {
        "examples": 64000, "chainLengths": [4], "maxValue": 51}}}}), (("data", "source"), ARITHMETIC), (("data", "task"), "arithmetic")],
     "spec.teacher.served.scratch.training.maxValue"),
    ("pretrain-lexicon", [(("model", "scratch"), {"pretrain": {"examples": 64, "chainLengths": [2], "lexicon": 9}}),
                          (("data", "source"), {**ARITHMETIC, "lexicon": 8}), (("data", "task"), "arithmetic")],
     "spec.model.scratch.pretrain.lexicon"),
]


@pytest.mark.parametrize(("changes", "field"), [pytest.param(c, f, id=i) for i, c, f in INVALID])
def test_an_invalid_manifest_is_refused_at_admission_naming_the_field(kube_cluster, admit, tmp_path, changes, field):
    doc = with_changes(changes)
    path = tmp_path / "invalid.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr
    assert operator_verdict(doc) is not None  # the operator would refuse it too
