"""Exact numbers from normalised answer text, without sympy.

Accepted forms (after ``equivalence.normalise``, which drops ``$`` and units): integers and
decimals (``1,234`` thousands groups, ``1{,}234``), signs, fractions ``a/b`` and ``\\frac{a}{b}``,
mixed numbers ``2\\frac{1}{2}`` and ``2 1/2`` (= 5/2, a sign applies to the whole), scientific notation
``1.5e3``, ``1.5\\times10^{3}``, ``1.5\\cdot10^3``, and a trailing ``%``.

Bounds (checked before any big-number arithmetic): at most ``MAX_DIGITS`` digits in a literal and
exponents of ten within ``MAX_EXPONENT``; beyond them ``Blocked`` is raised.

Percent policy: ``X%`` equals both ``X`` (the question asked for a percentage) and ``X/100`` (its
value): ``50% == 50 == 0.5``, ``25% == 1/4``; without a percent sign ``0.5 != 50``.

Decimal policy: a number written with a decimal point carries its number of places. Two values are
equal when they are exactly equal as rationals (``0.5 == 1/2``). A decimal with at least
``MIN_ROUNDED_PLACES`` places also equals a value that is not itself a finite decimal of at most that
many places when the value, correctly rounded to those places, is the decimal (``0.333 == 1/3``,
``1.414 == \\sqrt{2}``, but ``0.33 != 1/3``). Two written decimals always compare exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_DIGITS = 100
MAX_EXPONENT = 400
MIN_ROUNDED_PLACES = 3


class Blocked(ValueError):
    """An input over a bound; ``reason`` is the part after ``blocked:``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Num:
    value: Fraction
    places: int | None = None  # decimal places as written; None for integers, fractions, sci
    percent: bool = False  # written with a trailing %


_DEC = r"(?:[0-9]{1,3}(?:(?:,|\{,\})[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+"
_DECIMAL = re.compile(rf"({_DEC})")
_SCI = re.compile(rf"({_DEC})(?:[eE]([+-]?[0-9]+)|(?:\\times|\\cdot|\*)10\^(?:\{{([+-]?[0-9]+)\}}|([0-9])))")
_SLASH = re.compile(rf"({_DEC})/({_DEC})")
_FRAC = re.compile(rf"\\frac\{{([+-]?)({_DEC})\}}\{{([+-]?)({_DEC})\}}")
_MIXED_FRAC = re.compile(r"([0-9]+)\\frac\{([0-9]+)\}\{([0-9]+)\}")
_MIXED_SLASH = re.compile(r"([0-9]+)\s+([0-9]+)/([0-9]+)")
_DIGIT_RUN = re.compile(r"[0-9]+")


def check_digits(text: str) -> None:
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() > MAX_DIGITS:
            raise Blocked("too-many-digits")


def decimal(text: str) -> Num:
    plain = text.replace("{,}", "").replace(",", "")
    whole, _, frac = plain.partition(".")
    value = Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    return Num(value, len(frac) if "." in plain and frac else None)


def ten_power(exponent: str) -> Fraction:
    power = int(exponent)
    if abs(power) > MAX_EXPONENT:
        raise Blocked("exponent-too-large")
    return Fraction(10) ** power


def unsigned_number(text: str) -> Num | None:
    if m := _DECIMAL.fullmatch(text):
        return decimal(m.group(1))
    if m := _SCI.fullmatch(text):
        exponent = next(g for g in m.groups()[1:] if g is not None)
        return Num(decimal(m.group(1)).value * ten_power(exponent))
    if m := _SLASH.fullmatch(text):
        return ratio(decimal(m.group(1)).value, decimal(m.group(2)).value)
    if m := _FRAC.fullmatch(text):
        top, bottom = decimal(m.group(2)).value, decimal(m.group(4)).value
        sign = -1 if (m.group(1) == "-") != (m.group(3) == "-") else 1
        found = ratio(top, bottom)
        return Num(sign * found.value) if found else None
    if m := _MIXED_FRAC.fullmatch(text):
        whole, top, bottom = (int(g) for g in m.groups())
        if bottom == 0 or top >= bottom:
            return None
        return Num(whole + Fraction(top, bottom))
    return None


def ratio(top: Fraction, bottom: Fraction) -> Num | None:
    return Num(top / bottom) if bottom != 0 else None


def parse_number(text: str) -> Num | None:
    """The exact value of a normalised number literal, or None if ``text`` is not one."""
    if not text or len(text) > 4 * MAX_DIGITS:
        return None
    check_digits(text)
    text = text.strip()
    if m := _MIXED_SLASH.fullmatch(text.lstrip("+-")):
        whole, top, bottom = (int(g) for g in m.groups())
        if 0 < top < bottom:
            return Num((-1 if text[0] == "-" else 1) * (whole + Fraction(top, bottom)))
    sign = 1
    body = "".join(text.split())
    percent = body.endswith("%")
    if percent:
        body = body[:-1]
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    found = unsigned_number(body)
    if found is None:
        return None
    return Num(sign * found.value, found.places, percent)


def rounds_to(value: float | Fraction, decimal_num: Num) -> bool:
    """Whether ``value`` correctly rounded to the decimal's places gives the decimal (policy above)."""
    places = decimal_num.places
    if places is None or places < MIN_ROUNDED_PLACES:
        return False
    half_unit = Fraction(1, 2 * 10**places)
    if isinstance(value, float):
        return abs(value - float(decimal_num.value)) <= float(half_unit) * (1 + 1e-9)
    return abs(value - decimal_num.value) <= half_unit


def numbers_equal(a: Num, b: Num) -> bool:
    if a.value == b.value:
        return True
    if a.percent != b.percent:
        scaled = a if a.percent else b
        other = b if a.percent else a
        return scaled.value / 100 == other.value
    # The rounding rule applies between a decimal and a non-decimal value that is not a short decimal.
    for dec, other in ((a, b), (b, a)):
        if dec.places is not None and other.places is None and not is_short_decimal(other.value, dec.places):
            if rounds_to(other.value, dec):
                return True
    return False


def is_short_decimal(value: Fraction, places: int) -> bool:
    """True if ``value`` is a finite decimal with at most ``places`` places."""
    return (value * 10**places).denominator == 1
