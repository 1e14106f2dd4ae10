import random

import pytest

from negrl_sampler.arithmetic import (
    SPLIT_BUCKETS,
    Event,
    Problem,
    arithmetic_questions,
    event_steps,
    generate_problem,
    parse_problem,
    reference_lines,
    render_question,
    split_of,
    vocabulary,
)
from negrl_sampler.arithmetic_check import check_response, consequential_lines, first_break, recovery

# Ann is asked; Bob flows into Ann at line 3 (before Bob doubles at line 5); Cid never flows anywhere.
PROBLEM = Problem(
    names=("Ann", "Bob", "Cid"),
    item="apples",
    initial=(5, 7, 2),
    events=(
        Event("Ann", "+", amount=4),
        Event("Ann", "-", amount=3),
        Event("Ann", "+", other="Bob"),
        Event("Cid", "*", amount=3),
        Event("Bob", "*", amount=2),
    ),
    asked="Ann",
)
REFERENCE = ["Ann = 5 + 4 = 9", "Ann = 9 - 3 = 6", "Ann = 6 + 7 = 13", "Cid = 2 * 3 = 6", "Bob = 7 * 2 = 14",
             "#### 13"]
QUESTION = ("Ann has 5 apples . Bob has 7 apples . Cid has 2 apples . Ann gets 4 more apples . "
            "Ann gives away 3 apples . Ann gets as many apples as Bob has . The apples of Cid triple . "
            "The apples of Bob double . How many apples does Ann have ?")
KNOBS = [(2, 1, 9, 0.0), (3, 5, 30, 0.3), (4, 8, 99, 0.5), (6, 12, 200, 0.9), (2, 12, 3, 1.0)]


def test_render_and_reference_exact():
    assert render_question(PROBLEM) == QUESTION
    assert reference_lines(PROBLEM) == REFERENCE
    assert consequential_lines(PROBLEM) == (1, 2, 3, 6)


def lines(*texts):
    return "\n".join(texts)


C, S, W, U, M, X = "correct", "slip", "wrong", "unparseable", "missing", "extra"
R1, R2, R3, R4, R5, R6 = REFERENCE


