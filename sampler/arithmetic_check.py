"""The line checker of the arithmetic task: which line of a model's answer is the true first error.

Definitions (positions are 1-based; the reference has one line per event, then the `####` line):

- The response's non-empty lines (split on "\\n", as the `line` step splitter does, so line i is
  credit step i when no short pieces are merged) are aligned positionally with the reference lines.
  Runs of whitespace inside a line count as one space.
- Each line is judged against the problem's TRUE state, never the response's own running values, so
  an error carried forward makes every later line about that person wrong too. An event line is
  `correct` iff it reads `T = a op b = c` with T the event's target, a the target's true count
  before the event, op the event's operator, b its operand (the constant, or the other person's true
  count at that moment) and c the true result. The `####` line is `correct` iff it reads `#### N`
  with N the true answer. An event line with the right target and the true result c whose working is
  off (another a, op or b) is a `slip`: it is an error, but the value it carries forward is right.
  A line of the other kind than its position expects (a `####` line where an event line should be,
  or the reverse), or with other numbers, is `wrong`; a line of neither shape is `unparseable`;
  positions the response does not reach are `missing`; lines past the `####` position are `extra`.
- `first_error`: the first position whose verdict is not `correct` (None if none).
- `consequential_lines`: the backward slice of the asked person's final count through the reference
  dependency graph (event j writes its target and reads its target and, for add-another, the other
  person), plus the `####` position, which always counts, as do `extra` lines past it (they may hold
  the `####` line the grader reads).
- `first_consequential_error`: the first position among those that is neither `correct` nor a
  `slip`: the first error the final answer depends on, since later lines read only a line's result.
  A wrong line about a person the asked one never depends on, or a slip, is an error but not
  consequential, and the answer can still be right (Monte-Carlo credit cannot see either: every
  continuation of it can still reach the right answer); a consequential error with a right answer is
  possible too (a wrong result, then a right `####`).
- `first_break` (apart from the verdicts, judged against the response's OWN values): the first line
  whose working does not follow from the lines above it, an event line whose count before is not the
  target's last written count (or its initial count) or whose arithmetic does not hold, a `####` line
  that is not the asked person's last written count, or a line of neither shape. A misread operand
  does not break the working (it is a mistake made honestly). A right answer after a consequential
  error either `cancel`s (the working holds throughout: a second mistake undid the first) or
  `repair`s (some later line writes a count its own working does not give).
- `answer_correct`: the grader's `arithmetic` extraction (the last line that starts with `####`, read
  as `#### N`, no fallbacks) is the true answer, so the checker and the grader agree by construction.
  When the answer is wrong, `first_consequential_error` is never None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from negrl_sampler.arithmetic import MAX_DIGITS, Event, Problem, apply_op, event_steps, parse_problem
from negrl_sampler.grading.answer import extract_arithmetic

VERDICTS = ("correct", "slip", "wrong", "unparseable", "missing", "extra")

_NUMBER = rf"([0-9]{{1,{MAX_DIGITS}}})"
_EVENT_LINE = re.compile(rf"(\S+) = {_NUMBER} ([-+*]) {_NUMBER} = {_NUMBER}")
_ANSWER_LINE = re.compile(rf"#### ?{_NUMBER}")


@dataclass(frozen=True)
class LineCheck:
    verdicts: tuple[str, ...]  # one per position, max(reference lines, response lines) of them
    consequential_lines: tuple[int, ...]
    first_error: int | None
    first_consequential_error: int | None
    answer_correct: bool


def consequential_lines(problem: Problem) -> tuple[int, ...]:
    """Positions of the event lines the asked person's final count depends on, then the `####` line."""
    needed = {problem.asked}
    lines = []
    for index in range(len(problem.events) - 1, -1, -1):
        event = problem.events[index]
        if event.target in needed:
            lines.append(index + 1)
            if event.other is not None:
                needed.add(event.other)
    return (*reversed(lines), len(problem.events) + 1)


def _event_verdict(line: str, event: Event, step: tuple[int, int, int]) -> str:
    match = _EVENT_LINE.fullmatch(line)
    if match is None:
        return "wrong" if _ANSWER_LINE.fullmatch(line) else "unparseable"
    target, before, op, operand, after = match.groups()
    if target != event.target or int(after) != step[2]:
        return "wrong"
    return "correct" if op == event.op and (int(before), int(operand)) == step[:2] else "slip"


def _answer_verdict(line: str, answer: int) -> str:
    match = _ANSWER_LINE.fullmatch(line)
    if match is None:
        return "wrong" if _EVENT_LINE.fullmatch(line) else "unparseable"
    return "correct" if int(match[1]) == answer else "wrong"


def _lines(response: str) -> list[str]:
    return [" ".join(line.split()) for line in response.split("\n") if line.strip()]


def check_response(problem: Problem, response: str) -> LineCheck:
    """Verdicts per line and the first (consequential) error; see the module docstring."""
    steps, counts = event_steps(problem)
    answer = counts[problem.asked]
    lines = _lines(response)
    answer_position = len(steps) + 1
    verdicts = []
    for index in range(max(answer_position, len(lines))):
        if index >= len(lines):
            verdicts.append("missing")
        elif index >= answer_position:
            verdicts.append("extra")
        elif index < len(steps):
            verdicts.append(_event_verdict(lines[index], problem.events[index], steps[index]))
        else:
            verdicts.append(_answer_verdict(lines[index], answer))
    consequential = consequential_lines(problem)
    errors = [index + 1 for index, verdict in enumerate(verdicts) if verdict != "correct"]
    answered = extract_arithmetic(response)
    return LineCheck(
        verdicts=tuple(verdicts),
        consequential_lines=consequential,
        first_error=errors[0] if errors else None,
        first_consequential_error=next((p for p in errors if verdicts[p - 1] != "slip"
                                        and (p in consequential or p > answer_position)), None),
        answer_correct=answered is not None and int(answered) == answer,
    )


def first_break(problem: Problem, response: str) -> int | None:
    """The first line (1-based, aligned as `check_response` aligns them) whose working does not follow
    from the response's own lines above it; None when all of it does (see the module docstring)."""
    written = dict(zip(problem.names, problem.initial, strict=True))
    lines = _lines(response)
    for index, line in enumerate(lines[:len(problem.events) + 1]):
        answer, event = _ANSWER_LINE.fullmatch(line), _EVENT_LINE.fullmatch(line)
        if answer:
            return None if int(answer[1]) == written[problem.asked] else index + 1
        if event is None or event[1] not in written:
            return index + 1
        target, before, op, operand, after = event.groups()
        if int(before) != written[target] or apply_op(op, int(before), int(operand)) != int(after):
            return index + 1
        written[target] = int(after)
    return min(len(lines), len(problem.events)) + 1  # no `####` line where one belongs


def recovery(problem: Problem, response: str, check: LineCheck | None = None) -> str | None:
    """How a right answer came back after a consequential error: `cancel` or `repair` (see the module
    docstring); None when the answer is wrong or no consequential error precedes it. `check`: the
    response's `check_response`, when the caller has it already."""
    check = check or check_response(problem, response)
    if not check.answer_correct or check.first_consequential_error is None:
        return None
    return "cancel" if first_break(problem, response) is None else "repair"


def solution_checks(question: str, response: str) -> bool:
    """Every line of `response` is right for the arithmetic `question`, the `#### N` line included
    (a verified solution: what a teacher's D_syn may hold)."""
    check = check_response(parse_problem(question), response)
    return check.answer_correct and check.first_error is None
