"""Regime diagnostics of a run, from its stored outputs: is the run in the regime the paper's claim
is about? Pure functions over plain records (the report's shell reads them from the artifacts).

- first-move accuracy of pi_sft (sequence tasks: the answer's second token, the move after the
  source) and its accuracy given a correct first move (has it learned to follow edges?);
- pi_sft's accuracy on its own training questions vs test (memorisation);
- the share of scanned negatives with a usable pit, and a histogram of pit positions;
- pairs, optimizer steps and credit cost (rollouts and generated tokens per negative) per seed;
- the gates of the default star-graph example, each with its value and PASS/FAIL.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

FOLLOW_GATE = 0.9        # accuracy given a correct first move
CHANCE_TOLERANCE = 0.07  # |first-move accuracy - 1/degree|
MEMORISATION_GAP = 0.10  # train accuracy - test accuracy
USABLE_PIT_SHARE = 0.5   # negatives with a usable pit


def first_move_correct(response: str, answer: str) -> bool:
    """The response starts with the answer's first two tokens (source, then the first move)."""
    reference, tokens = answer.split(), response.split()
    return len(reference) >= 2 and tokens[:2] == reference[:2]


@dataclass(frozen=True)
class MoveAccuracy:
    accuracy: float
    first_move: float
    given_first_move: float | None  # None: no correct first move at all
    questions: int


def move_accuracy(records: list[dict], answers: dict[str, str]) -> MoveAccuracy:
    """From EvalResult records (greedy responses) and the reference answers of their questions."""
    rows = [(first_move_correct(r["greedy_response"], answers[r["question_id"]]), r["greedy_correct"] is True)
            for r in records if r["question_id"] in answers]
    if not rows:
        return MoveAccuracy(0.0, 0.0, None, 0)
    after_first = [correct for first, correct in rows if first]
    return MoveAccuracy(
        accuracy=sum(correct for _, correct in rows) / len(rows),
        first_move=len(after_first) / len(rows),
        given_first_move=sum(after_first) / len(after_first) if after_first else None,
        questions=len(rows),
    )


def pit_census(credit_records: list[dict]) -> dict:
    """Negatives scanned, with a usable pit (a pit that makes a pair: not a pit-L cut by max_tokens),
    without a pit, and the histogram of pit positions (step -> count), relative to the steps."""
    usable = [r for r in credit_records if r["pit"] is not None
              and not (r["pit"] == len(r["steps"]) and not r.get("finished", True))]
    histogram = Counter(r["pit"] for r in usable)
    return {
        "negatives": len(credit_records),
        "usable_pit": len(usable),
        "usable_pit_share": len(usable) / len(credit_records) if credit_records else 0.0,
        "no_pit": sum(1 for r in credit_records if r["pit"] is None),
        "pit_at_end": sum(1 for r in usable if r["pit"] == len(r["steps"])),
        "pit_histogram": {str(step): histogram[step] for step in sorted(histogram)},
    }


def credit_cost(credit_records: list[dict]) -> dict:
    """Rollouts and generated tokens the credit stage spent per scanned negative."""
    count = len(credit_records)
    rollouts = sum(r["rollouts"] for r in credit_records)
    tokens = sum(r["generated_tokens"] for r in credit_records)
    return {"negatives": count, "rollouts_per_negative": rollouts / count if count else 0.0,
            "tokens_per_negative": tokens / count if count else 0.0}


def mean_of(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


def gates(degree: int | None, test: list[MoveAccuracy], train: list[MoveAccuracy], census: list[dict]) -> list[dict]:
    """The regime gates (issue 14), averaged over seeds: each {gate, value, target, pass}."""
    rows = []
    following = mean_of([m.given_first_move for m in test])
    rows.append(_gate("edge-following: accuracy given a correct first move", following, f">= {FOLLOW_GATE}",
                      following is not None and following >= FOLLOW_GATE))
    if degree:
        first = mean_of([m.first_move for m in test])
        rows.append(_gate("first move near chance", first, f"1/{degree} ± {CHANCE_TOLERANCE}",
                          first is not None and abs(first - 1 / degree) <= CHANCE_TOLERANCE))
    gap = None
    if train and test:
        gap = mean_of([m.accuracy for m in train]) - mean_of([m.accuracy for m in test])
    rows.append(_gate("no memorisation: train - held-out accuracy", gap, f"<= {MEMORISATION_GAP}",
                      gap is not None and gap <= MEMORISATION_GAP))
    share = mean_of([c["usable_pit_share"] for c in census])
    rows.append(_gate("negatives with a usable pit", share, f">= {USABLE_PIT_SHARE}",
                      share is not None and share >= USABLE_PIT_SHARE))
    return rows


def _gate(name: str, value: float | None, target: str, passed: bool) -> dict:
    return {"gate": name, "value": None if value is None else round(value, 3), "target": target,
            "pass": passed}


def markdown(seed_rows: list[dict], gate_rows: list[dict]) -> str:
    """The diagnostics section: one row per seed, then the gates."""
    lines = ["| seed | held-out acc | first move | acc given first move | train acc | negatives | usable pit "
             "| pit histogram | pairs (outcome/step) | DPO steps (outcome/step) | rollouts/neg | tokens/neg |",
             "|" + "---|" * 12]
    for row in seed_rows:
        lines.append("| " + " | ".join(str(row.get(column, "-")) for column in (
            "seed", "test_accuracy", "first_move", "given_first_move", "train_accuracy", "negatives",
            "usable_pit_share", "pit_histogram", "pairs", "dpo_steps", "rollouts_per_negative",
            "tokens_per_negative")) + " |")
    lines += ["", "| gate | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {g['gate']} | {g['value']} | {g['target']} | {'PASS' if g['pass'] else 'FAIL'} |"
              for g in gate_rows]
    return "\n".join(lines) + "\n"
