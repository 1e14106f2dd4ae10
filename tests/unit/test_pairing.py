"""Pair construction tables: EOS (finished) handling, de-duplication, caps, chosen sources, and
outcome/per-step pairs built from the same negatives (pairs.matchCounts)."""

import json

import pytest

from negrl_operator.api.stage_config import PairsStageConfig
from negrl_sampler.grading.grader import Grade
from negrl_sampler.pairing import (
    outcome_pairs,
    positives,
    rft_set,
    same_negative_pairs,
    step_pairs,
    unknown_end,
)
from negrl_sampler.record import CreditRecord, Question, Sample, StepValue
from negrl_sampler.stages.pairs import build_outputs

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


# Same-negative pairs. Three questions; seed 0 rotates neither q1's positives [A, B] nor q2's [C]
# (offset 0), seed 2 rotates q1's to [B, A] (offset 1).
A, B, C = "A\n#### 5", "B\n#### 5", "C\n#### 5"
TABLE_SAMPLES = [
    sample(0, A, RIGHT), sample(1, B, RIGHT),
    sample(2, "a1\na2\n#### 4", WRONG),                    # pit 2
    sample(3, "n1\nn2\n#### 4", WRONG),                    # no pit: no pair of either kind
    sample(4, "c1\n#### 7", WRONG),                         # pit 1
    sample(5, "d1\nd2\n#### 3", WRONG),                    # pit = L, finished: EOS on both sides
    sample(6, "e1\ne2\ne3 ...", NONE, finish="length"),     # pit 2 before the cut: twin has no EOS
    sample(7, "f1\nf2", NONE, finish="length"),             # pit = L, cut by max_tokens: no pair
    sample(0, C, RIGHT, qid="q2"),
    sample(1, "g1\ng2\n#### 9", WRONG, qid="q2"),          # pit 2
    sample(2, "g1\ng2\n#### 9", WRONG, qid="q2"),          # same text as 1, pit 1: its twin would repeat 1's
    sample(3, "h1\n#### 8", WRONG, qid="q2"),               # pit 1
    sample(0, "k1\n#### 2", WRONG, qid="q3"),               # q3 has no positive
]
TABLE_CREDITS = [
    credit(2, ["a1\n", "a2\n", "#### 4"], pit=2, recovery="a2 fixed\n#### 5"),
    credit(3, ["n1\n", "n2\n", "#### 4"], pit=None),
    credit(4, ["c1\n", "#### 7"], pit=1, recovery="c1 fixed\n#### 5"),
    credit(5, ["d1\n", "d2\n", "#### 3"], pit=3),
    credit(6, ["e1\n", "e2\n", "e3 ..."], pit=2, recovery="e2 fixed\n#### 5", finished=False),
    credit(7, ["f1\n", "f2"], pit=2, finished=False),
    credit(1, ["g1\n", "g2\n", "#### 9"], pit=2, qid="q2", recovery="g2 ok\n#### 5"),
    credit(2, ["g1\n", "g2\n", "#### 9"], pit=1, qid="q2", recovery="g1 ok\n#### 5"),
    credit(3, ["h1\n", "#### 8"], pit=1, qid="q2"),
    credit(0, ["k1\n", "#### 2"], pit=1, qid="q3", recovery="k ok\n#### 5"),
]
TABLE_QUESTIONS = {"q1": Question(id="q1", question="?", answer="5", solution="S1\n#### 5"),
                   "q2": Question(id="q2", question="?", answer="5"),
                   "q3": Question(id="q3", question="?", answer="5", solution="S3\n#### 5")}
# (question, negative, chosen, per-step rejected, its EOS, outcome rejected, its EOS), source self, seed 0
SELF_TABLE = [
    ("q1", 2, A, "a1\na2\n", False, "a1\na2\n#### 4", True),
    ("q1", 4, B, "c1\n", False, "c1\n#### 7", True),
    ("q1", 5, A, "d1\nd2\n#### 3", True, "d1\nd2\n#### 3", True),
    ("q1", 6, B, "e1\ne2\n", False, "e1\ne2\ne3 ...", False),
    ("q2", 1, C, "g1\ng2\n", False, "g1\ng2\n#### 9", True),
    ("q2", 3, C, "h1\n", False, "h1\n#### 8", True),
]


def rows(step, outcome):
    assert [p.kind for p in step] == ["step"] * len(step) and [p.kind for p in outcome] == ["outcome"] * len(outcome)
    return [(s.question_id, s.rejected_sample_index, s.chosen, s.rejected, s.rejected_eos, o.rejected, o.rejected_eos)
            for s, o in zip(step, outcome, strict=True)]


def test_same_negative_pairs_share_question_chosen_and_negative_in_order():
    step, outcome = same_negative_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=8)
    assert rows(step, outcome) == SELF_TABLE
    for s, o in zip(step, outcome, strict=True):  # only the rejected side's cut (and its EOS) differs
        assert (o.question_id, o.prompt, o.chosen, o.chosen_source, o.rejected_sample_index) == \
               (s.question_id, s.prompt, s.chosen, "self", s.rejected_sample_index)
        assert o.rejected.startswith(s.rejected) and o.pit is None and s.pit is not None


