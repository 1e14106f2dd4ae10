"""Pure normalisation and comparison of two answer texts (no sympy, no subprocess).

Order of rules (see also ``number`` for the number and decimal policy):

1. Bounds: an answer longer than ``MAX_ANSWER_CHARS``, with a digit run over ``number.MAX_DIGITS``,
   brackets nested deeper than ``MAX_DEPTH`` or a power tower taller than ``MAX_TOWER`` is
   ``Blocked`` (grade ``unparseable``, reason ``blocked:...``).
2. Normalisation: ``$``/``\\(``/``\\[`` wrappers, spacing commands (``\\!``, ``\\,``, ``\\quad``...),
   ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, degrees (``^\\circ``), ``\\text{}``/``\\mbox{}``
   wrappers and trailing units, ``\\$``, thousands ``{,}``, "a and b" / "a or b" -> "a, b". Percent is
   kept as a marker: see ``number`` for its policy.
3. Exact match of the normalised texts (whitespace ignored) is ``True``.
4. Structure: ``A \\cup B`` is a union (unordered); a bare comma list ``1, 2`` is unordered; ``\\{...\\}`` is
   a set (unordered); ``(a, b)``/``[a, b)`` is an ordered tuple or interval whose bracket kinds must
   match. A bare list may stand for a tuple of the same length (then ordered), a one-element set or
   list for its element. ``x \\in [1,2]`` and ``x = (1, 2)`` compare as ``[1,2]`` and ``(1, 2)``.
5. Leaves: ``name = value`` compares by value (both named: names must agree too); two numbers compare
   exactly (``number``); two plain words compare case-insensitively; a number never equals a plain
   word. Anything else raises ``Undecided``: the caller sends the pair to the symbolic check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from negrl_sampler.grading.answer import clean_text
from negrl_sampler.grading.number import Blocked, check_digits, numbers_equal, parse_number

MAX_ANSWER_CHARS = 1_000
MAX_DEPTH = 24
MAX_TOWER = 2
MAX_ITEMS = 64


class Undecided(Exception):
    """The pure rules cannot decide this pair; a symbolic check is needed."""


@dataclass(frozen=True)
class Seq:
    kind: str  # "tuple" (ordered, brackets matter), "set", "list", "union" (unordered)
    opening: str
    closing: str
    items: tuple[Node, ...]


Node = str | Seq
Leaf = Callable[[str, str], bool]

_WRAPPERS = re.compile(r"^\s*(?:\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\])\s*$", re.DOTALL)
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\q?quad\b|\\displaystyle\b|\\textstyle\b|~")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\s*(\\[{}|]|[()\[\]|.])?")
_DFRAC = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ\b|\\circ\b|\\degree\b|\^\s*\{\s*\}")
_TEXT_CMD = r"\\(?:text|mbox|mathrm|textrm|textbf|mathbf|textit|mathit|operatorname)\s*"
_TRAILING_UNIT = re.compile(rf"(?<=[0-9}}a-zA-Z)])\s*{_TEXT_CMD}\{{[^{{}}]*\}}(?:\^\{{?[23]\}}?)?\s*$")
_TEXT_WRAP = re.compile(rf"{_TEXT_CMD}\{{([^{{}}]*)\}}")
_DOLLAR = re.compile(r"\\?\$|\\text\{\s*\}")
_WORD_UNIT = re.compile(r"^([^a-zA-Z\\]*[0-9])\s+[a-zA-Z]{2,}[a-zA-Z .]*$")
_PERCENT_WORD = re.compile(r"\s*\bpercent\b")
_AND = re.compile(r"\s+(?:and|or)\s+|\s*,\s*(?:and|or)\s+")
_THOUSANDS = re.compile(r"^-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?$")
_NAME = re.compile(r"^(?:[A-Za-z]|\\[a-zA-Z]+)(?:_\{?[A-Za-z0-9]+\}?)?'?$")
_PREFIX = re.compile(r"^\s*(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*(?:=|\\in)\s*(?=[(\[]|\\\{)")
_WORD = re.compile(r"^[A-Za-z][A-Za-z ]*[A-Za-z]$")
_FRAC_SHORT = (
    (re.compile(r"\\frac\s*([0-9])\s*([0-9])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([0-9])\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt\s*([0-9a-zA-Z])"), r"\\sqrt{\1}"),
)
_INFINITY = re.compile(r"^[+-]?\s*\\infty$")
_LANGLE = re.compile(r"\\langle\b")
_RANGLE = re.compile(r"\\rangle\b")


def check_bounds(text: str) -> None:
    """Raises ``Blocked`` for inputs over the documented bounds (length, digits, depth, towers)."""
    if len(text) > MAX_ANSWER_CHARS:
        raise Blocked("too-long")
    check_digits(text)
    depth = 0
    exponent_groups: list[bool] = []  # per open bracket: was it opened right after a caret?
    after_caret = False
    for ch in text:
        if ch in "([{":
            depth += 1
            exponent_groups.append(after_caret)
            if depth > MAX_DEPTH:
                raise Blocked("too-deep")
        elif ch in ")]}":
            depth = max(depth - 1, 0)
            if exponent_groups:
                exponent_groups.pop()
        elif ch == "^" and sum(exponent_groups) + 1 > MAX_TOWER:
            raise Blocked("power-tower")
        if not ch.isspace():
            after_caret = ch == "^"


def normalise(text: str) -> str:
    text = clean_text(text).strip()
    while m := _WRAPPERS.match(text):
        text = next(g for g in m.groups() if g is not None).strip()
    text = _SPACING.sub(" ", text)
    text = _SIZING.sub(lambda m: "" if m.group(1) in (None, ".") else m.group(1), text)
    text = _DFRAC.sub(r"\\frac", text)
    for pattern, replacement in _FRAC_SHORT:
        text = pattern.sub(replacement, text)
    text = _DEGREES.sub("", text)
    text = _LANGLE.sub("(", _RANGLE.sub(")", text))
    for _ in range(2):
        text = _TRAILING_UNIT.sub("", text).strip()
    for _ in range(3):
        text = _TEXT_WRAP.sub(lambda m: m.group(1), text)
    text = _DOLLAR.sub("", text).replace("{,}", "").replace("\\%", "%")
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
    text = _PERCENT_WORD.sub("%", text)
    text = _WORD_UNIT.sub(r"\1", text)
    return _AND.sub(", ", text)


def key(text: str) -> str:
    return re.sub(r"\s+", "", text)


def top_level_split(text: str, separator: str) -> list[str]:
    """Splits on ``separator`` outside brackets (bracket kinds are not matched, so ``[1,2)`` works)."""
    parts, depth, start, i, n = [], 0, 0, 0, len(text)
    width = len(separator)
    while i < n:
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i].strip())
            start = i + width
            i += width
            continue
        i += 1
    parts.append(text[start:].strip())
    return parts


def outer_brackets(text: str) -> tuple[str, str, str] | None:
    """``(opening, inner, closing)`` when one bracket pair encloses all of ``text``."""
    if text.startswith("\\{") and text.endswith("\\}"):
        opening, closing, inner = "\\{", "\\}", text[2:-2]
    elif text[:1] in ("(", "[") and text[-1:] in (")", "]"):
        opening, closing, inner = text[0], text[-1], text[1:-1]
    else:
        return None
    depth = 0
    for ch in inner:
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return None
    return (opening, inner, closing) if depth == 0 else None


def structure(text: str, level: int = 0) -> Node:
    """The tuple/interval/set/list/union structure of a normalised answer; leaves are strings."""
    if level > MAX_DEPTH:
        raise Blocked("too-deep")
    text = _PREFIX.sub("", text.strip())
    for separator, kind in (("\\cup", "union"), (",", "list"), (";", "list")):
        parts = top_level_split(text, separator)
        if len(parts) > 1 and not (kind == "list" and _THOUSANDS.match(text)):
            return seq(kind, "", "", parts, level)
    bracketed = outer_brackets(text)
    if bracketed is None:
        return text
    opening, inner, closing = bracketed
    parts = top_level_split(inner, ",") if inner.strip() else []
    if opening == "\\{":
        return seq("set", opening, closing, parts, level)
    if len(parts) == 1 and (opening, closing) in (("(", ")"), ("[", "]")):
        return structure(inner, level + 1)
    return seq("tuple", opening, closing, parts, level)


def seq(kind: str, opening: str, closing: str, parts: list[str], level: int) -> Seq:
    if len(parts) > MAX_ITEMS:
        raise Blocked("too-many-items")
    return Seq(kind, opening, closing, tuple(structure(p, level + 1) for p in parts))


def equal(pred: Node, ref: Node, leaf: Leaf, mixed: Callable[[Node, Node], bool] | None = None) -> bool:
    """Structural equality of two answers, ``leaf`` deciding between two leaf texts."""
    if isinstance(pred, str) and isinstance(ref, str):
        return leaf(pred, ref)
    if isinstance(pred, Seq) and pred.kind == "set" and len(pred.items) == 1:
        return equal(pred.items[0], ref, leaf, mixed)
    if isinstance(ref, Seq) and ref.kind == "set" and len(ref.items) == 1:
        return equal(pred, ref.items[0], leaf, mixed)
    if isinstance(pred, str) or isinstance(ref, str):
        if mixed is None:
            raise Undecided  # e.g. an inequality against an interval: the symbolic check decides
        return mixed(pred, ref)
    if len(pred.items) != len(ref.items):
        return False
    if "tuple" in (pred.kind, ref.kind):
        if pred.kind == ref.kind and (pred.opening, pred.closing) != (ref.opening, ref.closing):
            return False
        if {pred.kind, ref.kind} - {"tuple", "list"}:
            return False
        return all(equal(p, r, leaf, mixed) for p, r in zip(pred.items, ref.items, strict=True))
    if (pred.kind == "union") != (ref.kind == "union"):
        return False
    return unordered_equal(pred.items, ref.items, leaf, mixed)


def unordered_equal(pred: tuple[Node, ...], ref: tuple[Node, ...], leaf: Leaf, mixed) -> bool:
    """Greedy matching (sound: equality is an equivalence). A pair the leaf rule cannot decide
    only matters when no decided match exists."""
    left = list(ref)
    for p in pred:
        undecided = False
        for i, r in enumerate(left):
            try:
                matched = equal(p, r, leaf, mixed)
            except Undecided:
                undecided = True
                continue
            if matched:
                del left[i]
                break
        else:
            if undecided:
                raise Undecided
            return False
    return True


def assignment(text: str) -> tuple[str | None, str]:
    """``("x", "5")`` for ``x = 5`` (last part of a chain), ``(None, text)`` otherwise.

    Raises ``Undecided`` for an equation whose left side is not a plain name (``x^2+y^2=1``)."""
    parts = [p for p in re.split(r"(?<![<>!\\])=", text)]
    if len(parts) == 1:
        return None, text
    name = parts[0].strip()
    if not _NAME.match(name) or not parts[-1].strip():
        raise Undecided
    return name, parts[-1].strip()


def fast_leaf(pred: str, ref: str) -> bool:
    """The pure leaf rules (rule 5 above)."""
    if key(pred) == key(ref):
        return True
    pred_name, pred_value = assignment(pred)
    ref_name, ref_value = assignment(ref)
    if pred_name is not None and ref_name is not None and pred_name != ref_name:
        return False
    if key(pred_value) == key(ref_value):
        return True
    a, b = parse_number(pred_value), parse_number(ref_value)
    if a is not None and b is not None:
        return numbers_equal(a, b)
    a_word = bool(_WORD.match(pred_value) or _INFINITY.match(pred_value))
    b_word = bool(_WORD.match(ref_value) or _INFINITY.match(ref_value))
    if a_word and b_word:
        return pred_value.lower() == ref_value.lower()
    if (a is not None and b_word) or (b is not None and a_word):
        return False
    raise Undecided


def prepare(text: str) -> str:
    """Bounds check then normalisation of one answer text."""
    check_bounds(text)
    normal = normalise(text)
    check_bounds(normal)
    return normal


def decide(pred: str, ref: str, leaf: Leaf = fast_leaf, mixed=None) -> bool:
    """True/False for a pair of raw answer texts; raises ``Blocked`` or (with the default ``leaf``)
    ``Undecided``."""
    p, r = prepare(pred), prepare(ref)
    if not p or not r:
        return False
    if key(p) == key(r):
        return True
    return equal(structure(p), structure(r), leaf, mixed)
