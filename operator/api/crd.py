"""The NegRLExperiment CustomResourceDefinition, generated from the pydantic models.

pydantic's JSON schema is turned into a structural OpenAPI v3 schema: references inlined, optional
fields `nullable`, `int | str` as int-or-string, free-form maps preserved, numeric exclusive bounds in
the OpenAPI 3.0 form; then the model tree adds what pydantic leaves out: defaults of nested objects
(so the API server fills them) and the cross-field rules as CEL (`x-kubernetes-validations`).

`negrl crd` prints it; `negrl crd --check` fails when a committed copy differs; `--write` updates them.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from negrl_operator.api.experiment import (
    EXTERNAL_RULES,
    GROUP,
    KIND,
    PARAM_DOCS,
    PLURAL,
    ROOT_RULES,
    VERSION,
    Checked,
    CrossFieldRule,
    ExperimentSpec,
)
from negrl_operator.api.status import ExperimentStatus

REPO = Path(__file__).resolve().parents[2]
COMMITTED = (REPO / "crds" / "negrl.io_negrlexperiments.yaml", REPO / "charts" / "negrl" / "crds" / "negrl.io_negrlexperiments.yaml")
DROPPED_KEYS = {"title", "discriminator"}
# Lists whose items are unique (set) or keyed (map): the API server enforces it and merges by key.
LIST_TYPES = {"seeds": ("set", None), "sftMultipliers": ("set", None), "conditions": ("map", ["type"]), "stages": ("map", ["name"])}


def structural(node: Any, defs: dict[str, Any], name: str = "") -> Any:
    """pydantic JSON schema -> Kubernetes structural schema (recursive)."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        return structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs, name)
    node = dict(node)
    if "anyOf" in node:
        node = _collapse_any_of(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED_KEYS or (key == "additionalProperties" and value is False):
            continue
        if key == "properties":
            out[key] = {prop: structural(sub, defs, prop) for prop, sub in value.items()}
        elif key in {"items", "additionalProperties"} and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key in {"exclusiveMinimum", "exclusiveMaximum"}:
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if name in LIST_TYPES and out.get("type") == "array":
        list_type, keys = LIST_TYPES[name]
        out["x-kubernetes-list-type"] = list_type
        if keys:
            out["x-kubernetes-list-map-keys"] = keys
    return out


def _collapse_any_of(node: dict, defs: dict) -> dict:
    every = node.pop("anyOf")
    options = [option for option in every if option.get("type") != "null"]
    nullable = len(options) < len(every)
    types_ = sorted(option.get("type", "") for option in options)
    if types_ == ["integer", "string"]:
        merged = {"x-kubernetes-int-or-string": True}
    elif len(options) == 1:
        merged = dict(defs[options[0]["$ref"].split("/")[-1]]) if "$ref" in options[0] else dict(options[0])
    else:
        raise ValueError(f"union {options} has no structural form")
    merged.update(node)
    if nullable:
        merged["nullable"] = True
    return merged


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _is_model_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_model_list(arg) for arg in typing.get_args(annotation))
    return origin is list


def _cel(rules: tuple[CrossFieldRule, ...]) -> list[dict]:
    return [{"rule": r.cel, "message": r.message, **({"fieldPath": r.field_path} if r.field_path else {})}
            for r in rules]


def decorate(model: type[BaseModel], schema: dict) -> dict:
    """Add nested-object defaults and CEL rules by walking the model classes alongside the schema."""
    rules = (model.rules if issubclass(model, Checked) else ()) + EXTERNAL_RULES.get(model, ())
    if rules:
        schema["x-kubernetes-validations"] = _cel(rules)
    for field_name, field in model.model_fields.items():
        prop = schema.get("properties", {}).get(field.alias or field_name)
        if prop is None:
            continue
        if "description" not in prop and (model, field_name) in PARAM_DOCS:
            prop["description"] = PARAM_DOCS[(model, field_name)]
        if field.default_factory is not None:
            value = field.get_default(call_default_factory=True)
            adapter = TypeAdapter(field.annotation)
            prop["default"] = adapter.dump_python(value, mode="json", by_alias=True, exclude_none=True)
        for sub in _models_in(field.annotation):
            decorate(sub, prop["items"] if _is_model_list(field.annotation) else prop)
    return schema


def model_schema(model: type[BaseModel]) -> dict:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return decorate(model, structural(raw, raw.get("$defs", {})))


def _strip_defs(schema: dict) -> dict:
    schema.pop("$defs", None)
    return schema


READY = '.status.conditions[?(@.type=="Ready")]'
PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Ready", "type": "string", "jsonPath": f"{READY}.status", "description": "kstatus Ready: True once Succeeded."},
    {"name": "Reason", "type": "string", "jsonPath": f"{READY}.reason",
     "description": "What holds the experiment (ImagePullBackOff, Unschedulable, SamplerNotReady, InvalidSpec, "
                    "ApplyRejected, ApplyRetrying, ...), else its phase."},
    {"name": "Best", "type": "number", "jsonPath": ".status.results.bestAccuracy",
     "description": "Highest pass@1 among the evaluated policies."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1,
     "description": "What the experiment waits for, or why it failed or is invalid (kubectl get -o wide)."},
]


def crd() -> dict:
    spec = _strip_defs(model_schema(ExperimentSpec))
    spec["description"] = (
        "What to run: model, data, stages, samplers, trainers, storage and scheduling. Each stage reads the "
        "spec when it starts: a change reaches the stages not started yet and the sampler Deployments; running "
        "and finished stages are not redone, and a Succeeded or Failed experiment ignores changes."
    )
    status = _strip_defs(model_schema(ExperimentStatus))
    status["description"] = "What the operator observed: phase, stages, results and conditions."
    root = {
        "type": "object",
        "description": "A NegRL experiment: SFT, sampling, RFT, per-step credit and DPO, evaluation.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": spec, "status": status,
        },
        "x-kubernetes-validations": _cel(ROOT_RULES),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/name": "negrl"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower(),
                "shortNames": ["nrx"], "categories": ["negrl"],
            },
            "versions": [{
                "name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}}, "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def crd_yaml() -> str:
    header = "# Generated by `negrl crd --write` from negrl_operator.api.experiment; do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="negrl crd", description="Print the NegRLExperiment CRD.")
    parser.add_argument("--check", action="store_true", help="fail if a committed copy is stale")
    parser.add_argument("--write", action="store_true", help="rewrite the committed copies")
    args = parser.parse_args(argv)
    text = crd_yaml()
    if args.write:
        for path in COMMITTED:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check:
        stale = [str(path) for path in COMMITTED if not path.exists() or path.read_text() != text]
        if stale:
            print(f"stale CRD (run `negrl crd --write`): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    if not args.write:
        sys.stdout.write(text)
    return 0
