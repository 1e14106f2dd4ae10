"""Equivalence rules: each row is one named behaviour (prediction, reference, expected).

The pure tables run ``equivalence.decide`` (no sympy); the symbolic table runs ``symbolic.judge``
in this process (the comparison itself; the pool is tested in test_grader.py)."""

import pytest

from negrl_sampler.grading.equivalence import Undecided, decide, normalise
from negrl_sampler.grading.number import Blocked, parse_number
from negrl_sampler.grading.symbolic import judge

PURE = {
    # exact and normalised strings
    "identical": ("42", "42", True),
    "whitespace ignored": ("x + 1", "x+1", True),
    "dollar wrappers": ("$\\frac{1}{2}$", "\\frac{1}{2}", True),
    "spacing commands": ("1\\!000", "1000", True),
    "thin space thousands": ("1\\,000", "1000", True),
    "left right": ("\\left(1,2\\right)", "(1,2)", True),
    "dfrac tfrac": ("\\dfrac{3}{4}", "\\tfrac{3}{4}", True),
    "text wrapper": ("\\text{Monday}", "Monday", True),
    "mbox unit": ("5\\mbox{ cm}", "5", True),
    "text unit squared": ("10\\text{ cm}^2", "10", True),
    "plain word unit": ("12 inches", "12", True),
    "degrees circ": ("90^\\circ", "90", True),
    "degrees braced circ": ("90^{\\circ}", "90", True),
    "words case-insensitive": ("\\text{Odd}", "odd", True),
    "different words": ("\\text{even}", "odd", False),
    "number never equals a word": ("5", "five", False),
    # numbers
    "integer vs decimal": ("18.00", "18", True),
    "commas": ("1,234,567", "1234567", True),
    "latex thousands": ("1{,}500", "1500", True),
    "dollar sign": ("\\$32.5", "32.50", True),
    "fraction vs decimal": ("0.5", "\\frac{1}{2}", True),
    "slash fraction": ("3/4", "0.75", True),
    "frac shorthand": ("\\frac12", "0.5", True),
    "negative fraction forms": ("\\frac{-3}{4}", "-\\frac{3}{4}", True),
    "denominator sign": ("\\frac{3}{-4}", "-0.75", True),
    "mixed number latex": ("2\\frac{1}{2}", "\\frac{5}{2}", True),
    "mixed number slash": ("2 1/2", "2.5", True),
    "scientific e": ("1.5e3", "1500", True),
    "scientific times": ("1.5 \\times 10^{3}", "1500", True),
    "scientific cdot": ("2\\cdot10^3", "2000", True),
    "scientific near miss": ("1.5 \\times 10^4", "1500", False),
    "percent equals its number": ("50\\%", "50", True),
    "percent equals its value": ("25\\%", "\\frac{1}{4}", True),
    "percent word": ("20 percent", "0.2", True),
    "no percent sign, no scaling": ("0.5", "50", False),
    "decimal rounding three places": ("0.333", "\\frac{1}{3}", True),
    "decimal rounding two places is not enough": ("0.33", "\\frac{1}{3}", False),
    "two decimals compare exactly": ("0.5004", "0.500", False),
    "near miss half vs two": ("1/2", "2", False),
    "near miss reciprocal": ("\\frac{2}{5}", "\\frac{5}{2}", False),
    "off by one": ("17", "18", False),
    # structure
    "tuple order matters": ("(1,2)", "(2,1)", False),
    "tuple spacing": ("(1, 2)", "(1,2)", True),
    "3-tuple": ("(3,-1,2)", "(3, -1, 2)", True),
    "tuple length": ("(1,2)", "(1,2,3)", False),
    "interval brackets matter": ("[1,2)", "[1,2]", False),
    "interval equal": ("[-2, 5)", "[-2,5)", True),
    "set order ignored": ("\\{2,1\\}", "\\{1,2\\}", True),
    "set vs list": ("\\{1,3\\}", "3, 1", True),
    "list order ignored": ("3, 1", "1, 3", True),
    "list near miss": ("1, 2", "1, 3", False),
    "singleton set": ("\\{5\\}", "5", True),
    "union order ignored": ("(5,\\infty)\\cup(-\\infty,3)", "(-\\infty,3)\\cup(5,\\infty)", True),
    "union bracket near miss": ("(-\\infty,3]\\cup(5,\\infty)", "(-\\infty,3)\\cup(5,\\infty)", False),
    "x in interval": ("x \\in [1,2]", "[1,2]", True),
    "and list": ("1 and 3", "1, 3", True),
    "or list": ("x=-1 \\text{ or } x=2", "2, -1", True),
    # equations
    "assignment vs value": ("x=5", "5", True),
    "value vs assignment": ("5", "x = 5", True),
    "assignment names must agree": ("y=5", "x=5", False),
    "assignment near miss": ("x = -5", "5", False),
    "assignments in a list": ("x = 1, 3", "1, 3", True),
    "multiple choice": ("C", "\\text{(C)}", True),
}