@pytest.mark.parametrize("response,verdicts,first_error,first_consequential,answer_correct", [
    pytest.param(lines(*REFERENCE), (C, C, C, C, C, C), None, None, True, id="all-correct"),
    pytest.param("\n\n" + lines(R1, "", "  ", R2, R3, R4, R5, R6) + "\n", (C, C, C, C, C, C), None, None, True,
                 id="blank-lines-ignored"),
    pytest.param(lines(R1, "Ann = 9 - 3 = 5", "Ann = 5 + 7 = 12", R4, R5, "#### 12"), (C, W, W, C, C, W), 2, 2,
                 False, id="slip-line-2-carried-forward"),
    pytest.param(lines(R1, R2, "Ann = 6 + 6 = 12", R4, R5, "#### 12"), (C, C, W, C, C, W), 3, 3, False,
                 id="most-recent-value-as-operand"),
    pytest.param(lines(R1, R2, R3, "Cid = 2 * 3 = 5", R5, R6), (C, C, C, W, C, C), 4, None, True,
                 id="wrong-line-off-the-slice"),
    pytest.param(lines(R1, "Ann = 9 + 7 = 16", R4, R5, "#### 16"), (C, W, W, W, W, M), 2, 2, False,
                 id="skipped-line-2"),
    pytest.param(lines(R1, R2, R3, R5, R6), (C, C, C, W, W, M), 4, 6, True, id="skipped-line-4-positional"),
    pytest.param(lines(R1, R1, R2, R3, R4, R5, R6), (C, W, W, W, W, W, X), 2, 2, True, id="extra-line-2"),
    pytest.param(lines(*REFERENCE, "#### 14"), (C, C, C, C, C, C, X), 7, 7, False, id="extra-line-after-answer"),
    pytest.param(lines(R1, R2, "Ann gets Bob's apples", R4, R5, R6), (C, C, U, C, C, C), 3, 3, True,
                 id="unparseable-line-3"),
    pytest.param(lines(R1, R2, R3, R4, R5, "#### 14"), (C, C, C, C, C, W), 6, 6, False,
                 id="answer-is-last-line-shortcut"),
    pytest.param(lines(R1, R2, R3, R4, R5, R5), (C, C, C, C, C, W), 6, 6, False, id="event-line-at-answer"),
    pytest.param(lines(R1, R2, R3, R4, R5, "The answer is 13"), (C, C, C, C, C, U), 6, 6, False,
                 id="answer-line-unparseable"),
    pytest.param(lines("Bob = 5 + 4 = 9", R2, R3, R4, R5, R6), (W, C, C, C, C, C), 1, 1, True, id="wrong-target"),
    pytest.param(lines("Ann = 5 * 4 = 9", R2, R3, R4, R5, R6), (S, C, C, C, C, C), 1, None, True,
                 id="wrong-op-right-result-is-a-slip"),
    pytest.param(lines(R1, "Ann = 8 - 3 = 6", R3, R4, R5, R6), (C, S, C, C, C, C), 2, None, True,
                 id="miscopied-count-right-result-is-a-slip"),
    pytest.param(lines(R1, R2, "Ann = 6 + 6 = 13", R4, R5, "#### 13"), (C, C, S, C, C, C), 3, None, True,
                 id="wrong-operand-right-result-is-a-slip"),
    pytest.param(lines(R1, "Ann = 8 - 3 = 5", R3, R4, R5, R6), (C, W, C, C, C, C), 2, 2, True,
                 id="miscopied-count-carried-into-the-result"),
    pytest.param(lines(R1, "Bob = 9 - 3 = 6", R3, R4, R5, R6), (C, W, C, C, C, C), 2, 2, True,
                 id="wrong-target-with-the-right-result"),
    pytest.param(lines(R1, R2, "Ann = 6 + 7 =", R4, R5, R6), (C, C, U, C, C, C), 3, 3, True, id="truncated"),
    pytest.param(lines(R1, "  Ann  =  9 -  3 = 6 ", R3, R4, R5, "####13"), (C, C, C, C, C, C), None, None, True,
                 id="spacing-tolerated"),
    pytest.param("", (M, M, M, M, M, M), 1, 1, False, id="empty"),
])
def test_check_response_table(response, verdicts, first_error, first_consequential, answer_correct):
    check = check_response(PROBLEM, response)
    assert check.verdicts == verdicts
    assert check.first_error == first_error
    assert check.first_consequential_error == first_consequential
    assert check.answer_correct is answer_correct
    assert check.consequential_lines == (1, 2, 3, 6)


