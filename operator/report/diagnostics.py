"""Regime diagnostics of a run, from its stored outputs: is the run in the regime the paper's claim
is about? Pure functions over plain records (the report's shell reads them from the artifacts).

- first-move accuracy of pi_sft (sequence tasks: the answer's second token, the move after the
  source) and its accuracy given a correct first move (has it learned to follow edges?);
- pi_sft's accuracy on its own training questions vs test (memorisation);
- the share of scanned negatives with a usable pit, and a histogram of pit positions;
- pairs, optimizer steps and credit cost (rollouts and generated tokens per negative) per seed;
- the gates of the star-graph example, each with its value and PASS/FAIL;
- the gates of the arithmetic task (issue 20), per seed where every seed must pass and pooled, each
  PASS, FAIL or "n/a" with the reason its input is missing (never PASS without a measurement).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass

from negrl_operator.report.comparison import CurveRise
from negrl_operator.report.training import Collapse

FOLLOW_GATE = 0.9        # accuracy given a correct first move
CHANCE_TOLERANCE = 0.07  # |first-move accuracy - 1/degree|
MEMORISATION_GAP = 0.10  # train accuracy - test accuracy
USABLE_PIT_SHARE = 0.5   # negatives with a usable pit
RISE_GATE = 0.2          # arithmetic: SFT at the largest sweep point - SFT at n
SFT_AT_N_RANGE = (0.15, 0.6)  # arithmetic: SFT at n's held-out accuracy, both ends included
BOTH_ANSWERS_GATE = 0.4  # arithmetic: sampled questions with a correct and a wrong sample
PIT_PRECISION_GATE = 0.8  # arithmetic: pits on the true first consequential error line


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
            "pass": passed, "result": "PASS" if passed else "FAIL"}


def both_answers(samples: list[dict]) -> tuple[int, int]:
    """(sampled questions with a correct and a not-correct sample, sampled questions), from Sample
    records; not correct = wrong or unparseable, the credit stage's negatives."""
    kinds: dict[str, set[bool]] = defaultdict(set)
    for sample in samples:
        kinds[sample["question_id"]].add(sample["grade"]["correct"] is True)
    return sum(1 for seen in kinds.values() if len(seen) == 2), len(kinds)


@dataclass(frozen=True)
class SeedRegime:
    """One seed's inputs to the arithmetic gates; None: the stage that measures it did not run."""

    seed: int
    sft_accuracy: float | None            # SFT at n, held out
    train_accuracy: float | None          # SFT at n on its own training questions (eval-train)
    both_answers: tuple[int, int] | None  # (questions with both, sampled questions)
    pits: tuple[int, int] | None          # (pits on the true line, pits)


NO_SFT = "no held-out evaluation of SFT at n"
NO_TRAIN = "no eval-train stage (stages.eval.trainQuestions)"


def _per_seed(name: str, target: str, passes, seeds: list[SeedRegime], value_of, pooled_of) -> list[dict]:
    """A row per seed, then the pooled row (n/a unless every seed has its input)."""
    rows = []
    for seed in seeds:
        value, reason = value_of(seed)
        rows.append(_measured(name, seed.seed, value, target, passes, reason))
    missing = [f"seed {seed.seed}" for seed, row in zip(seeds, rows, strict=True) if row["result"] == "n/a"]
    if not seeds or missing:
        value, reason = None, f"no input for {', '.join(missing)}" if missing else "no seed"
    else:
        value, reason = pooled_of(seeds)
    rows.append(_measured(name, "all", value, target, passes, reason))
    return rows


def _measured(name: str, seed, value: float | None, target: str, passes, reason: str | None) -> dict:
    if value is None:
        return {"gate": name, "seed": seed, "value": None, "target": target, "pass": False, "result": "n/a",
                "reason": reason}
    # accuracies are fractions: 0.7 - 0.6 must meet "<= 0.1", not miss it by a rounding error
    return {**_gate(name, value, target, passes(round(value, 9))), "seed": seed, "reason": None}


def _ratio(pair: tuple[int, int] | None, missing: str, empty: str) -> tuple[float | None, str | None]:
    if pair is None:
        return None, missing
    return (pair[0] / pair[1], None) if pair[1] else (None, empty)


