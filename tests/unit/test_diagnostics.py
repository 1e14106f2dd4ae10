"""Regime diagnostics from stored records, worked out by hand."""

import pytest

from negrl_operator.report.diagnostics import (
    MoveAccuracy,
    credit_cost,
    first_move_correct,
    gates,
    markdown,
    move_accuracy,
    pit_census,
)


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
