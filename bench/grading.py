"""Grading benchmark: throughput, latency and accuracy next to Math-Verify, in one run.

    .venv/bin/python bench/grading.py [--quick]

- gsm8k_per_s: GSM8K-style responses built from /work/shared/datasets/gsm8k test solutions (four
  answer formats, right and wrong), graded in this process on one core (fast path: no sympy, no
  worker; ``gsm8k_symbolic`` counts items that needed a worker and should be 0).
- math_per_s: MATH-style responses with freshly generated numbers (fractions, radicals, multiples
  of pi, polynomials, tuples, intervals, complex numbers, integers; equivalent forms and near
  misses), graded in batches with 2 workers.
- p50_ms / p99_ms: one ``Grader.grade`` call at a time over a mix of both (no adversarial input).
- accuracy / mathverify_accuracy: the labelled set tests/data/grading_cases.jsonl without its
  star-graph sequence cases (Math-Verify does not grade sequences); ``*_all``: every case.
  Math-Verify gets the bare reference answer wrapped in ``$...$`` and the full response.
  Every case where the two disagree is printed with the label.
- mathverify_*_per_s: Math-Verify (parse + verify) on subsets of the same batches, one core.
The last line is ``name=value`` pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

from negrl_sampler.grading.answer import reference_answer
from negrl_sampler.grading.grader import Grader

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = Path("/work/shared/datasets/gsm8k/test.jsonl")
CASES = ROOT / "tests" / "data" / "grading_cases.jsonl"
TEMPLATES = [
    "We simplify step by step.\nPutting everything together, the answer is $\\boxed{{{}}}$.",
    "Solving gives the result.\nFinal Answer: The final answer is ${}$. I hope it is correct.",
    "First $a = 3$ and $b = 4$, so $c = 5$.\nHence\n$$\\boxed{{{}}}$$",
    "Collecting terms we find that the value is \\boxed{{{}}}.",
]


def gsm8k_items(limit: int) -> list[tuple[str, str, None]]:
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:limit]]
    items = []
    for k, row in enumerate(rows):
        solution = row["answer"]
        final = solution.split("####")[-1].strip()
        body = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
        wrong = str(int(final.replace(",", "")) + 1) if final.lstrip("-").isdigit() else final + "1"
        shown = final if k % 2 else wrong
        formats = [
            f"{body}\n#### {shown}",
            f"{body}\nThe answer is ${shown}.",
            f"{body}\nSo in total it is {shown} dollars.",
            f"{body}\nTherefore the answer is $\\boxed{{{shown}}}$.",
        ]
        items += [(response, solution if j % 2 else final, None) for j, response in enumerate(formats)]
    return items


def math_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 97), rng.randint(2, 97)
    kind = rng.randrange(8)
    if kind == 0:
        f = Fraction(a, b)
        good = [f"\\frac{{{2 * f.numerator}}}{{{2 * f.denominator}}}", f"{f.numerator}/{f.denominator}"]
        return f"\\frac{{{f.numerator}}}{{{f.denominator}}}", rng.choice(good + [f"\\frac{{{b}}}{{{a + 1}}}"])
    if kind == 1:
        b = rng.choice([2, 3, 5, 6, 7, 10, 11, 13])
        return f"{a}\\sqrt{{{b}}}", rng.choice([f"\\sqrt{{{a * a * b}}}", f"{a}\\sqrt{{{b + 1}}}"])
    if kind == 2:
        return f"\\frac{{{a}\\pi}}{{{b}}}", rng.choice([f"\\frac{{{a}}}{{{b}}}\\pi", f"\\frac{{{a}\\pi}}{{{b + 1}}}"])
    if kind == 3:
        ref = f"x^2+{a + b}x+{a * b}"
        return ref, rng.choice([f"(x+{a})(x+{b})", f"(x+{a})(x-{b})", ref])
    if kind == 4:
        return f"({a}, {b})", rng.choice([f"({a},{b})", f"({b},{a})"])
    if kind == 5:
        return f"[{a}, {a + b})", rng.choice([f"[{a},{a + b})", f"({a},{a + b})"])
    if kind == 6:
        return f"{a}+{b}i", rng.choice([f"{b}i+{a}", f"{a}-{b}i"])
    return str(a * b), rng.choice([str(a * b), str(a * b + 1)])


def math_items(count: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        reference, prediction = math_pair(rng)
        items.append((rng.choice(TEMPLATES).format(prediction), reference, "math"))
    return items


def throughput(grader: Grader, items: list, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        grader.grade_many(items[i:i + batch])
    return len(items) / (time.perf_counter() - start)


def latencies_ms(grader: Grader, items: list) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        grader.grade(*item)
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def mathverify_correct(response: str, reference: str) -> bool:
    from math_verify import parse, verify

    try:
        gold = parse(f"${reference_answer(reference)}$")
        return bool(verify(gold, parse(response)))
    except Exception:  # Math-Verify's own failures count as "not correct"
        return False


def mathverify_per_s(items: list) -> float:
    start = time.perf_counter()
    for response, reference, _ in items:
        mathverify_correct(response, reference)
    return len(items) / (time.perf_counter() - start)


def accuracy_report(grader: Grader) -> dict[str, float]:
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    grades = grader.grade_many([(c["response"], c["answer"], c.get("task")) for c in cases])
    ours = [(g.correct is True) for g in grades]
    theirs = [mathverify_correct(c["response"], c["answer"]) for c in cases]
    print(f"\nNegRL vs Math-Verify disagreements on {len(cases)} labelled cases:")
    for c, o, t, g in zip(cases, ours, theirs, grades, strict=True):
        if o != t:
            who = "NegRL" if o == c["truth"] else "Math-Verify"
            print(f"  {c['id']} {c['kind']}: truth={c['truth']} negrl={o} mathverify={t} -> {who} right;"
                  f" answer={reference_answer(c['answer'])!r} extracted={g.extracted!r}")
    mask = [not c["kind"].startswith("sequence") for c in cases]

    def acc(pred: list[bool], only: list[bool] | None = None) -> float:
        rows = [(p, c["truth"]) for p, c, m in zip(pred, cases, only or [True] * len(cases), strict=True) if m]
        return sum(p == t for p, t in rows) / len(rows)

    return {
        "accuracy": acc(ours, mask), "mathverify_accuracy": acc(theirs, mask),
        "accuracy_all": acc(ours), "mathverify_accuracy_all": acc(theirs),
        "cases": sum(mask), "cases_all": len(cases), "disagreements": sum(o != t for o, t in zip(ours, theirs, strict=True)),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    args = parser.parse_args(argv)
    scale = 4 if args.quick else 1
    gsm8k = gsm8k_items(1319 // scale)
    maths = math_items(4000 // scale, seed=1)
    figures: dict[str, float] = {}
    with Grader(workers=2, deadline_s=2.0) as grader:
        grader.grade_many(math_items(64, seed=99))  # start the workers
        before = grader.counters["symbolic"]
        figures["gsm8k_per_s"] = throughput(grader, gsm8k, 512)
        figures["gsm8k_symbolic"] = grader.counters["symbolic"] - before
        before = grader.counters["symbolic"]
        figures["math_per_s"] = throughput(grader, maths, 256)
        figures["math_symbolic_share"] = (grader.counters["symbolic"] - before) / len(maths)
        mixed = math_items(300, seed=2) + random.Random(3).sample(gsm8k, 300)
        random.Random(4).shuffle(mixed)
        lat = latencies_ms(grader, mixed)
        figures["p50_ms"] = statistics.median(lat)
        figures["p99_ms"] = lat[int(0.99 * (len(lat) - 1))]
        figures.update(accuracy_report(grader))
        figures["timeouts"] = grader.counters["timeouts"]
    figures["mathverify_gsm8k_per_s"] = mathverify_per_s(gsm8k[: 800 // scale])
    figures["mathverify_math_per_s"] = mathverify_per_s(maths[: 400 // scale])
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