# first_break judges the working against the response's own values: R3 reads Ann's true 6, so after a
# written 12 it breaks; `12 + 1 = 13` misreads Bob's 7 but its working holds (a cancel, not a repair).
@pytest.mark.parametrize("response,broken,recovered", [
    pytest.param(lines(*REFERENCE), None, None, id="reference"),
    pytest.param(lines(R1, "Ann = 9 + 3 = 12", "Ann = 12 + 7 = 19", R4, R5, "#### 19"), None, None,
                 id="honest-misread-carried-to-a-wrong-answer"),
    pytest.param(lines(R1, "Ann = 9 + 3 = 12", "Ann = 12 + 1 = 13", R4, R5, R6), None, "cancel",
                 id="second-misread-cancels"),
    pytest.param(lines(R1, "Ann = 9 + 3 = 12", "Ann = 12 + 7 = 13", R4, R5, R6), 3, "repair",
                 id="result-against-its-own-working"),
    pytest.param(lines(R1, "Ann = 9 + 3 = 12", R3, R4, R5, R6), 3, "repair", id="true-count-instead-of-written"),
    pytest.param(lines(R1, "Ann = 9 + 3 = 12", "Ann = 12 + 7 = 19", R4, R5, "#### 13"), 6, "repair",
                 id="answer-line-states-the-truth"),
    pytest.param(lines(R1, "Ann = 9 - 3 = 5", "Ann = 5 + 7 = 12", R4, R5, "#### 12"), 2, None,
                 id="arithmetic-slip-wrong-answer"),
    pytest.param(lines(R1, R2, R3, R4, "Bob = 7 * 2 = 15", R6), 5, None, id="break-off-the-slice-is-no-recovery"),
    pytest.param(lines("Dan = 5 + 4 = 9", R2, R3, R4, R5, R6), 1, "repair", id="unknown-person"),
    pytest.param(lines(R1, R2, "Ann gets Bob's apples", R4, R5, R6), 3, "repair", id="unparseable-line"),
    pytest.param(lines(R1, R2, R3, R4, R5), 6, None, id="no-answer-line"),
    pytest.param(lines(R1, "####9"), None, None, id="early-answer-follows-its-working"),
])
def test_first_break_and_recovery_table(response, broken, recovered):
    assert first_break(PROBLEM, response) == broken
    assert recovery(PROBLEM, response) == recovered


@pytest.mark.parametrize("response", [
    lines(*REFERENCE), lines(R1, R2, R3, R4, R5, "#### 14"), lines(R1, R2, R3, R4, R5), lines(R1, R2, R3, R4, R5, "13"),
    lines(*REFERENCE, "#### 14"), lines(R6, R1), lines(R1, R2, R3, R4, R5, "The answer is 13"), "", "#### 13\n#### x",
])
def test_the_grader_and_the_line_checker_agree_on_the_answer(response):
    """The arithmetic task's grader has no last-number fallback: a truncated answer whose last number is
    the answer (13 here) is wrong for both, so RFT positives and evaluations mean what the checker means."""
    from negrl_sampler.grading.grader import grade

    grade_ = grade(response, lines(*REFERENCE), "arithmetic")
    assert (grade_.correct is True) is check_response(PROBLEM, response).answer_correct


def test_huge_numbers_are_unparseable_not_parsed():
    check = check_response(PROBLEM, lines("Ann = 5 + 4 = " + "9" * 5000, R2, R3, R4, R5, R6))
    assert check.verdicts[0] == U


def generated(count, seed=0):
    rng = random.Random(seed)
    return [(knobs, generate_problem(rng, *knobs)) for _ in range(count) for knobs in KNOBS]


def test_generation_is_deterministic_per_seed():
    assert generated(20, seed=5) == generated(20, seed=5)
    assert generated(20, seed=5) != generated(20, seed=6)