def test_unmatched_step_pairs_keep_the_negative_whose_outcome_twin_would_repeat():
    # q2's sample 2 has sample 1's text: its cut is new, but (C, full text) repeats 1's outcome pair
    unmatched = [(p.question_id, p.rejected_sample_index, p.rejected)
                 for p in step_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=8)]
    assert unmatched == [row[:2] + row[3:4] for row in SELF_TABLE[:5]] + [("q2", 2, "g1\n"), ("q2", 3, "h1\n")]


@pytest.mark.parametrize(("source", "expected"), [
    # (question, negative, chosen): q2 has no synthetic solution, q3 has no positive
    ("synthetic", [("q1", 2, "S1\n#### 5"), ("q1", 4, "S1\n#### 5"), ("q1", 5, "S1\n#### 5"),
                   ("q1", 6, "S1\n#### 5"), ("q3", 0, "S3\n#### 5")]),
    # the recovery follows the negative's steps before the pit; 5 and q2's 3 recorded none; q2's 2 now
    # has its own chosen, so its twin repeats nothing
    ("rollout", [("q1", 2, "a1\na2 fixed\n#### 5"), ("q1", 4, "c1 fixed\n#### 5"), ("q1", 6, "e1\ne2 fixed\n#### 5"),
                 ("q2", 1, "g1\ng2 ok\n#### 5"), ("q2", 2, "g1 ok\n#### 5"), ("q3", 0, "k ok\n#### 5")]),
])
def test_same_negative_pairs_use_the_same_chosen_text_whatever_its_source(source, expected):
    step, outcome = same_negative_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, source, per_question=8)
    for pairs in (step, outcome):
        assert [(p.question_id, p.rejected_sample_index, p.chosen) for p in pairs] == expected
        assert {p.chosen_source for p in pairs} == {source}
    full = {(s.question_id, s.sample_index): s.response for s in TABLE_SAMPLES}
    assert [o.rejected for o in outcome] == [full[(qid, index)] for qid, index, _ in expected]


def test_same_negative_pairs_cap_and_seeded_rotation():
    capped = same_negative_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=2)
    assert rows(*capped) == [SELF_TABLE[i] for i in (0, 1, 4, 5)]
    rotated = same_negative_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=8, seed=2)
    swap = {A: B, B: A, C: C}
    assert rows(*rotated) == [row[:2] + (swap[row[2]],) + row[3:] for row in SELF_TABLE]
    again = same_negative_pairs(TABLE_CREDITS, TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=8, seed=2)
    assert again == rotated


def test_same_negative_pairs_refuse_a_credit_record_without_its_sample():
    orphan = credit(9, ["x\n", "#### 1"], pit=1)
    with pytest.raises(ValueError, match="'q1', sample 9.*different runs"):
        same_negative_pairs([orphan], TABLE_SAMPLES, TABLE_QUESTIONS, "self", per_question=8)


def write_stage(folder, records):
    folder.mkdir()
    (folder / "records.jsonl").write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({"records": ["records.jsonl"]}))


@pytest.fixture
def table_config(tmp_path):
    write_stage(tmp_path / "samples", TABLE_SAMPLES)
    write_stage(tmp_path / "credit", TABLE_CREDITS)
    (tmp_path / "questions.jsonl").write_text(
        "".join(json.dumps(q.model_dump(mode="json")) + "\n" for q in TABLE_QUESTIONS.values()))

    def config(**params):
        return PairsStageConfig(output_dir=str(tmp_path / "pairs"), outputs=["rft", "outcome", "step"],
                                samples_dir=str(tmp_path / "samples"), credit_dir=str(tmp_path / "credit"),
                                questions=str(tmp_path / "questions.jsonl"), params=params)
    return config


def test_stage_builds_matched_files_under_the_smaller_cap_and_counts_the_negatives(table_config):
    outputs, notes = build_outputs(table_config(outcomePairsPerQuestion=2))
    assert list(outputs) == ["rft", "outcome", "step"]
    triples = {name: [(p["question_id"], p["rejected_sample_index"], p["chosen"]) for p in outputs[name]]
               for name in ("outcome", "step")}
    assert triples["outcome"] == triples["step"] == [SELF_TABLE[i][:3] for i in (0, 1, 4, 5)]
    assert notes == {"dropped_unfinished_pit_at_end": 1, "matched": "same-negatives", "negatives_scanned": 10,
                     "negatives_with_pit": 9, "negatives_used": 4, "outcome_rejected_unfinished": 0}
    _, uncapped = build_outputs(table_config())
    assert (uncapped["negatives_used"], uncapped["outcome_rejected_unfinished"]) == (6, 1)


def test_stage_without_match_counts_builds_outcome_pairs_from_every_finished_negative(table_config):
    outputs, notes = build_outputs(table_config(matchCounts=False))
    # q1: 2, 3 (no pit), 4, 5 (6 and 7 are cut by max_tokens); q2: 1 and 3 (2 repeats 1's text); q3: no positive
    assert [(p["question_id"], p["rejected_sample_index"]) for p in outputs["outcome"]] == \
           [("q1", 2), ("q1", 3), ("q1", 4), ("q1", 5), ("q2", 1), ("q2", 3)]
    assert all(p["chosen_source"] == "self" and p["rejected_eos"] is True for p in outputs["outcome"])
    assert [(p["question_id"], p["rejected_sample_index"]) for p in outputs["step"]] == \
           [("q1", 2), ("q1", 4), ("q1", 5), ("q1", 6), ("q2", 1), ("q2", 2), ("q2", 3)]
    assert notes == {"dropped_unfinished_pit_at_end": 1}
