"""The NegRLExperiment API reference page, written from the CRD the operator generates from its pydantic
models (`negrl_operator.api.crd.crd()`), so every field, type, default, constraint and description is the
one the API server enforces and `kubectl explain` shows.

One section per object (spec, status and every nested object, lists of objects as `path[]`), each a
table of its fields; an object's cross-field rules (CEL) follow its table, by their messages.
"""

from __future__ import annotations

from typing import Any

from tools.docs.markdown import cell, table, value

HEADER = ["Field", "Type", "Default", "Constraints", "Description"]
PAGE = "docs/reference/api.md"


def anchor(path: str) -> str:
    """The section id of an object path: spec.stages.sft -> spec-stages-sft; `[]` drops out."""
    return path.replace("[]", "").replace(".", "-").lower()


def is_object(node: dict) -> bool:
    return node.get("type") == "object" and "properties" in node


def type_name(node: dict) -> str:
    """The field's type as a reader writes it: string, integer, []string, map[string]int-or-string, object."""
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type", "any")
    if kind == "array":
        return "[]" + type_name(node.get("items", {}))
    if kind == "object":
        if "properties" in node:
            return "object"
        if isinstance(node.get("additionalProperties"), dict):
            return "map[string]" + type_name(node["additionalProperties"])
        return "object (free-form)"
    return kind


def constraints(node: dict, required: bool) -> list[str]:
    """Every constraint on one field's value, in words; the field-level CEL rules by their message."""
    found = ["required"] if required else []
    if "enum" in node:
        found.append("one of " + ", ".join(f"`{item}`" for item in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None:
        found.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {low}")
    if high is not None:
        found.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {high}")
    for key, words in (("minLength", "length >= {}"), ("maxLength", "length <= {}"), ("minItems", "at least {} items"),
                       ("maxItems", "at most {} items"), ("maxProperties", "at most {} keys")):
        if key in node:
            found.append(words.format(node[key]))
    if "pattern" in node:
        found.append(f"pattern `{node['pattern']}`")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        found.append("distinct items")
    elif list_type == "map":
        found.append("items keyed by " + ", ".join(f"`{key}`" for key in node.get("x-kubernetes-list-map-keys", [])))
    items = node.get("items") or (node.get("additionalProperties") if isinstance(node.get("additionalProperties"), dict)
                                  else None)
    if items is not None and not is_object(items):
        found += [f"each: {text}" for text in constraints(items, False)]
    if not is_object(node):  # an object's own rules are listed in its section
        found += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return found


def _child_object(node: dict) -> dict | None:
    """The object a field opens a section for: itself, or the objects of its list."""
    if is_object(node):
        return node
    if node.get("type") == "array" and is_object(node.get("items", {})):
        return node["items"]
    return None


def field_row(path: str, name: str, node: dict, required: bool) -> list[str]:
    child = _child_object(node)
    child_path = f"{path}.{name}" + ("[]" if node.get("type") == "array" else "")
    label = f"[`{name}`](#{anchor(child_path)})" if child is not None else f"`{name}`"
    default = "" if child is not None and node.get("type") == "object" else value(node.get("default"))
    return [label, f"`{type_name(node)}`", default, cell("; ".join(constraints(node, required))),
            cell(node.get("description", ""))]


def object_sections(path: str, node: dict) -> list[str]:
    """The section of the object at `path` and, after it, those of the objects its fields hold."""
    required = set(node.get("required", []))
    fields = node["properties"]
    lines = [f"### `{path}` {{#{anchor(path)}}}", ""]
    if node.get("description"):
        lines += [cell(node["description"]), ""]
    lines += table(HEADER, [field_row(path, name, sub, name in required) for name, sub in fields.items()])
    rules = [rule for rule in node.get("x-kubernetes-validations", [])]
    if rules:
        lines += ["", "Rules across fields (the API server refuses a manifest that breaks one, with this message):", ""]
        lines += [f"- {cell(rule['message'])}" + (f" (`{rule['fieldPath'].lstrip('.')}`)" if rule.get("fieldPath")
                                                 else "") for rule in rules]
    lines.append("")
    for name, sub in fields.items():
        child = _child_object(sub)
        if child is not None:
            lines += object_sections(f"{path}.{name}" + ("[]" if sub.get("type") == "array" else ""), child)
    return lines


def printer_columns(columns: list[dict]) -> list[str]:
    """`kubectl get nrx` columns (priority 1: only with `-o wide`)."""
    rows = [[f"`{column['name']}`" + (" (`-o wide`)" if column.get("priority") else ""), f"`{column['jsonPath']}`",
             cell(column.get("description", ""))] for column in columns]
    return table(["Column", "From", "Meaning"], rows)


def generated_crd() -> dict[str, Any]:
    from negrl_operator.api.crd import crd

    return crd()


def api_page(definition: dict[str, Any] | None = None) -> str:
    """The page for a CRD (default: the one the operator's models generate now)."""
    version = (generated_crd() if definition is None else definition)["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        "# API reference: NegRLExperiment",
        "",
        "<!-- Generated by `make docs-reference` from negrl_operator.api (the CRD's schema); do not edit. -->",
        "",
        "`apiVersion: negrl.io/v1alpha1`, `kind: NegRLExperiment` (short name `nrx`, category `negrl`). "
        "The same pydantic models generate the CRD (`crds/negrl.io_negrlexperiments.yaml`) and validate "
        "`negrl run`'s manifests, so this page, `kubectl explain negrlexperiment.spec` and both validators agree. "
        "Field names are camelCase; a field with no default is unset unless given.",
        "",
        "## Whole object",
        "",
        *[f"- {cell(rule['message'])}" for rule in root.get("x-kubernetes-validations", [])],
        "",
        "## `kubectl get nrx` columns",
        "",
        *printer_columns(version.get("additionalPrinterColumns", [])),
        "",
        "## Spec",
        "",
        *object_sections("spec", root["properties"]["spec"]),
        "## Status",
        "",
        "Written by the operator only (the status subresource: `kubectl apply` cannot set it).",
        "",
        *object_sections("status", root["properties"]["status"]),
    ]
    return "\n".join(lines).rstrip() + "\n"
