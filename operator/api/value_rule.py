"""Rules on one value of the spec, written once and enforced twice: pydantic checks them (`negrl run`,
the operator, every stage config) and the CRD carries them as CEL on the field's schema, so the API
server refuses at admission exactly what the operator would refuse later.

`ValueRule` is pydantic metadata: `Annotated[str, Field(max_length=253), DNS_SUBDOMAIN]`. Every CEL
rule here reads only `self` (the field's value); each regular expression is one that Go's RE2 (the API
server), Rust's regex (pydantic) and Python's `re` (the checks below, always full matches) agree on:
no look-arounds, no backslash classes. Strings that carry a rule have a maxLength, which keeps the
API server's CEL cost estimate bounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import core_schema


@dataclass(frozen=True)
class ValueRule:
    """`cel` runs on the API server with the value as `self`; `check` is the same rule in Python.
    `message` names the fix (the API server and pydantic both prefix it with the field's path)."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    schema: tuple[tuple[str, Any], ...] = ()  # more OpenAPI keywords for the field, e.g. (("maxLength", 64),)

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        def validate(value):
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler) -> dict:
        json_schema = handler(schema)
        json_schema.update(dict(self.schema))
        json_schema.setdefault("x-kubernetes-validations", []).append({"rule": self.cel, "message": self.message})
        return json_schema

    def cel_rule(self) -> dict:
        return {"rule": self.cel, "message": self.message}


def matching(body: str, message: str) -> ValueRule:
    """A string that fully matches the regular expression `body` (RE2 and Python agree on it)."""
    compiled = re.compile(body)
    return ValueRule(f"self.matches('^{body}$')", message,
                     lambda value: isinstance(value, str) and compiled.fullmatch(value) is not None)


_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = matching(
    f"{_LABEL}([.]{_LABEL})*",
    "must be a Kubernetes object name (DNS-1123 subdomain): lower-case letters, digits, '-' and '.', starting "
    "and ending with a letter or digit, at most 253 characters, e.g. negrl-data",
)
SECRET_KEY = matching(
    "[-._a-zA-Z0-9]+", "must be a Secret key: letters, digits, '-', '_' and '.', e.g. token",
)

# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest]
_COMPONENT = "[a-z0-9]+(([_.]|__|[-]+)[a-z0-9]+)*"
_HOST = "[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*(:[0-9]+)?/"
IMAGE = matching(
    f"({_HOST})?{_COMPONENT}(/{_COMPONENT})*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}})?"
    "(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?",
    "must be an image reference: [registry[:port]/]repository[:tag][@sha256:digest] with a lower-case "
    "repository, e.g. ghcr.io/negrl/negrl-worker:0.1.0",
)

# A non-negative Kubernetes quantity (a subset of what resource.ParseQuantity accepts: no sign but
# '+', decimal or binary SI suffixes or a short exponent) of at most 64 characters, or a non-negative
# integer. The length bound keeps the CEL cost estimate of an int-or-string value within budget.
_QUANTITY = re.compile("[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,3}|[KMGTPE]i|[numkMGTPE])?")
_QUANTITY_BODY = _QUANTITY.pattern
QUANTITY_MESSAGE = ("must be a non-negative Kubernetes quantity, e.g. 4, 500m, 64Gi (decimal: n u m k M G T P E; "
                    "binary: Ki Mi Gi Ti Pi Ei)")


QUANTITY_CHARS = 64


def _is_quantity(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and len(value) <= QUANTITY_CHARS and _QUANTITY.fullmatch(value) is not None


QUANTITY = ValueRule(  # on an int-or-string value (resources)
    f"isQuantity(string(self)) && string(self).matches('^{_QUANTITY_BODY}$')", QUANTITY_MESSAGE, _is_quantity,
    (("maxLength", QUANTITY_CHARS),),
)
QUANTITY_STRING = ValueRule(  # on a string (sizes)
    f"isQuantity(self) && self.matches('^{_QUANTITY_BODY}$')", QUANTITY_MESSAGE, _is_quantity,
    (("maxLength", QUANTITY_CHARS),),
)
QUESTION_PLACEHOLDER = ValueRule(
    "self.contains('{question}')",
    "must contain the placeholder {question} where the question text goes, e.g. 'Question: {question}\\nAnswer:'",
    lambda value: "{question}" in value,
)
