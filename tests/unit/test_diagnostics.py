"""Regime diagnostics from stored records, worked out by hand."""

import pytest

from negrl_operator.report.comparison import CurveRise
from negrl_operator.report.diagnostics import (
    NO_SFT,
    NO_TRAIN,
    MoveAccuracy,
    SeedRegime,
    arithmetic_gates,
    both_answers,
    credit_cost,
    first_move_correct,
    gate_markdown,
    gates,
    markdown,
    move_accuracy,
    pit_census,
)
from negrl_operator.report.training import Collapse


@pytest.mark.parametrize(("response", "answer", "correct"), [
    ("3 17 4", "3 17 4", True), ("3 17 9", "3 17 4", True),   # right first move, wrong later
    ("3 9 21", "3 17 4", False), ("3", "3 17 4", False), ("", "3 17 4", False),
    (" 3  17 4 ", "3 17 4", True), ("3 17", "3", False),     # an answer without a move
])
def test_first_move_correct(response, answer, correct):
    assert first_move_correct(response, answer) is correct


def evaluation(qid, response, correct):
    return {"question_id": qid, "greedy_response": response, "greedy_correct": correct}


def test_move_accuracy_counts_first_moves_and_accuracy_after_them():
    answers = {"a": "1 2 3", "b": "4 5 6", "c": "7 8 9", "d": "1 5 9"}
    records = [evaluation("a", "1 2 3", True), evaluation("b", "4 5 0", False),  # right move, then wrong
               evaluation("c", "7 0 9", False), evaluation("d", "1 5 9", True),
               evaluation("zz", "1 2", True)]                                     # not in the split: ignored
    got = move_accuracy(records, answers)
    assert got == MoveAccuracy(accuracy=0.5, first_move=0.75, given_first_move=pytest.approx(2 / 3), questions=4)
    assert move_accuracy([evaluation("c", "7 0 9", None)], answers).given_first_move is None
    assert move_accuracy([], answers) == MoveAccuracy(0.0, 0.0, None, 0)


def credit(pit, steps=4, finished=True, rollouts=5, tokens=20):
    return {"pit": pit, "steps": ["s"] * steps, "finished": finished, "rollouts": rollouts, "generated_tokens": tokens}


def test_pit_census_and_credit_cost():
    records = [credit(1), credit(1), credit(2), credit(None), credit(4),      # pit 4 = L, finished: usable
               credit(4, finished=False), credit(2, finished=False, rollouts=7, tokens=10)]
    got = pit_census(records)
    assert got == {"negatives": 7, "usable_pit": 5, "usable_pit_share": 5 / 7, "no_pit": 1, "pit_at_end": 1,
                   "pit_histogram": {"1": 2, "2": 2, "4": 1}}
    assert credit_cost(records) == {"negatives": 7, "rollouts_per_negative": 37 / 7, "tokens_per_negative": 130 / 7}
    assert pit_census([])["usable_pit_share"] == 0.0 and credit_cost([])["rollouts_per_negative"] == 0.0


def test_gates_pass_and_fail_at_their_thresholds():
    test = [MoveAccuracy(0.45, 0.48, 0.95, 100), MoveAccuracy(0.55, 0.56, 0.97, 100)]  # means .5, .52, .96
    train = [MoveAccuracy(0.58, 0.6, 0.97, 50), MoveAccuracy(0.62, 0.6, 0.97, 50)]    # gap .6 - .5 = .1
    census = [{"usable_pit_share": 0.4}, {"usable_pit_share": 0.6}]
    got = {g["gate"].split(":")[0]: (g["value"], g["pass"]) for g in gates(2, test, train, census)}
    assert got == {"edge-following": (0.96, True), "first move near chance": (0.52, True),
                   "no memorisation": (0.1, True), "negatives with a usable pit": (0.5, True)}
    failing = gates(3, [MoveAccuracy(0.5, 0.6, 0.8, 10)], [MoveAccuracy(0.9, 0.9, 1.0, 10)], [])
    assert [(g["value"], g["pass"]) for g in failing] == [(0.8, False), (0.6, False), (0.4, False), (None, False)]
    assert gates(None, [], [], [])[0]["pass"] is False  # nothing measured passes nothing


def test_markdown_prints_every_seed_and_gate():
    text = markdown([{"seed": 0, "test_accuracy": 0.5}], gates(2, [MoveAccuracy(0.5, 0.5, 1.0, 4)], [], []))
    assert "| 0 | 0.5 | - |" in text
    assert "| first move near chance | 0.5 | 1/2 ± 0.07 | PASS |" in text
    assert "| no memorisation: train - held-out accuracy | None | <= 0.1 | FAIL |" in text


def sample(qid, correct):
    return {"question_id": qid, "grade": {"correct": correct}}


def test_both_answers_counts_questions_with_a_correct_and_a_not_correct_sample():
    samples = [sample("a", True), sample("a", False), sample("b", True), sample("b", True),
               sample("c", False), sample("c", None), sample("d", None), sample("d", True)]  # unparseable: wrong
    assert both_answers(samples) == (2, 4)
    assert both_answers([]) == (0, 0)


def results(rows, gate):
    """{seed: (value, result)} of one gate's rows."""
    return {row["seed"]: (row["value"], row["result"]) for row in rows if row["gate"].startswith(gate)}


def regime(seed, sft=0.3, train=0.35, both=(5, 10), pits=(9, 10)):
    return SeedRegime(seed, sft, train, both, pits)


