"""A small, bounded recursive-descent parser for the common LaTeX arithmetic subset.

Runs inside pool workers (it builds sympy values). It is about 50x faster than the ANTLR grammar
of latex2sympy2_extended, which ``symbolic`` still uses for everything outside this subset (the
parser raises ``Unsupported`` there): relations, sets, matrices, integrals, sums, limits...

Grammar (after ``equivalence.normalise``):
    expr   := term (("+" | "-") term)*
    term   := signed (("\\cdot" | "\\times" | "*" | "/" | "\\div")? signed)*   (juxtaposition multiplies)
    signed := ("-" | "+") signed | power
    power  := postfix ("^" exponent)?
    postfix:= atom "!"*
    atom   := number | letter subscript? | \\pi | \\infty | greek | "(" expr ")" | "{" expr "}"
            | \\frac arg arg | \\sqrt ("[" expr "]")? arg | \\binom arg arg | "|" expr "|"
            | function ("^" exponent)? argument            (\\sin \\cos \\tan \\ln \\log_b \\exp ...)
``e`` is Euler's number and ``i`` the imaginary unit (as in latex2sympy2_extended). Bounds: recursion
depth ``MAX_DEPTH``, numeric exponents within ``MAX_POWER`` and result sizes within ``MAX_LOG10``
digits, factorials of integers up to ``MAX_FACTORIAL``; past them ``Blocked`` is raised.
"""

from __future__ import annotations

import math
import re

import sympy

from negrl_sampler.grading.number import Blocked

MAX_DEPTH = 60
MAX_POWER = 10_000
MAX_LOG10 = 10_000
MAX_FACTORIAL = 1_000

_TOKEN = re.compile(r"\s*(\\[a-zA-Z]+|\\.|[0-9]+(?:\.[0-9]*)?|\.[0-9]+|[a-zA-Z]|.)", re.DOTALL)
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega",
}
_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
    "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "exp": sympy.exp,
}
_PRODUCT = {"\\cdot", "\\times", "*"}
_DIVIDE = {"/", "\\div"}


class Unsupported(ValueError):
    """Outside this parser's subset: use the full grammar."""


def size(value) -> float:
    """Decimal digits of a rational (numerator or denominator, the larger)."""
    if isinstance(value, sympy.Rational):
        return math.log10(max(abs(value.p), abs(value.q), 1))
    return 0.0


def power(base, exponent):
    if isinstance(exponent, sympy.Rational):
        if abs(exponent) > MAX_POWER:
            raise Blocked("exponent-too-large")
        if size(base) * float(abs(exponent)) > MAX_LOG10:
            raise Blocked("number-too-large")
    elif exponent.is_number and not exponent.free_symbols:
        magnitude = abs(complex(sympy.N(exponent, 15)))
        if not magnitude < MAX_POWER:
            raise Blocked("exponent-too-large")
    return sympy.Pow(base, exponent)


def factorial(value):
    if isinstance(value, sympy.Integer) and not 0 <= value <= MAX_FACTORIAL:
        raise Blocked("factorial-too-large")
    if value.is_number and not isinstance(value, sympy.Integer):
        raise Unsupported("factorial of a non-integer")
    return sympy.factorial(value)


