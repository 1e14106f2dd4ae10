import collections
import random

import pytest

from negrl_sampler.arithmetic import (
    NAMES,
    WORDS,
    arithmetic_questions,
    event_steps,
    generate_problem,
    parse_problem,
    reference_lines,
    render_question,
    vocabulary,
)
from negrl_sampler.arithmetic_check import check_response
from negrl_sampler.lexicon import HALF, MAX_LEXICON, draw_verb, lexicon_words, nonce_verbs, verb_op


def test_the_lexicon_is_fixed_distinct_and_apart_from_the_task_words():
    verbs = nonce_verbs()
    assert verbs[:4] == ("runat", "tokud", "vusam", "teveg")  # the same order on every machine
    assert len(verbs) == len(set(verbs)) == MAX_LEXICON
    assert all(len(verb) == 5 and verb.isalpha() and verb.islower() for verb in verbs)
    assert not set(verbs) & {word.lower() for word in (*WORDS, *NAMES, "gives", "gets")}
    assert lexicon_words(3) == ["runat", "tokud", "vusam"] and lexicon_words(0) == []
    assert lexicon_words(2, own=True) == [verbs[-1], verbs[-2]]
    assert not set(lexicon_words(HALF)) & set(lexicon_words(HALF, own=True))  # task and own verbs never meet


def test_own_verbs_are_drawn_from_the_far_end_with_their_meaning():
    rng = random.Random(1)
    problems = [generate_problem(rng, 1, 4, 20, 0.0, lexicon=16, own_verbs=True) for _ in range(200)]
    verbs = {event.verb: event.op for problem in problems for event in problem.events if event.verb}
    assert set(verbs) == set(lexicon_words(16, own=True))
    assert all(verb_op(verb) == op for verb, op in verbs.items())


@pytest.mark.parametrize(("verb", "op"), [("runat", "+"), ("tokud", "-"), ("vusam", "+"), ("teveg", "-"),
                                          (nonce_verbs()[-1], "-"), ("eats", None), ("gives", None)])
def test_even_verbs_add_odd_verbs_take_away(verb, op):
    assert verb_op(verb) == op


class FixedDraw:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


# lexicon of 4: `+` has core, runat, vusam with weights 1, 1/2, 1/3 (cumulative 1, 1.5, 1.8333);
# `-` has core, tokud, teveg. A draw u picks the first rank whose cumulative weight exceeds u * 1.8333.
@pytest.mark.parametrize(("op", "u", "verb"), [
    ("+", 0.0, None), ("+", 0.54, None), ("+", 0.55, "runat"), ("+", 0.81, "runat"), ("+", 0.82, "vusam"),
    ("+", 0.999, "vusam"), ("-", 0.5, None), ("-", 0.6, "tokud"), ("-", 0.9, "teveg"),
])
def test_phrasings_are_drawn_by_zipfs_law(op, u, verb):
    assert draw_verb(FixedDraw(u), op, 4) == verb


def test_zipf_shares_over_many_draws():
    rng = random.Random(0)
    counts = collections.Counter(draw_verb(rng, "+", 4) for _ in range(30000))
    for verb, share in ((None, 6 / 11), ("runat", 3 / 11), ("vusam", 2 / 11)):
        assert abs(counts[verb] / 30000 - share) < 0.01


def test_a_lexicon_of_0_draws_the_problems_of_the_core_task():
    rng_a, rng_b = random.Random(3), random.Random(3)
    assert [generate_problem(rng_a, 2, 5, 30, 0.3) for _ in range(20)] == \
           [generate_problem(rng_b, 2, 5, 30, 0.3, lexicon=0) for _ in range(20)]
    first = next(iter(arithmetic_questions(1, "train", quantities=2, chain_length=3, max_value=20, interact=0.3,
                                           seed=4, prefix="t", lexicon=0)))
    # the question this seed drew before lexicons existed
    assert first["question"] == ("Ivy has 8 cards . Kim has 9 cards . Kim gets 9 more cards . Kim gives away 9 cards . "
                                 "Kim gets as many cards as Ivy has . How many cards does Kim have ?")


def test_lexicon_questions_use_its_verbs_with_their_meaning_and_round_trip():
    records = list(arithmetic_questions(300, "train", quantities=1, chain_length=4, max_value=20, interact=0.0,
                                        seed=0, prefix="t", lexicon=64))
    allowed = set(lexicon_words(64))
    verbs = collections.Counter()
    for record in records:
        problem = parse_problem(record["question"])
        assert render_question(problem) == record["question"]
        assert record["solution"] == "\n".join(reference_lines(problem))
        assert check_response(problem, record["solution"]).first_error is None
        assert set(record["question"].split()) | set(record["solution"].split()) <= set(vocabulary(20, 64))
        for event in problem.events:
            if event.verb is not None:
                assert event.verb in allowed and event.op == verb_op(event.verb)
                assert f" {event.verb} {event.amount} " in record["question"]
                verbs[event.verb] += 1
    assert verbs.most_common(1)[0][1] > 3 * verbs.most_common()[-1][1]  # frequent and rare verbs
    assert sum(verbs.values()) > 0.4 * 300 * 4 * 2 / 3  # most add and take-away events use a verb


def test_a_verb_outside_the_lexicon_does_not_parse():
    with pytest.raises(ValueError, match="sentence 2 'Ann blorp 3 apples'"):
        parse_problem("Ann has 5 apples . Ann blorp 3 apples . How many apples does Ann have ?")


@pytest.mark.parametrize("lexicon", [-1, HALF + 1])
def test_lexicon_size_is_validated(lexicon):
    with pytest.raises(ValueError, match=f"lexicon must be in 0..{HALF}, got {lexicon}"):
        generate_problem(random.Random(0), 1, 2, 20, 0.0, lexicon=lexicon)


def test_with_a_lexicon_the_range_does_not_tell_add_from_take_away():
    """Every add or take-away constant would keep the count in range under either operator (unless the
    count sits at 0 or the maximum), so only the verb says which one an event is."""
    rng, symmetric = random.Random(2), 0
    for _ in range(200):
        problem = generate_problem(rng, 1, 6, 20, 0.0, lexicon=64)
        for event, (before, operand, _) in zip(problem.events, event_steps(problem)[0], strict=True):
            if event.op in "+-" and 0 < before < 20:
                assert 0 <= before - operand and before + operand <= 20
                symmetric += 1
    assert symmetric > 400
