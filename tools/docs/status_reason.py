"""Every reason the operator can write into an experiment's status (a stage's `reason`, a condition's
`reason`), read from the source so that the troubleshooting page can be checked against it.

The reasons are string literals in "reason positions" of the operator's reconcile and controller code:
the reason argument of the calls that build one (`Problem`, `StorageCheck`, `_reasoned`, `_condition`,
`report`), a `reason=` keyword, a `"reason"` key of a dict literal, the value assigned to a name that
holds reasons (`*reason*`), and what a reason is compared with (`x.reason == "Evicted"`,
`waiting.get("reason") in STUCK_WAITING`); module-level constants (`GROUP_RESTART`, tuples such as
`STALLED_REASONS`) are resolved across the scanned modules. A phase is also a reason (Ready and
Reconciling carry the phase once the experiment ends). Events' reasons are not status and not scanned.
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("operator/reconcile", "operator/controller")
# call name -> index of its reason argument
REASON_ARGUMENT = {"Problem": 0, "StorageCheck": 1, "_reasoned": 1, "_condition": 2, "report": 2}
_REASON_WORD = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)*$")  # CamelCase: ImagePullBackOff, OOMKilled
_REASON_WORD_UPPER = re.compile(r"^[A-Z]{2,}[A-Z][a-z]+$")  # OOMKilled


def is_reason_word(text: str) -> bool:
    return bool(_REASON_WORD.match(text) or _REASON_WORD_UPPER.match(text))


def _strings(node: ast.AST, constants: dict[str, tuple[str, ...]]) -> set[str]:
    """The reason-like string literals in an expression, module constants resolved."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and is_reason_word(sub.value):
            found.add(sub.value)
        elif isinstance(sub, ast.Name) and sub.id in constants:
            found.update(word for word in constants[sub.id] if is_reason_word(word))
    return found


def module_constants(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level names bound to a string or a tuple of strings (also `A, B = "x", "y"`)."""
    constants: dict[str, tuple[str, ...]] = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Assign):
            continue
        for target in statement.targets:
            pairs = (zip(target.elts, statement.value.elts, strict=False)
                     if isinstance(target, ast.Tuple) and isinstance(statement.value, ast.Tuple)
                     else [(target, statement.value)])
            for name, bound in pairs:
                words = _literal_strings(bound)
                if isinstance(name, ast.Name) and words is not None:
                    constants[name.id] = words
    return constants


def _literal_strings(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return None


def _names_reason(node: ast.AST) -> bool:
    """An expression that reads a reason: `x.reason`, `x["reason"]`, `x.get("reason")`, a `*reason` name."""
    if isinstance(node, ast.Attribute):
        return node.attr == "reason"
    if isinstance(node, ast.Name):
        return node.id == "reason" or node.id.endswith("_reason")
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "reason"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "reason"
    return False


def _call_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def reason_expressions(tree: ast.Module) -> list[ast.AST]:
    """The expressions of `tree` that end up as a status reason (see the module docstring)."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            index = REASON_ARGUMENT.get(_call_name(node))
            if index is not None and len(node.args) > index:
                found.append(node.args[index])
            found += [keyword.value for keyword in node.keywords if keyword.arg == "reason"]
        elif isinstance(node, ast.Dict):
            found += [val for key, val in zip(node.keys, node.values, strict=True)
                      if isinstance(key, ast.Constant) and key.value == "reason"]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(isinstance(t, ast.Name) and "reason" in t.id.lower() for t in targets):
                found.append(node.value)
        elif isinstance(node, ast.Compare) and _names_reason(node.left):
            found += node.comparators
    return found


def phases() -> tuple[str, ...]:
    from negrl_operator.api.status import Phase

    return typing.get_args(Phase)


def status_reasons(repo: Path = REPO) -> set[str]:
    """Every reason the operator's code can put in an experiment's status."""
    files = [path for folder in SCANNED for path in sorted((repo / folder).glob("*.py"))]
    trees = [ast.parse(path.read_text(), filename=str(path)) for path in files]
    constants: dict[str, tuple[str, ...]] = {}
    for tree in trees:
        constants.update(module_constants(tree))
    reasons = set(phases())
    for tree in trees:
        for expression in reason_expressions(tree):
            reasons |= _strings(expression, constants)
    return reasons