SYMBOLIC = {
    "radical near miss": ("3\\sqrt{2}", "3\\sqrt{3}", False),
    "radical simplification": ("\\sqrt{18}", "3\\sqrt{2}", True),
    "rationalised denominator": ("\\frac{2}{\\sqrt{5}}", "\\frac{2\\sqrt{5}}{5}", True),
    "pi fraction": ("\\pi/4", "\\frac{\\pi}{4}", True),
    "pi coefficient near miss": ("3\\pi", "6\\pi", False),
    "cdot product": ("\\pi \\cdot 6", "6\\pi", True),
    "polynomial expansion": ("(x+1)^2", "x^2+2x+1", True),
    "polynomial near miss": ("(x-1)^2", "x^2+2x+1", False),
    "factored difference of squares": ("(a-b)(a+b)", "a^2-b^2", True),
    "different variables": ("y+1", "x+1", False),
    "rational function": ("\\frac{-x-1}{1-x}", "\\frac{x+1}{x-1}", True),
    "powers": ("4^5", "2^{10}", True),
    "negative exponent": ("x^{-1}", "\\frac{1}{x}", True),
    "fractional exponent": ("2^{1/3}", "\\sqrt[3]{2}", True),
    "factorial": ("5!", "120", True),
    "binomial": ("\\binom{6}{2}", "15", True),
    "logarithm base": ("\\log_2 8", "3", True),
    "euler identity": ("e^{i\\pi}", "-1", True),
    "complex numbers": ("3i+2", "2+3i", True),
    "complex near miss": ("2-3i", "2+3i", False),
    "trig identity": ("\\sin^2 x + \\cos^2 x", "1", True),
    "decimal approximates radical": ("1.414", "\\sqrt{2}", True),
    "decimal too coarse": ("1.4", "\\sqrt{2}", False),
    "equation rearranged": ("y^2+x^2=25", "x^2+y^2=25", True),
    "equation moved to one side": ("x^2+y^2-25=0", "x^2+y^2=25", True),
    "equation near miss": ("x^2+y^2=5", "x^2+y^2=25", False),
    "line assignment": ("y=3+2x", "y = 2x + 3", True),
    "line near miss": ("y=2x-3", "y = 2x + 3", False),
    "inequality equals interval": ("-2 \\le x < 5", "[-2, 5)", True),
    "inequality vs wrong interval": ("x < 2", "(-\\infty, 2]", False),
    "matrix equal": ("\\begin{pmatrix}1\\\\-2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", True),
    "matrix near miss": ("\\begin{pmatrix}-2\\\\1\\end{pmatrix}", "\\begin{pmatrix}1\\\\-2\\end{pmatrix}", False),
    "tuple with radicals": ("(\\frac{1}{\\sqrt{2}}, 1)", "(\\frac{\\sqrt{2}}{2}, 1)", True),
    "set with expressions": ("\\{\\sqrt{4}, 1\\}", "\\{1, 2\\}", True),
    "symbol letters": ("B", "C", False),
}


def outcome(pred, ref):
    try:
        return decide(pred, ref)
    except Undecided:
        return "undecided"


@pytest.mark.parametrize("name", PURE)
def test_pure_rules(name):
    pred, ref, expected = PURE[name]
    assert outcome(pred, ref) is expected
    assert judge(pred, ref) == (expected, "match" if expected else "mismatch")


@pytest.mark.parametrize("name", SYMBOLIC)
def test_symbolic_rules(name):
    pred, ref, expected = SYMBOLIC[name]
    assert judge(pred, ref) == (expected, "match" if expected else "mismatch")


@pytest.mark.parametrize("name", ["radical near miss", "polynomial expansion", "euler identity"])
def test_symbolic_pairs_are_undecided_by_the_pure_rules(name):
    pred, ref, _ = SYMBOLIC[name]
    assert outcome(pred, ref) == "undecided"


BLOCKED = {
    "power tower": ("9^{9^{9^{9}}}", "power-tower"),
    "too many digits": ("1" * 101, "too-many-digits"),
    "too long": ("x+" * 600 + "1", "too-long"),
    "too deep": ("(" * 30 + "1" + ")" * 30, "too-deep"),
    "huge exponent of ten": ("1e999", "exponent-too-large"),
}


@pytest.mark.parametrize("name", BLOCKED)
def test_bounds_block_before_sympy(name):
    text, reason = BLOCKED[name]
    with pytest.raises(Blocked) as caught:
        decide(text, "1")
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "text, reason",
    [
        ("10^{10^{10}}", "blocked:exponent-too-large"),
        ("10^{10^{10}}!", "blocked:factorial-too-large"),
        ("2^{99999}", "blocked:exponent-too-large"),
        ("(x+1)^{9999}", "blocked:number-too-large"),
        ("\\frac{1}{0}", "undefined"),
        ("\\frac{0}{0}", "undefined"),
        ("\\foo{", "parse-error"),
    ],
)
def test_symbolic_bounds_and_failures_are_unparseable(text, reason):
    assert judge(text, "5") == (None, reason)


def test_normalise_is_idempotent_on_examples():
    for pred, ref, _ in list(PURE.values()) + list(SYMBOLIC.values()):
        for text in (pred, ref):
            once = normalise(text)
            assert normalise(once) == once


def test_number_parsing_keeps_places_and_percent():
    assert parse_number("0.250").places == 3
    assert parse_number("25%").percent
    assert parse_number("abc") is None