class Parser:
    def __init__(self, text: str):
        self.tokens = [t for t in _TOKEN.findall(text) if t.strip()]
        self.pos = 0
        self.depth = 0
        self.bars = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected!r}, found {token!r}")
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Blocked("too-deep")

    def parse(self):
        value = self.expr()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r}")
        return value

    def expr(self):
        self.enter()
        value = self.term()
        while self.peek() in ("+", "-"):
            sign = self.take()
            right = self.term()
            value = value + right if sign == "+" else value - right
        self.depth -= 1
        return value

    def term(self):
        value = self.signed()
        while True:
            token = self.peek()
            if token in _PRODUCT:
                self.take()
                value = value * self.signed()
            elif token in _DIVIDE:
                self.take()
                value = value / self.signed()
            elif self.starts_atom(token):
                if token[0].isdigit() or token[0] == ".":
                    raise Unsupported("a number after a factor")
                value = value * self.power()
            else:
                return value

    def starts_atom(self, token: str | None) -> bool:
        if token is None:
            return False
        if token == "|":
            return self.bars == 0
        return token[0].isalnum() or token[0] == "." or token in ("(", "{") or (
            token.startswith("\\") and token[1:] in _ATOM_COMMANDS)

    def signed(self):
        if self.peek() in ("-", "+"):
            sign = self.take()
            self.enter()
            value = self.signed()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return power(base, self.exponent())
        return base

    def exponent(self):
        if self.peek() in ("-", "+"):
            sign = self.take()
            value = self.postfix()
            return -value if sign == "-" else value
        return self.postfix()

    def postfix(self):
        value = self.atom()
        while self.peek() == "!":
            self.take()
            value = factorial(value)
        return value

    def group(self):
        """``{expr}`` or one token (``\\frac12``-style arguments)."""
        if self.peek() == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        return self.atom()

    def atom(self):
        self.enter()
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            value = sympy.Rational(token)
        elif token[0].isalpha():
            value = self.letter(token)
        elif token in ("(", "{"):
            value = self.expr()
            self.take(")" if token == "(" else "}")
        elif token == "|":
            self.bars += 1
            value = sympy.Abs(self.expr())
            self.bars -= 1
            self.take("|")
        elif token.startswith("\\") and token[1:] in _ATOM_COMMANDS:
            value = _ATOM_COMMANDS[token[1:]](self)
        else:
            raise Unsupported(f"token {token!r}")
        self.depth -= 1
        return value

    def letter(self, token: str):
        if self.peek() == "_":
            self.take()
            sub = self.take()
            if sub == "{":
                sub = self.take()
                self.take("}")
            if not sub.isalnum():
                raise Unsupported("subscript")
            return sympy.Symbol(f"{token}_{sub}")
        if token == "e":
            return sympy.E
        if token == "i":
            return sympy.I
        return sympy.Symbol(token)

    def function(self, name: str):
        exponent = None
        if self.peek() == "^":
            self.take()
            exponent = self.exponent()
        if self.peek() in ("(", "{"):
            argument = self.atom()
        else:
            argument = self.power()
            while self.peek() is not None and (self.peek()[0].isalpha() or self.peek()[0].isdigit()):
                argument = argument * self.power()
        value = _FUNCTIONS[name](argument)
        return power(value, exponent) if exponent is not None else value

    def log(self):
        base = None
        if self.peek() == "_":
            self.take()
            base = self.group()
        value = self.function("ln")
        return value / sympy.log(base) if base is not None else value

    def frac(self):
        top = self.group()
        return top / self.group()

    def sqrt(self):
        if self.peek() == "[":
            self.take()
            index = self.expr()
            self.take("]")
            return sympy.root(self.group(), index)
        return sympy.sqrt(self.group())

    def binom(self):
        top, bottom = self.group(), self.group()
        if not (isinstance(top, sympy.Integer) and isinstance(bottom, sympy.Integer)):
            raise Unsupported("symbolic binomial")
        if top > MAX_FACTORIAL:
            raise Blocked("factorial-too-large")
        return sympy.binomial(top, bottom)


def _function_reader(name: str):
    return lambda parser: parser.function(name)


_ATOM_COMMANDS = {
    "frac": Parser.frac, "sqrt": Parser.sqrt, "binom": Parser.binom, "log": Parser.log,
    "pi": lambda parser: sympy.pi, "infty": lambda parser: sympy.oo,
    **{name: (lambda parser, n=name: sympy.Symbol(n)) for name in _GREEK},
    **{name: _function_reader(name) for name in _FUNCTIONS},
}


def parse_latex(text: str):
    """The sympy value of ``text`` in the subset above; raises ``Unsupported`` or ``Blocked``."""
    return Parser(text).parse()
