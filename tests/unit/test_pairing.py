"""Pair construction tables: EOS (finished) handling, de-duplication, caps, chosen sources."""

import pytest

from negrl_sampler.grading.grader import Grade
from negrl_sampler.pairing import matched_counts, outcome_pairs, positives, rft_set, step_pairs, unknown_end
from negrl_sampler.record import CreditRecord, Question, Sample, StepValue

RIGHT = Grade(correct=True, extracted="5", reason="match")
WRONG = Grade(correct=False, extracted="4", reason="mismatch")
NONE = Grade(correct=None, extracted=None, reason="no-answer")


def sample(index, response, grade, qid="q1", finish="stop"):
    return Sample(question_id=qid, sample_index=index, prompt=f"P[{qid}]", response=response,
                  finish_reason=finish, grade=grade)


def credit(index, steps, pit, qid="q1", recovery=None, finished=True):
    values = [StepValue(step=0, value=1.0, successes=1, rollouts=4)]
    values += [StepValue(step=i, value=float(i < (pit or 99)), successes=int(i < (pit or 99)), rollouts=5)
               for i in range(1, len(steps))]
    return CreditRecord(question_id=qid, sample_index=index, prompt=f"P[{qid}]", steps=steps, values=values,
                        pit=pit, strategy="full", rollouts=5, generated_tokens=50, recovery=recovery,
                        finished=finished)


SAMPLES = [
    sample(0, "good A #### 5", RIGHT),
    sample(1, "good  A\n#### 5", RIGHT),            # same text as 0 after whitespace normalisation
    sample(2, "good B #### 5", RIGHT, finish="length"),  # cut by max_tokens: never chosen or RFT
    sample(3, "good C #### 5", RIGHT),
    sample(4, "bad X #### 4", WRONG),
    sample(5, "bad Y ...", NONE, finish="length"),  # truncated negative: no outcome pair
    sample(6, "bad Z no answer", NONE),
    sample(7, "bad X #### 4", WRONG),               # duplicate negative
    sample(0, "other #### 4", WRONG, qid="q2"),     # q2 has no positive
]


def test_positives_are_correct_finished_and_unique():
    group = [s for s in SAMPLES if s.question_id == "q1"]
    assert [s.sample_index for s in positives(group)] == [0, 3]


@pytest.mark.parametrize(("cap", "responses"), [
    (1, ["good A #### 5"]),
    (4, ["good A #### 5", "good C #### 5"]),
])
def test_rft_set_dedups_caps_and_skips_truncated(cap, responses):
    demos = rft_set(SAMPLES, cap)
    assert [d.response for d in demos] == responses
    assert all(d.source == "self" and d.prompt == "P[q1]" and d.question_id == "q1" for d in demos)


@pytest.mark.parametrize(("cap", "rejected"), [
    (8, [4, 6]),   # 5 is truncated (its text must not get an EOS), 7 repeats 4
    (1, [4]),
])
def test_outcome_pairs(cap, rejected):
    pairs = outcome_pairs(SAMPLES, cap)
    assert [p.rejected_sample_index for p in pairs] == rejected
    assert all(p.kind == "outcome" and p.question_id == "q1" for p in pairs)  # q2: no chosen
    assert {p.chosen for p in pairs} <= {"good A #### 5", "good C #### 5"}
    assert all(p.pit is None and p.chosen_source == "self" for p in pairs)


def test_outcome_chosen_rotates_over_positives():
    pairs = outcome_pairs(SAMPLES, 8)
    assert len({p.chosen for p in pairs}) == 2


STEPS = ["Step one ok.\n", "Step two wrong.\n", "So #### 4"]
CREDITS = [
    credit(4, STEPS, pit=2, recovery="Step two right.\n#### 5"),
    credit(6, ["Only one step"], pit=1, recovery="good A #### 5"),
    credit(7, STEPS, pit=2, recovery="Step two right.\n#### 5"),  # same cut as sample 4
    credit(5, STEPS, pit=None),                                   # no pit: dropped
    credit(0, STEPS, pit=3, qid="q2", recovery=None),
]
QUESTIONS = {"q1": Question(id="q1", question="?", answer="5", solution="Synthetic.\n#### 5"),
             "q2": Question(id="q2", question="?", answer="5")}