def test_every_value_in_range_and_problem_well_formed():
    for (quantities, chain_length, max_value, _), problem in generated(100):
        assert len(problem.names) == len(set(problem.names)) == quantities
        assert len(problem.events) == chain_length and problem.asked in problem.names
        steps, counts = event_steps(problem)
        assert all(0 <= value <= max_value // quantities for value in problem.initial)
        values = [*(v for step in steps for v in step), *counts.values()]
        assert all(0 <= value <= max_value for value in values)
        for event in problem.events:
            if event.other is not None:
                assert event.op == "+" and event.amount is None and event.other != event.target
            else:
                assert event.amount >= 1 and (event.op != "*" or event.amount in (2, 3))


def test_interact_sets_the_share_of_add_another_events():
    rng = random.Random(0)
    none = [generate_problem(rng, 4, 10, 1000, 0.0) for _ in range(50)]
    assert not any(event.other for problem in none for event in problem.events)
    half = [event.other is not None for _ in range(100) for event in generate_problem(rng, 4, 10, 1000, 0.5).events]
    assert 0.44 < sum(half) / len(half) < 0.52  # 0.488 for this seed: a little under 0.5, no pair fits sometimes
    for problem in [generate_problem(rng, 3, 12, 20, 1.0) for _ in range(50)]:
        counts = dict(zip(problem.names, problem.initial, strict=True))
        for event, (_, _, after) in zip(problem.events, event_steps(problem)[0], strict=True):
            if event.other is None:  # constant events only when no pair stays in range
                assert all(counts[a] + counts[b] > 20 for a in counts for b in counts if a != b)
            counts[event.target] = after


def test_asked_person_is_not_tied_to_the_last_update():
    problems = [problem for _, problem in generated(200, seed=3) if len(problem.names) == 3]
    share = sum(problem.asked == problem.events[-1].target for problem in problems) / len(problems)
    assert 0.25 < share < 0.42  # uniform over 3 people: 1/3


def test_reference_solutions_check_fully_correct_and_round_trip():
    for _, problem in generated(60):
        check = check_response(problem, "\n".join(reference_lines(problem)))
        assert set(check.verdicts) == {C} and check.answer_correct
        assert check.first_error is None and check.first_consequential_error is None
        assert parse_problem(render_question(problem)) == problem


def test_one_mutated_line_is_the_first_error_and_consequential_iff_in_the_slice():
    rng = random.Random(11)
    for _, problem in generated(40, seed=2):
        reference = reference_lines(problem)
        position = rng.randrange(len(reference)) + 1
        mutated = list(reference)
        mutated[position - 1] = mutated[position - 1].rsplit(" ", 1)[0] + " 99999"
        check = check_response(problem, "\n".join(mutated))
        assert check.first_error == position
        in_slice = position in consequential_lines(problem)
        assert check.first_consequential_error == (position if in_slice else None)
        assert check.answer_correct is (position != len(reference))


@pytest.mark.parametrize("question,message", [
    ("", "single spaces"),
    (QUESTION.replace(" . Bob", " .  Bob"), "single spaces"),
    (QUESTION.replace("Ann gives away", "Ann eats"), "sentence 5 'Ann eats 3 apples'"),
    (QUESTION.replace("Ann gets 4 more apples", "Zed gets 4 more apples"), "sentence 4"),
    (QUESTION.replace("How many apples does Ann have ?", "Who wins ?"), "must end 'How many"),
    (QUESTION.replace("Ann gets 4 more apples", "Ann gets 04 more apples"), "sentence 4"),
    (QUESTION.replace("Cid has 2 apples .", "Cid has 2 coins ."), "mixes items"),
    (QUESTION.replace("Cid has 2 apples . Ann gets 4 more apples .", "Ann gets 4 more apples . Cid has 2 apples ."),
     "sentence 4 'Cid has 2 apples': initial counts come first"),
    (QUESTION.replace("Cid has 2 apples", "Ann has 2 apples"), "initial counts come first, one per person"),
    (QUESTION.replace("as Bob has", "as Ann has"), "to themself"),
    (QUESTION.replace("does Ann have", "does Eve have"), "without an initial count: \\['Eve'\\]"),
])
def test_parse_errors_name_what_did_not_parse(question, message):
    with pytest.raises(ValueError, match=message):
        parse_problem(question)


def test_parse_exact():
    assert parse_problem(QUESTION) == PROBLEM


SPLIT_KNOBS = {"quantities": 2, "chain_length": 2, "max_value": 9, "interact": 0.5}


def test_splits_are_disjoint_duplicate_free_and_seeded():
    questions = {}
    for split, count in [("train", 300), ("validation", 60), ("test", 60), ("pretrain", 60)]:
        for seed in (0, 1):
            records = list(arithmetic_questions(count, split, seed=seed, prefix=split, **SPLIT_KNOBS))
            texts = [record["question"] for record in records]
            assert len(set(texts)) == count
            assert [record["id"] for record in records] == [f"{split}-{i}" for i in range(count)]
            assert all(split_of(text) == split for text in texts)
            assert all(r["answer"] == r["solution"] == "\n".join(reference_lines(parse_problem(r["question"])))
                       for r in records)
            questions[split, seed] = set(texts)
    for (split, seed), texts in questions.items():
        for (other, _), others in questions.items():
            assert split == other or not texts & others
        assert texts != questions[split, 1 - seed]
    again = list(arithmetic_questions(60, "test", seed=0, prefix="test", **SPLIT_KNOBS))
    assert {record["question"] for record in again} == questions["test", 0]


def test_split_buckets_cover_every_bucket_once():
    buckets = sorted(bucket for span in SPLIT_BUCKETS.values() for bucket in span)
    assert buckets == list(range(1000))


def test_vocabulary_covers_every_token():
    for (_, _, max_value, _), problem in generated(60):
        words = vocabulary(max_value)
        assert len(words) == len(set(words))
        tokens = render_question(problem).split(" ") + [t for line in reference_lines(problem) for t in line.split(" ")]
        assert set(tokens) <= set(words)
    assert [w for w in vocabulary(12) if w.isdigit()] == [str(n) for n in range(13)]


@pytest.mark.parametrize("knobs,message", [
    ({"quantities": 0}, "quantities"), ({"quantities": 7}, "quantities"),
    ({"chain_length": 0}, "chain_length"), ({"chain_length": 13}, "chain_length"),
    ({"max_value": 0}, "max_value"), ({"interact": -0.1}, "interact"), ({"interact": 1.5}, "interact"),
])
def test_knob_validation_names_the_knob(knobs, message):
    arguments = {**SPLIT_KNOBS, **knobs}
    with pytest.raises(ValueError, match=message):
        generate_problem(random.Random(0), **arguments)
    with pytest.raises(ValueError, match=message):
        arithmetic_questions(1, "train", seed=0, prefix="train", **arguments)


def test_unknown_split_and_negative_count_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        arithmetic_questions(1, "dev", seed=0, prefix="dev", **SPLIT_KNOBS)
    with pytest.raises(ValueError, match="count must be"):
        arithmetic_questions(-1, "train", seed=0, prefix="train", **SPLIT_KNOBS)


def edited(rng, reference):
    """The reference with a few random deletions, duplications, swaps and number changes."""
    response = list(reference)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(response)) if response else 0
        edit = rng.choice(["delete", "duplicate", "swap", "number"])
        if not response or edit == "duplicate":
            response.insert(at, rng.choice(reference))
        elif edit == "delete":
            del response[at]
        elif edit == "swap":
            other = rng.randrange(len(response))
            response[at], response[other] = response[other], response[at]
        else:
            response[at] = response[at].rsplit(" ", 1)[0] + f" {rng.randrange(20)}"
    return response


def test_a_wrong_answer_always_has_a_consequential_error():
    rng = random.Random(4)
    for _, problem in generated(80, seed=9):
        reference = reference_lines(problem)
        response = edited(rng, reference)
        check = check_response(problem, "\n".join(response))
        assert len(check.verdicts) == max(len(reference), len(response))
        if not check.answer_correct:
            assert check.first_consequential_error is not None
        if check.first_consequential_error is not None:
            assert check.first_error <= check.first_consequential_error
        assert (check.first_error is None) is (response == reference)


def test_one_quantity_is_a_single_chain_each_line_starting_from_the_last_result():
    rng = random.Random(3)
    for _ in range(50):
        problem = generate_problem(rng, quantities=1, chain_length=4, max_value=50, interact=0.9)
        [name] = problem.names
        assert problem.asked == name and all(e.target == name and e.other is None for e in problem.events)
        steps, counts = event_steps(problem)
        befores, results = [before for before, _, _ in steps], [result for _, _, result in steps]
        assert befores == [problem.initial[0], *results[:-1]] and counts[name] == results[-1]
        lines = reference_lines(problem)
        assert lines[-1] == f"#### {results[-1]}" and check_response(problem, "\n".join(lines)).first_error is None
