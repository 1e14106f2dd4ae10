"""The decisions of the synthesize stage, as pure functions: prompts, which teacher solutions are
kept (graded correct or agreeing with the majority, de-duplicated, at most m), the majority label
of a new problem, its n-gram overlap with held-out questions, and D_syn from the stage's records.

A stage record is one unit (a training question, or one new-problem slot) with the solutions kept
for it and its counts; D_syn is derived from all of them once every shard is done.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from negrl_operator.api.teacher import FewShotExample, SynthesisParams

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_PROBLEM_END = re.compile(r"\n\s*\n|\n\s*(?:answer|solution)\s*:", re.IGNORECASE)


def normalised(text: str) -> str:
    """What makes two texts the same for de-duplication: case and whitespace do not count."""
    return _SPACE.sub(" ", text).strip().lower()


def render_examples(examples: list[FewShotExample], example_format: str, rotate: int = 0) -> str:
    """The examples, each in `example_format`, starting at index `rotate` (wrapping around)."""
    if not examples:
        return ""
    start = rotate % len(examples)
    ordered = examples[start:] + examples[:start]
    return "".join(example_format.replace("{question}", e.question).replace("{solution}", e.solution)
                   for e in ordered)


def solution_prompt(params: SynthesisParams, question: str) -> str:
    examples = render_examples(params.examples, params.example_format)
    return params.solution_template.replace("{examples}", examples).replace("{question}", question)


def problem_prompt(params: SynthesisParams, slot: int) -> str:
    """Slot `slot`'s request for a new problem: the seed problems rotated by the slot, so prompts differ."""
    examples = render_examples(params.examples, params.example_format, rotate=slot)
    return params.problem_template.replace("{examples}", examples)


def problem_text(output: str) -> str | None:
    """The new problem in a teacher's answer: its first paragraph (cut at a blank line or an
    `Answer:`/`Solution:` line), stripped; None when nothing is left."""
    text = _PROBLEM_END.split(output, maxsplit=1)[0].strip()
    return text or None


@dataclass(frozen=True)
class Selection:
    kept: list[str]
    rejected: int    # graded wrong/unparseable, or disagreeing with the majority
    duplicates: int  # right, but the same text (normalised) as one seen before
    surplus: int     # right and new, but m were already kept


def select_solutions(texts: list[str], accepted: list[bool], keep: int) -> Selection:
    """Up to `keep` accepted, de-duplicated solutions, in the order the teacher wrote them (stripped)."""
    kept, seen, rejected, duplicates, surplus = [], set(), 0, 0, 0
    for text, ok in zip(texts, accepted, strict=True):
        key = normalised(text)
        if not ok or not key:
            rejected += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            if len(kept) >= keep:
                surplus += 1
            else:
                kept.append(text.strip())
    return Selection(kept, rejected, duplicates, surplus)


def majority(answers: list[str | None]) -> tuple[str | None, float]:
    """The most frequent extracted answer (the first seen among ties) and the fraction of all K
    answers that give it (unparseable ones count against it)."""
    votes = Counter(answer for answer in answers if answer is not None)
    if not votes:
        return None, 0.0
    best = max(votes.values())
    label = next(answer for answer in answers if answer is not None and votes[answer] == best)
    return label, best / len(answers)


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text shorter than n words is one gram of all its words."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class HeldoutIndex:
    """The n-grams of the test and validation questions, for `overlap`."""

    def __init__(self, questions: Iterable[str], n: int):
        self.n = n
        self.owners: dict[tuple[str, ...], set[int]] = {}
        for position, question in enumerate(questions):
            for gram in word_ngrams(question, n):
                self.owners.setdefault(gram, set()).add(position)

    def overlap(self, text: str) -> float:
        """Largest fraction of `text`'s n-grams that one held-out question contains (0 with no grams)."""
        grams = word_ngrams(text, self.n)
        if not grams:
            return 0.0
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(self.owners.get(gram, ()))
        return max(shared.values(), default=0) / len(grams)


COUNTS = ("units", "requests", "prompt_tokens", "generated_tokens", "generated", "accepted", "line_errors", "kept",
          "rejected", "duplicates", "surplus", "contaminated", "disagreed", "empty")


def unit_counts(records: list[dict]) -> dict[str, int]:
    """The additive counts of a shard's records (summed over shards into the manifest)."""
    totals = {key: 0 for key in COUNTS}
    for record in records:
        totals["units"] += 1
        for key in COUNTS[1:]:
            totals[key] += int(record.get(key, 0))
    return totals


def rates(totals: dict) -> dict[str, float]:
    """Acceptance rate (graded correct or agreeing / generated), tokens/s of this run, cost in tokens."""
    generated, seconds = totals.get("generated", 0), totals.get("run_seconds", 0)
    return {
        "acceptance_rate": round(totals.get("accepted", 0) / generated, 4) if generated else 0.0,
        "tokens_per_s": round(totals.get("run_generated_tokens", 0) / seconds, 2) if seconds else 0.0,
        "cost_tokens": totals.get("prompt_tokens", 0) + totals.get("generated_tokens", 0),
    }


def dsyn(records: Iterable[dict]) -> tuple[list[dict], int]:
    """D_syn question records {id, question, answer, solution}, in unit order, and how many new
    problems were dropped as duplicates of an earlier one (problems mode; normalised text)."""
    questions, seen, duplicate_problems = [], set(), 0
    for record in sorted(records, key=lambda r: r["order"]):
        if not record["solutions"]:
            continue
        if record["mode"] == "problems":
            key = normalised(record["question"])
            if key in seen:
                duplicate_problems += 1
                continue
            seen.add(key)
        questions += [{"id": f"{record['question_id']}-t{index}", "question": record["question"],
                       "answer": record["answer"], "solution": solution}
                      for index, solution in enumerate(record["solutions"])]
    return questions, duplicate_problems
