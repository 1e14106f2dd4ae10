"""The synthesize stage's pure decisions: prompts, kept/rejected/duplicate solutions, majority labels,
n-gram decontamination, D_syn from records, and the summary's rates."""

import pytest

from negrl_operator.api.teacher import FewShotExample, SynthesisParams
from negrl_sampler.synthesis import (
    HeldoutIndex,
    dsyn,
    majority,
    normalised,
    problem_prompt,
    problem_text,
    rates,
    render_examples,
    select_solutions,
    solution_prompt,
    unit_counts,
    word_ngrams,
)

pytestmark = pytest.mark.unit

EXAMPLES = [FewShotExample(question="A?", solution="a\n#### 1"), FewShotExample(question="B?", solution="b\n#### 2")]


def test_prompts_render_the_examples_and_rotate_them_per_problem_slot():
    params = SynthesisParams(mode="problems", examples=EXAMPLES)
    assert solution_prompt(params, "C?") == "Question: A?\nAnswer: a\n#### 1\n\nQuestion: B?\nAnswer: b\n#### 2\n\n" \
                                           "Question: C?\nAnswer:"
    assert problem_prompt(params, 0) == "Question: A?\nAnswer: a\n#### 1\n\nQuestion: B?\nAnswer: b\n#### 2\n\nQuestion:"
    assert problem_prompt(params, 3) == "Question: B?\nAnswer: b\n#### 2\n\nQuestion: A?\nAnswer: a\n#### 1\n\nQuestion:"
    assert render_examples([], "{question}") == ""
    assert render_examples(EXAMPLES, "<{question}={solution}>", rotate=1) == "<B?=b\n#### 2><A?=a\n#### 1>"


@pytest.mark.parametrize("output, expected", [
    (" How many eggs?\nAnswer: 3", "How many eggs?"),
    ("Tom has 3.\nHow many?\n\nQuestion: next", "Tom has 3.\nHow many?"),
    ("Two lines\n  solution: x", "Two lines"),
    ("   \n\n", None),
    ("", None),
])
def test_problem_text_is_the_first_paragraph(output, expected):
    assert problem_text(output) == expected


@pytest.mark.parametrize("texts, accepted, keep, kept, rejected, duplicates, surplus", [
    (["x #### 4", "X  #### 4 ", "y #### 4", "z #### 5"], [True, True, True, False], 4, ["x #### 4", "y #### 4"], 1, 1, 0),
    (["a", "b", "c", "b"], [True, True, True, True], 1, ["a"], 0, 1, 2),
    (["a", "", "a"], [False, True, True], 2, ["a"], 2, 0, 0),  # an empty text is never kept
    ([" s\n#### 1\n"], [True], 1, ["s\n#### 1"], 0, 0, 0),
])
def test_select_solutions_counts_rejected_duplicate_and_surplus(texts, accepted, keep, kept, rejected, duplicates,
                                                                 surplus):
    chosen = select_solutions(texts, accepted, keep)
    assert (chosen.kept, chosen.rejected, chosen.duplicates, chosen.surplus) == (kept, rejected, duplicates, surplus)


@pytest.mark.parametrize("answers, label, agreement", [
    (["4", "4", "5", None], "4", 0.5),
    (["5", "4", "4", "5"], "5", 0.5),  # a tie: the first seen
    ([None, None], None, 0.0),
    (["7"], "7", 1.0),
])
def test_majority_counts_unparseable_answers_against_agreement(answers, label, agreement):
    assert majority(answers) == (label, agreement)


