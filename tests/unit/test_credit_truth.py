"""Credit against the true first error of the arithmetic task, worked out by hand on one problem.

The problem (as in test_arithmetic): Ann is asked; Bob flows into Ann at line 3; Cid never flows
anywhere, so line 4 is off the answer's slice. Its reference lines:
    1 Ann = 5 + 4 = 9 / 2 Ann = 9 - 3 = 6 / 3 Ann = 6 + 7 = 13 / 4 Cid = 2 * 3 = 6 / 5 Bob = 7 * 2 = 14 / 6 #### 13
Six reference lines: a true error on lines 1-3 is early (first half), on lines 4-6 late.
"""

import pytest

from negrl_operator.report.credit_truth import (
    NegativeTruth,
    judge_negative,
    judge_records,
    line_count,
    markdown,
    pit_span,
    rft_line_errors,
    tally,
)
from negrl_operator.report.estimate import ReportError
from negrl_sampler.arithmetic import Event, Problem

PROBLEM = Problem(
    names=("Ann", "Bob", "Cid"), item="apples", initial=(5, 7, 2),
    events=(Event("Ann", "+", amount=4), Event("Ann", "-", amount=3), Event("Ann", "+", other="Bob"),
            Event("Cid", "*", amount=3), Event("Bob", "*", amount=2)),
    asked="Ann",
)
R1, R2, R3, R4, R5, R6 = ("Ann = 5 + 4 = 9", "Ann = 9 - 3 = 6", "Ann = 6 + 7 = 13", "Cid = 2 * 3 = 6",
                          "Bob = 7 * 2 = 14", "#### 13")
SLIP_2 = (R1, "Ann = 9 - 3 = 5", "Ann = 5 + 7 = 12", R4, R5, "#### 12")      # true first error: line 2
RECENT_3 = (R1, R2, "Ann = 6 + 6 = 12", R4, R5, "#### 12")                   # line 3 (most recent value)
ANSWER_6 = (R1, R2, R3, R4, R5, "#### 14")                                   # line 6 (only the answer)
OFF_SLICE_4 = (R1, R2, R3, "Cid = 2 * 3 = 5", R5, "#### 14")                 # line 4 wrong, not consequential: 6
RIGHT_BUT_WRONG_4 = (R1, R2, R3, "Cid = 2 * 3 = 5", R5, R6)                  # the answer is right: no true error


def record(lines, pit, qid="q0", rollouts=5, tokens=40):
    """A credit record with one step per line (minChars 0); the last line has no newline."""
    steps = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    return {"question_id": qid, "steps": steps, "pit": pit, "rollouts": rollouts, "generated_tokens": tokens}