@pytest.mark.parametrize(("rise", "value", "result"), [
    (CurveRise(8, 0.2, (0.01, 0.4)), 0.2, "PASS"),               # exactly 0.2, interval above 0
    (CurveRise(8, 0.7 - 0.5, (0.01, 0.4)), 0.2, "PASS"),         # 0.19999999999999996: a rounding error
    (CurveRise(8, 0.199, (0.01, 0.4)), 0.199, "FAIL"),
    (CurveRise(8, 0.3, (0.0, 0.6)), 0.3, "FAIL"),                # interval touches 0: not a rise
    (None, None, "n/a"),                                         # no sweep point beyond n
])
def test_rise_gate(rise, value, result):
    rows = arithmetic_gates(rise, [regime(0)], None)
    assert results(rows, "SFT rises") == {"all": (value, result)}


@pytest.mark.parametrize(("accuracies", "expected"), [
    ((0.15, 0.6), {0: (0.15, "PASS"), 1: (0.6, "PASS"), "all": (0.375, "PASS")}),   # both ends included
    ((0.149, 0.601), {0: (0.149, "FAIL"), 1: (0.601, "FAIL"), "all": (0.375, "PASS")}),
    ((0.1, None), {0: (0.1, "FAIL"), 1: (None, "n/a"), "all": (None, "n/a")}),
])
def test_sft_at_n_gate_per_seed_and_pooled(accuracies, expected):
    rows = arithmetic_gates(None, [regime(seed, sft=a) for seed, a in enumerate(accuracies)], None)
    assert results(rows, "SFT at n held-out accuracy") == expected


def test_both_answers_gate_pools_the_counts():
    rows = arithmetic_gates(None, [regime(0, both=(4, 10)), regime(1, both=(39, 100))], None)
    assert results(rows, "sampled questions") == {0: (0.4, "PASS"), 1: (0.39, "FAIL"), "all": (0.391, "FAIL")}
    missing = arithmetic_gates(None, [regime(0, both=None), regime(1, both=(0, 0))], None)
    reasons = {row["seed"]: row["reason"] for row in missing if row["gate"].startswith("sampled questions")}
    assert reasons == {0: "no sample stage", 1: "no sampled question", "all": "no input for seed 0, seed 1"}


def test_pit_precision_gate():
    rows = arithmetic_gates(None, [regime(0, pits=(4, 5)), regime(1, pits=(3, 4))], None)
    assert results(rows, "pit precision") == {0: (0.8, "PASS"), 1: (0.75, "FAIL"), "all": (0.778, "FAIL")}
    assert results(arithmetic_gates(None, [regime(0, pits=(0, 3))], None), "pit precision")[0] == (0.0, "FAIL")
    missing = arithmetic_gates(None, [regime(0, pits=None), regime(1, pits=(0, 0))], None)
    reasons = {row["seed"]: (row["result"], row["pass"], row["reason"]) for row in missing
               if row["gate"].startswith("pit precision")}
    assert reasons == {0: ("n/a", False, "no credit stage"), 1: ("n/a", False, "no pit placed"),
                       "all": ("n/a", False, "no input for seed 0, seed 1")}


def test_memorisation_gate_per_seed():
    rows = arithmetic_gates(None, [regime(0, sft=0.6, train=0.7), regime(1, sft=0.6, train=0.71)], None)
    assert results(rows, "no memorisation") == {0: (0.1, "PASS"), 1: (0.11, "FAIL"), "all": (0.105, "FAIL")}
    missing = arithmetic_gates(None, [regime(0, train=None), regime(1, sft=None)], None)
    reasons = {row["seed"]: row["reason"] for row in missing if row["gate"].startswith("no memorisation")}
    assert reasons == {0: NO_TRAIN, 1: NO_SFT, "all": "no input for seed 0, seed 1"}


def check(stage, end):
    return Collapse(stage, chosen_start=-10.0, chosen_end=end, rejected_start=None, rejected_end=None, threshold=5.0)


@pytest.mark.parametrize(("collapses", "value", "result", "flagged"), [
    (None, None, "n/a", None), ([], None, "n/a", None),
    ([check("step-dpo-s0", -14.0), check("outcome-dpo-s0", -15.0)], 0, "PASS", []),   # drops of 4 and 5 nats
    ([check("step-dpo-s0", -15.1), check("outcome-dpo-s0", -12.0)], 1, "FAIL", ["step-dpo-s0"]),
])
def test_collapse_gate(collapses, value, result, flagged):
    row = next(r for r in arithmetic_gates(None, [regime(0)], collapses) if r["gate"] == "no DPO collapse flag")
    assert (row["value"], row["result"], row.get("flagged")) == (value, result, flagged)


def test_arithmetic_gates_without_seeds_are_n_a_and_the_table_prints_every_row():
    rows = arithmetic_gates(CurveRise(4, 0.25, (0.05, 0.45)), [], [check("step-dpo", -16.0)])
    assert [(r["seed"], r["result"]) for r in rows] == [("all", "PASS"), ("all", "n/a"), ("all", "n/a"),
                                                        ("all", "n/a"), ("all", "n/a"), ("all", "FAIL")]
    text = gate_markdown(rows)
    assert "| SFT rises with data: SFT at the largest point - SFT at n | all | 0.25 [+0.050, +0.450] | " \
           ">= 0.2, interval above 0 | PASS |" in text
    assert "| pit precision (pit on the true first consequential error) | all | - | >= 0.8 | n/a (no seed) |" in text
    assert "| no DPO collapse flag | all | 1 (step-dpo) | 0 DPO stages flagged | FAIL |" in text