def test_word_ngrams_and_overlap_with_the_closest_heldout_question():
    assert word_ngrams("A b, c d!", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert word_ngrams("one two", 3) == {("one", "two")}
    assert word_ngrams("  ", 3) == set()
    index = HeldoutIndex(["Tom has 3 apples and 4 pears", "Ann reads 5 books"], n=2)
    # "tom has", "has 3", "3 apples", "apples today": 3 of 4 bigrams in the first question
    assert index.overlap("Tom has 3 apples today") == 0.75
    assert index.overlap("Ann reads 5 books") == 1.0
    assert index.overlap("nothing shared here") == 0.0
    assert index.overlap("") == 0.0


def test_normalised_ignores_case_and_spacing():
    assert normalised("  Tom\n has\t3 ") == "tom has 3"


def _record(order, mode, question, solutions, unit=None):
    return {"question_id": unit or f"q{order}", "order": order, "mode": mode, "question": question, "answer": "4",
            "solutions": solutions}


def test_dsyn_orders_by_unit_and_drops_repeated_new_problems():
    records = [
        _record(2, "problems", "Same  problem", ["s3"]),
        _record(0, "problems", "same problem", ["s1", "s2"]),
        _record(1, "problems", "Other", []),
        _record(3, "problems", "Third", ["t"]),
    ]
    questions, duplicates = dsyn(records)
    assert duplicates == 1
    assert questions == [
        {"id": "q0-t0", "question": "same problem", "answer": "4", "solution": "s1"},
        {"id": "q0-t1", "question": "same problem", "answer": "4", "solution": "s2"},
        {"id": "q3-t0", "question": "Third", "answer": "4", "solution": "t"},
    ]


def test_dsyn_keeps_every_training_question_of_solutions_mode():
    records = [_record(1, "solutions", "Q", ["b"], "x"), _record(0, "solutions", "Q", ["a"], "y")]
    assert [q["id"] for q in dsyn(records)[0]] == ["y-t0", "x-t0"]


def test_counts_and_rates():
    records = [{"requests": 1, "prompt_tokens": 10, "generated_tokens": 30, "generated": 3, "accepted": 2, "kept": 1,
                "rejected": 1, "duplicates": 1, "line_errors": 1},
               {"requests": 2, "prompt_tokens": 5, "generated_tokens": 10, "generated": 3, "accepted": 1, "kept": 1,
                "rejected": 2, "contaminated": 0, "disagreed": 1}]
    totals = unit_counts(records)
    assert totals == {"units": 2, "requests": 3, "prompt_tokens": 15, "generated_tokens": 40, "generated": 6,
                      "accepted": 3, "line_errors": 1, "kept": 2, "rejected": 3, "duplicates": 1, "surplus": 0, "contaminated": 0,
                      "disagreed": 1, "empty": 0}
    assert rates({**totals, "run_seconds": 4.0, "run_generated_tokens": 40}) == {
        "acceptance_rate": 0.5, "tokens_per_s": 10.0, "cost_tokens": 55}
    assert rates({}) == {"acceptance_rate": 0.0, "tokens_per_s": 0.0, "cost_tokens": 0}


def test_an_empty_d_syn_that_sft_would_read_fails_the_stage_naming_the_counts_and_the_fix(tmp_path):
    import json

    from negrl_operator.api.artifact import shard_records_path
    from negrl_operator.api.teacher import SynthesizeStageConfig
    from negrl_sampler.stages.synthesize import EmptyDsynError, write_dsyn

    config = SynthesizeStageConfig(output_dir=str(tmp_path), task="gsm8k", questions="q", fail_if_empty=True,
                                   endpoint={"base_url": "http://127.0.0.1:1/v1", "model": "m"})
    records = [{"question_id": f"q{i}", "order": i, "mode": "solutions", "question": "?", "answer": "1",
                "solutions": [], "generated": 4} for i in range(3)]
    path = shard_records_path(str(tmp_path), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(EmptyDsynError, match=r"none of its 12 solutions was accepted \(3 records\); train or pick "
                                             r"a stronger teacher"):
        write_dsyn(config)
    assert not (tmp_path / "train.jsonl").exists()
    # with nothing after it that reads D_syn (SFT and sampling disabled) an empty one is written
    assert write_dsyn(config.model_copy(update={"fail_if_empty": False}))["dsyn_records"] == 0
    assert (tmp_path / "train.jsonl").read_text() == ""


@pytest.mark.parametrize(("response", "verified"), [
    ("Ann = 5 + 4 = 9\n#### 9", True),
    ("Ann = 5 + 4 = 9\n#### 8", False),
    ("Ann = 5 + 4 = 8\n#### 9", False),  # a slip, then the right answer: not what D_syn should teach
    ("? = 5 - 10 - 0\n has = 9", False),  # the gsm8k grader's last-number fallback would accept it
])
def test_a_verified_arithmetic_solution_is_right_in_every_line(response, verified):
    from negrl_sampler.arithmetic_check import solution_checks

    question = "Ann has 5 apples . Ann gets 4 more apples . How many apples does Ann have ?"
    assert solution_checks(question, response) is verified
