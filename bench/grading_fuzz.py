"""Fuzz the grader with hypothesis: zero crashes and zero hangs over many generated inputs.

    .venv/bin/python bench/grading_fuzz.py [--examples 100000] [--seed 0]

Inputs mix LaTeX token soup (fractions, roots, powers, braces, relations, sets, matrices, big
numbers), GSM8K-style sentences, injection-like Python snippets and arbitrary Unicode (NUL bytes and
lone surrogates included), wrapped in answer markers (``\\boxed{}``, ``####``, "The answer is",
"Path:") or not, against generated references and every task type. A crash is any exception out of
``Grader.grade``; a hang is one call longer than the deadline plus ``SLACK_S``. Each call's result
must also be a Grade whose ``correct`` is True/False/None. The last line is ``name=value`` pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from negrl_sampler.grading.grader import Grade, Grader

DEADLINE_S = 2.0
SLACK_S = 3.0
TOKENS = [
    "0", "1", "2", "7", "9", "10", "12", "100", "3.5", ".5", "1,000", "99999999999", "-", "+", "*", "/",
    "^", "_", "!", "=", "<", ">", "(", ")", "[", "]", "{", "}", "\\{", "\\}", "|", ",", ";", " ", "%",
    "\\%", "$", "\\$", "x", "y", "i", "e", "a", "\\frac", "\\dfrac", "\\sqrt", "\\pi", "\\infty", "\\cdot",
    "\\times", "\\left(", "\\right)", "\\text{cm}", "\\mbox{ dollars}", "^\\circ", "\\le", "\\ge", "\\cup",
    "\\in", "\\sin", "\\log", "\\ln", "\\binom", "\\det", "\\sum", "\\int", "\\lim", "\\begin{pmatrix}",
    "\\end{pmatrix}", "&", "\\\\", "\\!", "\\,", "\\boxed{", "\\fbox{", "####", "->", "e3", "10^{",
    "9^{9^{", "\\mathbb{R}", "\\emptyset", "\\pm", "\\text{", "\x00", "\u2212", "\u03c0", "\u221a",
]
SNIPPETS = [
    "__import__('os').system('true')", "().__class__.__bases__", "lambda: 0", "eval('1')",
    "exec('x=1')", "open('/etc/passwd').read()", "globals()", "sympify('x')", "${{}}$", "\\input{/etc/passwd}",
]
MARKERS = ["\\boxed{{{}}}", "$\\boxed{{{}}}$", "#### {}", "The answer is {}.", "Final Answer: The final answer is ${}$.",
           "Path: {}", "{}", "so we get {} dollars", "\\fbox{{{}}}"]


def soup():
    return st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def answer_text():
    return st.one_of(
        soup(),
        st.text(max_size=60),
        st.sampled_from(SNIPPETS),
        st.integers(min_value=-(10**120), max_value=10**120).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.lists(st.integers(0, 99), min_size=1, max_size=8).map(lambda xs: " -> ".join(map(str, xs))),
    )


def response_text():
    wrapped = st.tuples(st.text(max_size=80), st.sampled_from(MARKERS), answer_text()).map(
        lambda t: t[0] + "\n" + t[1].format(t[2]))
    return st.one_of(wrapped, answer_text(), st.text(max_size=300))


def reference_text():
    fixed = st.sampled_from(["18", "1,000", "\\frac{1}{2}", "3\\sqrt{2}", "(1,2)", "[0,1)", "x^2+1", "3 17 42 8",
                             "Solution.\n#### 72", "\\text{Monday}", "50\\%", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"])
    return st.one_of(fixed, answer_text())


def run(examples: int, fuzz_seed: int) -> dict[str, float]:
    stats: Counter[str] = Counter()
    slowest = [0.0]
    with Grader(workers=2, deadline_s=DEADLINE_S) as grader:

        @seed(fuzz_seed)
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(response_text(), reference_text(), st.sampled_from([None, "gsm8k", "math", "sequence"]))
        def fuzz(response, reference, task):
            start = time.monotonic()
            try:
                result = grader.grade(response, reference, task)
            except Exception as exc:  # a crash: count it and show it, keep fuzzing
                stats["crashes"] += 1
                print(f"CRASH {type(exc).__name__}: {exc!r} on {response[:200]!r} / {reference[:80]!r}", file=sys.stderr)
                return
            elapsed = time.monotonic() - start
            slowest[0] = max(slowest[0], elapsed)
            stats["inputs"] += 1
            stats[result.reason.split(":")[0]] += 1
            if not isinstance(result, Grade) or result.correct not in (True, False, None):
                stats["crashes"] += 1
            if elapsed > DEADLINE_S + SLACK_S:
                stats["hangs"] += 1
                print(f"HANG {elapsed:.1f}s on {response[:200]!r}", file=sys.stderr)

        start = time.monotonic()
        fuzz()
        seconds = time.monotonic() - start
        counters = grader.counters
    return {
        "fuzz_inputs": stats["inputs"] + stats["crashes"], "crashes": stats["crashes"], "hangs": stats["hangs"],
        "timeouts": counters["timeouts"], "worker_restarts": counters["worker_restarts"],
        "symbolic": counters["symbolic"], "blocked": stats["blocked"], "parse_errors": stats["parse-error"],
        "max_ms": slowest[0] * 1000, "per_s": (stats["inputs"] + stats["crashes"]) / seconds,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = run(args.examples, args.seed)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return 0 if figures["crashes"] == 0 and figures["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