def _pooled_ratio(pairs: list[tuple[int, int]], empty: str) -> tuple[float | None, str | None]:
    """The ratio of the summed counts: every seed's question (or pit) weighs the same."""
    part, whole = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return (part / whole, None) if whole else (None, empty)


def arithmetic_gates(rise: CurveRise | None, seeds: list[SeedRegime], collapses: list[Collapse] | None) -> list[dict]:
    """The regime gates of the arithmetic task. `rise`: the SFT curve's CurveRise (None without a sweep
    point beyond n); `collapses`: the DPO stages' collapse checks (None or []: no DPO training log)."""
    low, high = SFT_AT_N_RANGE
    rows = [_rise_gate(rise)]
    rows += _per_seed("SFT at n held-out accuracy", f"{low} to {high}", lambda v: low <= v <= high, seeds,
                      lambda s: (s.sft_accuracy, NO_SFT),
                      lambda all_: (statistics.fmean(s.sft_accuracy for s in all_), None))
    rows += _per_seed("sampled questions with a correct and a wrong sample", f">= {BOTH_ANSWERS_GATE}",
                      lambda v: v >= BOTH_ANSWERS_GATE, seeds,
                      lambda s: _ratio(s.both_answers, "no sample stage", "no sampled question"),
                      lambda all_: _pooled_ratio([s.both_answers for s in all_], "no sampled question"))
    rows += _per_seed("pit precision (pit on the true first consequential error)", f">= {PIT_PRECISION_GATE}",
                      lambda v: v >= PIT_PRECISION_GATE, seeds,
                      lambda s: _ratio(s.pits, "no credit stage", "no pit placed"),
                      lambda all_: _pooled_ratio([s.pits for s in all_], "no pit placed"))
    rows += _per_seed("no memorisation: train - held-out accuracy", f"<= {MEMORISATION_GAP}",
                      lambda v: v <= MEMORISATION_GAP, seeds, _gap,
                      lambda all_: (statistics.fmean(s.train_accuracy for s in all_)
                                    - statistics.fmean(s.sft_accuracy for s in all_), None))
    rows.append(_collapse_gate(collapses))
    return rows


def _gap(seed: SeedRegime) -> tuple[float | None, str | None]:
    if seed.train_accuracy is None or seed.sft_accuracy is None:
        return None, NO_TRAIN if seed.train_accuracy is None else NO_SFT
    return seed.train_accuracy - seed.sft_accuracy, None


def _rise_gate(rise: CurveRise | None) -> dict:
    name, target = "SFT rises with data: SFT at the largest point - SFT at n", f">= {RISE_GATE}, interval above 0"
    if rise is None:
        return _measured(name, "all", None, target, None, "no SFT sweep point beyond n (sweep.sftMultipliers) "
                         "or no evaluation of SFT at n")
    row = _measured(name, "all", rise.difference, target, lambda v: v >= RISE_GATE and rise.rises, None)
    return {**row, "interval": [round(end, 3) for end in rise.difference_ci]}


def _collapse_gate(collapses: list[Collapse] | None) -> dict:
    name, target = "no DPO collapse flag", "0 DPO stages flagged"
    if not collapses:
        return _measured(name, "all", None, target, None, "no DPO training log")
    flagged = sorted(check.stage for check in collapses if check.collapsed)
    return {**_measured(name, "all", len(flagged), target, lambda v: v == 0, None), "flagged": flagged}


def gate_markdown(gate_rows: list[dict]) -> str:
    """The gates table with its seed column ("all": pooled over seeds); n/a rows say what is missing."""
    lines = ["| gate | seed | value | target | result |", "|---|---|---|---|---|"]
    for g in gate_rows:
        value = "-" if g["value"] is None else str(g["value"])
        if "interval" in g:
            value += " [{:+.3f}, {:+.3f}]".format(*g["interval"])
        if g.get("flagged"):
            value += f" ({', '.join(g['flagged'])})"
        result = f"n/a ({g['reason']})" if g["result"] == "n/a" else g["result"]
        lines.append(f"| {g['gate']} | {g['seed']} | {value} | {g['target']} | {result} |")
    return "\n".join(lines) + "\n"


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
    if gate_rows:
        lines += ["", "| gate | value | target | result |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {g['value']} | {g['target']} | {g['result']} |" for g in gate_rows]
    return "\n".join(lines) + "\n"
