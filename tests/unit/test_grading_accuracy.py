"""The labelled accuracy set (tests/data/grading_cases.jsonl): every case must grade as labelled.

Cases: GSM8K-style responses built from /work/shared/datasets/gsm8k test answers (correct answers
in several formats, wrong finals, intermediate numbers, near misses), hand-written MATH-style
answers with equivalent forms and near misses, and star-graph paths. ``truth`` says whether the
response's final answer is correct; a grade counts as "correct" only when ``correct`` is True.
bench/grading.py reports the same set next to Math-Verify."""

import json
from collections import Counter
from pathlib import Path

import pytest

from negrl_sampler.grading.grader import Grader

CASES_PATH = Path(__file__).resolve().parents[1] / "data" / "grading_cases.jsonl"


def load_cases() -> list[dict]:
    with CASES_PATH.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def graded():
    cases = load_cases()
    with Grader(workers=2) as grader:
        grades = grader.grade_many([(c["response"], c["answer"], c.get("task")) for c in cases])
    return cases, grades


def test_the_set_is_large_and_balanced():
    cases = load_cases()
    families = Counter(c["kind"].split(":")[0] for c in cases)
    assert len(cases) >= 400
    assert families["gsm8k"] >= 150 and families["math"] >= 150 and families["sequence"] >= 20
    truths = Counter(c["truth"] for c in cases)
    assert truths[True] >= 150 and truths[False] >= 150
    assert len({c["id"] for c in cases}) == len(cases)


def test_every_case_grades_as_labelled(graded):
    cases, grades = graded
    wrong = [
        f'{c["id"]} {c["kind"]}: truth={c["truth"]} got={g.correct} ({g.reason}, {g.extracted!r})'
        for c, g in zip(cases, grades, strict=True)
        if (g.correct is True) != c["truth"]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_case_times_out(graded):
    _, grades = graded
    assert not [g for g in grades if g.reason == "timeout"]
