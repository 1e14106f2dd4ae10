"""Symbolic comparison of two answers. Runs only inside pool worker processes (``pool``).

Answer text reaches sympy only through the latex2sympy2_extended grammar parser, after the
``equivalence`` bounds (length, digits, depth, power towers) and the structure split, so each parse
sees one short leaf. The parsed (still unevaluated) tree is then bounded again before anything is
evaluated: numeric exponents within ``MAX_POWER``, numeric sizes within ``MAX_LOG10`` digits,
factorial arguments within ``MAX_FACTORIAL``, at most ``MAX_NODES`` nodes.

Equality of two expressions: identical canonical forms, else evaluation of both at
``SAMPLE_POINTS`` seeded random rational points to ``PRECISION`` digits (a difference above the
tolerance is a mismatch, agreement everywhere is a match: polynomial identity testing), and
``simplify`` only when evaluation is inconclusive. Equations compare as proportional ``lhs - rhs``,
inequalities (and inequalities against intervals) through their solution sets, matrices entrywise.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import sympy
from latex2sympy2_extended import NormalizationConfig, latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.logic import And
from sympy.core.relational import Relational

from negrl_sampler.grading.equivalence import Node, Seq, Undecided, assignment, decide, fast_leaf
from negrl_sampler.grading.latex import MAX_FACTORIAL, MAX_LOG10, MAX_POWER, Unsupported, parse_latex
from negrl_sampler.grading.number import Blocked, parse_number, rounds_to

MAX_NODES = 4_000
SAMPLE_POINTS = 3
PRECISION = 50
TOLERANCE = sympy.Float(10) ** -30

_NORMALISATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
)
_CONVERSION = ConversionConfig(lowercase_symbols=False)


class ParseError(ValueError):
    pass


class Undefined(ValueError):
    """An answer whose value is undefined (division by zero, 0/0...)."""


@lru_cache(maxsize=2048)
def to_sympy(text: str):
    """The bounded sympy value of one leaf text (Floats replaced by their exact decimals)."""
    try:
        expr = parse_latex(text)
        check_size(expr)
        return expr
    except Unsupported:
        pass
    try:
        expr = latex2sympy(text, normalization_config=_NORMALISATION, conversion_config=_CONVERSION)
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:  # the grammar's errors are plain Exceptions
        raise ParseError(str(exc)[:200]) from None
    check_size(expr)
    if isinstance(expr, sympy.Basic):
        imaginary = [s for s in expr.free_symbols if s.name == "i"]
        if imaginary and not expr.has(sympy.Sum, sympy.Product):
            expr = expr.xreplace({s: sympy.I for s in imaginary})  # policy: a free i is the unit
        floats = expr.atoms(sympy.Float)
        if floats:
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
    return expr


def check_size(expr) -> float:
    """Upper bound on the decimal size of a numeric subtree; raises ``Blocked`` over the bounds."""
    budget = [MAX_NODES]
    return _size(expr, budget)


def _size(expr, budget: list[int]) -> float:
    budget[0] -= 1
    if budget[0] < 0:
        raise Blocked("too-big")
    if isinstance(expr, sympy.Rational):
        return math.log10(max(abs(expr.p), abs(expr.q), 1))
    if isinstance(expr, sympy.Float | sympy.NumberSymbol | sympy.Symbol):
        return 1.0
    args = getattr(expr, "args", ())
    if isinstance(expr, sympy.MatrixBase):
        args = tuple(expr)
    sizes = [_size(a, budget) for a in args if isinstance(a, sympy.Basic)]
    if isinstance(expr, sympy.Pow):
        exponent = 10 ** min(sizes[1], 6)
        if exponent > MAX_POWER:
            raise Blocked("exponent-too-large")
        size = sizes[0] * exponent
    elif isinstance(expr, sympy.factorial | sympy.gamma):
        argument = 10 ** min(sizes[0], 6)
        if argument > MAX_FACTORIAL:
            raise Blocked("factorial-too-large")
        size = argument * math.log10(argument + 1)
    elif isinstance(expr, sympy.Mul):
        size = sum(sizes)
    else:
        size = max(sizes, default=1.0) + 1
    if size > MAX_LOG10:
        raise Blocked("number-too-large")
    return size


def value_of(text: str):
    """``(name, sympy value)`` of a leaf; an equation with a non-name left side stays whole. A
    trailing percent sign is dropped here (numbers get the full percent policy in ``number``)."""
    try:
        name, value = assignment(text)
    except Undecided:
        return None, to_sympy(text)
    return name, to_sympy(value.removesuffix("%").strip())


def symbolic_leaf(pred: str, ref: str) -> bool:
    try:
        return fast_leaf(pred, ref)
    except Undecided:
        pass
    pred_name, a = value_of(pred)
    ref_name, b = value_of(ref)
    if pred_name is not None and ref_name is not None and pred_name != ref_name:
        return False
    if rounding_match(pred, b) or rounding_match(ref, a):
        return True
    return sympy_equal(a, b)


def rounding_match(decimal_text: str, other) -> bool:
    """The decimal rounding policy of ``number`` against an exact non-decimal value."""
    try:
        _, value = assignment(decimal_text)
    except Undecided:
        return False
    num = parse_number(value)
    if num is None or num.places is None or not isinstance(other, sympy.Expr) or other.free_symbols:
        return False
    if isinstance(other, sympy.Rational) and (other * 10**num.places).is_integer:
        return False
    approx = sympy.N(other, 30)
    return approx.is_real is True and approx.is_finite is True and rounds_to(float(approx), num)


def sympy_equal(a, b) -> bool:
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        return matrices_equal(a, b)
    if is_relation(a) or is_relation(b):
        return relations_equal(a, b)
    if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
        return sets_equal(a, b)
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return a == b
    a, b = a.doit(), b.doit()
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        raise Undefined
    return expressions_equal(a, b)


def matrices_equal(a, b) -> bool:
    if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
        return False
    return all(expressions_equal(x, y) for x, y in zip(a, b, strict=True))


def sample_points(symbols) -> list[dict]:
    rng = random.Random(20240607)
    ordered = sorted(symbols, key=str)
    return [
        {s: sympy.Rational(rng.randint(101, 997), rng.randint(89, 443)) for s in ordered}
        for _ in range(SAMPLE_POINTS)
    ]


def evaluate(expr, point: dict):
    """``expr`` at ``point`` to ``PRECISION`` digits, or None when it is not a finite number."""
    value = (expr.subs(point) if point else expr).evalf(PRECISION)
    if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return value


def close(va, vb) -> bool:
    scale = max(sympy.Integer(1), abs(va), abs(vb))
    return bool(abs((va - vb).evalf(PRECISION)) <= TOLERANCE * scale)


def expressions_equal(a, b) -> bool:
    if a == b:
        return True
    for point in sample_points(a.free_symbols | b.free_symbols):
        va, vb = evaluate(a, point), evaluate(b, point)
        if va is None or vb is None:
            return bool(sympy.simplify(a - b) == 0)
        if not close(va, vb):
            return False
    return True


def is_relation(expr) -> bool:
    if isinstance(expr, And):
        return all(isinstance(arg, Relational) for arg in expr.args)
    return isinstance(expr, Relational)


def difference(rel) -> tuple[object, str]:
    """``(d, kind)`` with the relation meaning ``d kind 0`` and kind one of ``=``, ``>``, ``>=``."""
    if isinstance(rel, sympy.Equality):
        return rel.lhs - rel.rhs, "="
    if isinstance(rel, sympy.StrictGreaterThan | sympy.GreaterThan):
        return rel.lhs - rel.rhs, ">" if rel.rel_op == ">" else ">="
    return rel.rhs - rel.lhs, ">" if rel.rel_op == "<" else ">="


def relations_equal(a, b) -> bool:
    if not (is_relation(a) and is_relation(b)):
        return False
    if isinstance(a, And) or isinstance(b, And):
        return same_solution_set(a, b)
    (da, ka), (db, kb) = difference(a), difference(b)
    if ka != kb:
        return same_solution_set(a, b)
    ratios = []
    for point in sample_points(da.free_symbols | db.free_symbols):
        va, vb = evaluate(da, point), evaluate(db, point)
        if va is None or vb is None or vb == 0:
            return same_solution_set(a, b)
        ratios.append((va / vb).evalf(PRECISION))
    first = ratios[0]
    if first == 0 or not all(close(r, first) for r in ratios):
        return False
    return ka == "=" or bool(first.is_extended_real and first > 0)


def same_solution_set(a, b) -> bool:
    symbols = a.free_symbols | b.free_symbols
    if len(symbols) != 1 or isinstance(a, sympy.Equality):
        return False
    return sets_equal(a.as_set(), b.as_set())


def sets_equal(a, b) -> bool:
    if is_relation(a) and len(a.free_symbols) == 1:
        a = a.as_set()
    if is_relation(b) and len(b.free_symbols) == 1:
        b = b.as_set()
    if not (isinstance(a, sympy.Set) and isinstance(b, sympy.Set)):
        return False
    return a == b or bool(a.symmetric_difference(b).is_empty)


def node_text(node: Node) -> str:
    if isinstance(node, str):
        return node
    inner = ",".join(node_text(item) for item in node.items)
    return inner if node.kind in ("list", "union") and not node.opening else node.opening + inner + node.closing


def symbolic_mixed(pred: Node, ref: Node) -> bool:
    """A leaf against a structure: an inequality or a named set against an interval or union."""
    texts = []
    for node in (pred, ref):
        if isinstance(node, Seq) and node.kind == "union":
            texts.append("\\cup".join(node_text(item) for item in node.items))
        else:
            texts.append(node_text(node))
    a, b = to_sympy(texts[0]), to_sympy(texts[1])
    return sets_equal(a, b)


def judge(pred: str, ref: str) -> tuple[bool | None, str]:
    """The worker's answer for one pair: ``(correct, reason)``; never raises."""
    try:
        ok = decide(pred, ref, leaf=symbolic_leaf, mixed=symbolic_mixed)
        return ok, "match" if ok else "mismatch"
    except Blocked as exc:
        return None, f"blocked:{exc.reason}"
    except ParseError:
        return None, "parse-error"
    except Undefined:
        return None, "undefined"
    except RecursionError:
        return None, "blocked:too-deep"
    except MemoryError:
        return None, "blocked:memory"
    except Exception as exc:  # sympy raises many types on odd input; never let one escape
        return None, f"symbolic-error:{type(exc).__name__}"