@pytest.mark.parametrize(("source", "expected"), [
    # (question, rejected sample, rejected text, chosen)
    # self: positives A and C alternate; sample 7 (the same cut as 4) gets 4's chosen again: a repeat
    ("self", [("q1", 4, "Step one ok.\nStep two wrong.\n", "good A #### 5"),
              ("q1", 6, "Only one step", "good C #### 5")]),
    ("synthetic", [("q1", 4, "Step one ok.\nStep two wrong.\n", "Synthetic.\n#### 5"),
                   ("q1", 6, "Only one step", "Synthetic.\n#### 5")]),
    ("rollout", [("q1", 4, "Step one ok.\nStep two wrong.\n", "Step one ok.\nStep two right.\n#### 5"),
                 ("q1", 6, "Only one step", "good A #### 5")]),
])
def test_step_pairs_by_chosen_source(source, expected):
    pairs = step_pairs(CREDITS, SAMPLES, QUESTIONS, source, per_question=8)
    got = [(p.question_id, p.rejected_sample_index, p.rejected, p.chosen) for p in pairs]
    if source == "self":  # which positive each pair gets depends on the seeded rotation
        assert [g[:3] for g in got] == [e[:3] for e in expected]
        assert {g[3] for g in got} == {"good A #### 5", "good C #### 5"}
    else:
        assert got == expected
    assert all(p.kind == "step" and p.chosen_source == source for p in pairs)


def test_step_pair_rejected_is_cut_after_the_pit_without_eos():
    pair = step_pairs(CREDITS, SAMPLES, QUESTIONS, "synthetic", per_question=1)[0]
    assert pair.rejected == "".join(STEPS[:2])
    assert not pair.rejected.endswith(("</s>", "<|endoftext|>"))
    assert pair.pit == 2
    assert pair.values == [1.0, 1.0, 0.0]
    assert pair.prompt == "P[q1]"


def test_step_pairs_cap_per_question():
    assert len(step_pairs(CREDITS, SAMPLES, QUESTIONS, "synthetic", per_question=1)) == 1


def test_step_pair_with_pit_before_the_end_has_no_eos_and_outcome_pairs_have_one():
    pair = step_pairs(CREDITS, SAMPLES, QUESTIONS, "synthetic", per_question=1)[0]
    assert (pair.pit, pair.rejected_eos) == (2, False)
    assert all(p.rejected_eos is True for p in outcome_pairs(SAMPLES, 8))


def test_finished_negative_whose_every_prefix_recovers_keeps_its_eos():
    # pit = L = 3: the stop is the mistake, so the rejected side is the whole response plus EOS
    pairs = step_pairs([credit(4, STEPS, pit=3)], SAMPLES, QUESTIONS, "synthetic", per_question=8)
    assert [(p.rejected, p.pit, p.rejected_eos) for p in pairs] == [("".join(STEPS), 3, True)]
    one_step = step_pairs([CREDITS[1]], SAMPLES, QUESTIONS, "synthetic", per_question=8)
    assert [(p.rejected, p.rejected_eos) for p in one_step] == [("Only one step", True)]


def test_truncated_negative_with_pit_at_the_end_makes_no_pair():
    cut = credit(4, STEPS, pit=3, finished=False)          # cut by max_tokens: Q_L is unknown
    early = credit(7, STEPS, pit=2, finished=False)        # a measured pit before the cut still counts
    assert (unknown_end(cut), unknown_end(early), unknown_end(credit(4, STEPS, pit=3))) == (True, False, False)
    pairs = step_pairs([cut, early], SAMPLES, QUESTIONS, "synthetic", per_question=8)
    assert [(p.rejected_sample_index, p.pit, p.rejected_eos) for p in pairs] == [(7, 2, False)]


def test_matched_counts_cut_the_longer_list_to_a_seeded_ordered_subset():
    outcome, step = list(range(10)), ["a", "b", "c"]
    cut_outcome, cut_step = matched_counts(outcome, step, seed=1)
    assert cut_step == step and len(cut_outcome) == 3
    assert cut_outcome == sorted(cut_outcome) and set(cut_outcome) <= set(outcome)
    assert matched_counts(outcome, step, seed=1) == (cut_outcome, cut_step)  # deterministic
    assert matched_counts(step, outcome, seed=1)[1] == cut_outcome            # either side
    assert matched_counts([], step) == ([], [])
    assert matched_counts(step, step) == (step, step)