@pytest.mark.parametrize(("text", "count"), [
    ("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("\n\na\n  \nb\n", 2), ("a\nb\n\n", 2),
])
def test_line_count_counts_non_empty_lines_as_the_checker_does(text, count):
    assert line_count(text) == count


@pytest.mark.parametrize(("steps", "pit", "span"), [
    (["L1\n", "L2\n", "L3"], 2, (2, 2)),                  # one line per step: step i is line i
    (["L1\n", "L2\n", "L3"], 3, (3, 3)),                  # the last line, without a newline
    (["L1\nL2\n", "L3\n"], 1, (1, 2)),                    # merged short pieces: the step spans lines 1-2
    (["L1\nL2\n", "L3\n"], 2, (3, 3)),
    (["\n\nL1\n", "L2\n\n", "L3"], 2, (2, 2)),            # blank lines stick to a step, count as no line
    (["\n\nL1\n", "L2\n\n", "L3"], 3, (3, 3)),
    (["Ann", " =", " 5\n", "Bob"], 2, (1, 1)),            # word steps: the pit ends inside line 1
    (["Ann", " =", " 5\n", "Bob"], 4, (2, 2)),
    (["L1\n", "L2\n"], None, None),
])
def test_pit_span_reads_lines_from_the_steps_text(steps, pit, span):
    assert pit_span(steps, pit) == span


@pytest.mark.parametrize("pit", [0, 4])
def test_pit_outside_the_steps_is_refused(pit):
    with pytest.raises(ValueError, match=f"pit {pit} outside its 3 steps"):
        pit_span(["a\n", "b\n", "c"], pit)


@pytest.mark.parametrize(("lines", "pit", "truth", "outcome"), [
    (SLIP_2, 2, NegativeTruth(2, 6, (2, 2)), "hit"),
    (RECENT_3, 1, NegativeTruth(3, 6, (1, 1)), "early"),     # a correct line scored as the pit: false pit
    (ANSWER_6, 6, NegativeTruth(6, 6, (6, 6)), "hit"),
    (OFF_SLICE_4, 4, NegativeTruth(6, 6, (4, 4)), "early"),  # a wrong line the answer does not depend on
    (RECENT_3, 5, NegativeTruth(3, 6, (5, 5)), "late"),
    (SLIP_2, None, NegativeTruth(2, 6, None), "no_pit"),
    (RIGHT_BUT_WRONG_4, 4, NegativeTruth(None, 6, (4, 4)), "no_true_error"),
])
def test_judge_negative_against_the_true_first_consequential_error(lines, pit, truth, outcome):
    judged = judge_negative(PROBLEM, record(lines, pit))
    assert judged == truth and judged.outcome == outcome


def test_a_merged_step_hits_when_it_holds_the_true_line():
    steps = [R1 + "\n" + SLIP_2[1] + "\n", *(line + "\n" for line in SLIP_2[2:])]   # lines 1-2 in step 1
    judged = judge_negative(PROBLEM, {"steps": steps, "pit": 1})
    assert (judged.pit, judged.outcome) == ((1, 2), "hit")


def test_tally_counts_hits_false_and_late_pits_and_histograms():
    judged = judge_records({"q0": PROBLEM}, [
        record(SLIP_2, 2), record(RECENT_3, 1), record(ANSWER_6, 6), record(OFF_SLICE_4, 4),
        record(RECENT_3, 5), record(SLIP_2, None), record(RIGHT_BUT_WRONG_4, 4)])
    got = tally(judged)
    # pits on negatives with a true line: 5 (hit, early, hit, early, late)
    assert {key: got[key] for key in ("negatives", "pits", "hits", "early_pits", "late_pits", "no_pit",
                                      "no_true_error")} == {
        "negatives": 7, "pits": 5, "hits": 2, "early_pits": 2, "late_pits": 1, "no_pit": 1, "no_true_error": 1}
    assert (got["pit_precision"], got["false_pit_rate"], got["late_pit_rate"]) == (0.4, 0.4, 0.2)
    # true error early (lines 2, 3, 3): 1 hit of 3 pits; late (6, 6): 1 of 2
    assert (got["pit_precision_early"], got["pit_precision_late"]) == (1 / 3, 0.5)
    assert got["no_pit_share"] == 1 / 6
    assert got["pit_histogram"] == {"1": 1, "2": 1, "4": 2, "5": 1, "6": 1}   # every pit placed
    assert got["true_histogram"] == {"2": 2, "3": 2, "6": 2}
    assert got["by_true_line"] == {"2": {"negatives": 2, "pits": 1, "hits": 1},
                                   "3": {"negatives": 2, "pits": 2, "hits": 0},
                                   "6": {"negatives": 2, "pits": 2, "hits": 1}}


def test_tally_of_nothing_has_no_rates():
    got = tally([])
    assert (got["negatives"], got["pit_precision"], got["false_pit_rate"], got["pit_histogram"]) == (0, None, None, {})
    only_no_pit = tally([NegativeTruth(2, 6, None)])
    assert (only_no_pit["pits"], only_no_pit["pit_precision"], only_no_pit["no_pit_share"]) == (0, None, 1.0)


def test_rft_positives_with_a_wrong_line_but_a_right_answer():
    positives = [{"question_id": "q0", "response": "\n".join(lines)} for lines in (
        (R1, R2, R3, R4, R5, R6),                       # clean
        RIGHT_BUT_WRONG_4,                              # wrong line off the slice, answer right
        (R1, "Ann = 9 - 3 = 5", R3, R4, R5, R6),        # a wrong result on the slice, then R3 reads the true 6
        (R1, "Ann = 9 + 3 = 12", "Ann = 12 + 1 = 13", R4, R5, R6))]   # a second misread cancels the first
    assert rft_line_errors({"q0": PROBLEM}, positives) == {
        "rft_positives": 4, "rft_positives_with_wrong_line": 3, "rft_positives_with_consequential_wrong_line": 2,
        "rft_positives_repaired": 1}
    assert rft_line_errors({}, []) == {"rft_positives": 0, "rft_positives_with_wrong_line": 0,
                                       "rft_positives_with_consequential_wrong_line": 0, "rft_positives_repaired": 0}


def test_records_of_unknown_questions_fail_the_report():
    with pytest.raises(ReportError, match="credit: question_id 'q9' is not among the run's training questions"):
        judge_records({"q0": PROBLEM}, [record(SLIP_2, 2, qid="q9")])
    with pytest.raises(ReportError, match="rft.jsonl: question_id 'q9'"):
        rft_line_errors({"q0": PROBLEM}, [{"question_id": "q9", "response": R1}])


def test_markdown_prints_each_seed_the_pool_and_the_lines():
    pooled = {**tally([NegativeTruth(2, 6, (2, 2)), NegativeTruth(3, 6, (1, 1))]), "rft_positives": 4,
              "rft_positives_with_wrong_line": 1, "rft_positives_repaired": 1, "rollouts_per_negative": 7.5,
              "tokens_per_negative": 60.0}
    text = markdown({"0": pooled}, pooled)
    assert "## Credit against the true first error" in text
    assert "Monte-Carlo credit cannot flag these" in text
    assert "| pooled | 2 | 2 | 0.500 | 0.500 | - | 0.500 | 0.000 | 0 | 0 | 1 | 1 | 4 | 7.500 | 60.000 |" in text
    assert "| 0 | 2 | 2 | 0.500 |" in text
    assert "| 2 | 1 | 1 | 1 | 1.000 |" in text and "| 3 | 1 | 1 | 0 | 0.000 |" in text
    assert "Pit lines (pooled, line -> pits): {'1': 1, '2': 1}" in text
