"""Methods against SFT at n on hand-made correctness tables: no multiplier from a flat SFT curve, exact
interpolation on a rising one, the per-seed t interval, Holm deciding "n.s.", and policies that do
not pair failing the report instead of being dropped."""

import math

import pytest

from negrl_operator.report.comparison import FLAT, NO_SWEEP, compare_to_sft, curve_rise, multiplier_label
from negrl_operator.report.estimate import Correctness, ReportError


def correct_first(count: int, questions: int = 40, seeds: int = 2) -> tuple[tuple[bool, ...], ...]:
    """A policy right on the first `count` questions, on every seed."""
    return tuple(tuple(j < count for j in range(questions)) for _ in range(seeds))


def policy(method, multiplier, table, questions=None):
    questions = questions or tuple(f"q{j}" for j in range(len(table[0])))
    return Correctness(method, multiplier, tuple(range(len(table))), questions, table)


# SFT right on 8, 12, 16, 20 of 40 questions: the curve {1: 0.2, 2: 0.3, 4: 0.4, 8: 0.5}, nested, so
# every policy right on a prefix of the questions lands between the same two points in every replicate.
RISING = [policy("sft", k, correct_first(count)) for k, count in [(1, 8), (2, 12), (4, 16), (8, 20)]]
FLAT_SWEEP = [policy("sft", 1, correct_first(10)), policy("sft", 4, correct_first(10)), policy("sft", 8, correct_first(11))]


def by_method(comparisons):
    return {c.method: c for c in comparisons}


def test_a_flat_curve_gives_every_method_an_undefined_multiplier():
    # SFT gains one question of 40 from n to 8x: the paired interval touches 0, so the curve is flat
    rise = curve_rise(FLAT_SWEEP)
    assert (rise.largest, rise.difference, rise.difference_ci[0], rise.rises) == (8, pytest.approx(0.025), 0.0, False)
    assert rise.as_dict()["verdict"] == "flat" and rise.as_dict()["to"] == "sft@8x"
    methods = [policy("step-dpo", 1, correct_first(40)),    # beats SFT at 8x by far: still no "> 8x"
               policy("rft", 1, correct_first(10)),         # = SFT at n
               policy("outcome-dpo", 1, correct_first(2))]  # far worse: no "< 1x" either
    got = by_method(compare_to_sft(FLAT_SWEEP + methods))
    assert {c.label for c in got.values()} == {FLAT}
    assert all(c.multiplier is None and c.multiplier_ci is None and c.undefined == FLAT for c in got.values())
    step = got["step-dpo"]  # the difference and its significance are still reported
    assert step.difference == 0.75 and step.difference_ci[0] > 0.5 and step.significant
    assert got["rft"].difference_ci == (0.0, 0.0) and got["rft"].p_value == 1.0 and not got["rft"].significant
    assert got["outcome-dpo"].difference == -0.2 and got["outcome-dpo"].significant


def test_a_rising_curve_interpolates_the_multiplier_exactly():
    rise = curve_rise(RISING)
    assert rise.difference == pytest.approx(0.3) and rise.rises
    methods = [policy("step-dpo", 1, correct_first(14)),    # 0.35: halfway 2x-4x on log scale, 2^1.5
               policy("outcome-dpo", 1, correct_first(12)), # 0.3 = SFT at 2x in every replicate
               policy("rft", 1, correct_first(40))]         # beats SFT at 8x significantly
    got = by_method(compare_to_sft(RISING + methods))
    step = got["step-dpo"]
    assert step.difference == pytest.approx(0.15) and step.multiplier == pytest.approx(2 ** 1.5)
    assert step.label.startswith("2.8x [") and step.multiplier_ci[0] < 2 ** 1.5 < step.multiplier_ci[1]
    outcome = got["outcome-dpo"]
    assert outcome.multiplier == pytest.approx(2.0) and outcome.multiplier_ci == pytest.approx((2.0, 2.0))
    assert outcome.label == "2.0x [2.0x, 2.0x]"
    assert got["rft"].label == "> 8x" and got["rft"].multiplier is None
    assert compare_to_sft(RISING + methods) == compare_to_sft(RISING + methods)  # seeded


def test_past_the_sweep_but_not_significantly_is_beyond_not_more_than():
    got = by_method(compare_to_sft(RISING + [policy("step-dpo", 1, correct_first(21))]))  # one question past 8x
    assert got["step-dpo"].multiplier is None
    assert got["step-dpo"].label.startswith("beyond 8x (n.s. vs 8x) [") and got["step-dpo"].label.endswith(">8x]")


def test_without_a_sweep_point_beyond_n_no_multiplier():
    [comparison] = compare_to_sft([RISING[0], policy("rft", 1, correct_first(40))])
    assert comparison.label == NO_SWEEP and curve_rise([RISING[0]]) is None
    assert compare_to_sft([policy("step-dpo", 1, correct_first(20))]) == []  # nothing to compare to


def test_per_seed_differences_and_their_t_interval():
    # 3 seeds x 10 questions: SFT right on 2, 3, 4; the method on 3, 5, 7 -> differences 0.1, 0.2, 0.3;
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653: 0.2 -/+ 4.302653 * 0.1 / sqrt(3) = 0.2 -/+ 0.248414
    sft = policy("sft", 1, tuple(tuple(j < c for j in range(10)) for c in (2, 3, 4)))
    method = policy("rft", 1, tuple(tuple(j < c for j in range(10)) for c in (3, 5, 7)))
    [comparison] = compare_to_sft([sft, method])
    assert comparison.seed_differences == pytest.approx((0.1, 0.2, 0.3))
    assert comparison.t_ci == pytest.approx((-0.048414, 0.448414), abs=1e-6)
    assert comparison.as_dict()["seed_differences"] == pytest.approx({"0": 0.1, "1": 0.2, "2": 0.3})


def test_one_seed_has_no_t_interval():
    [comparison] = compare_to_sft([policy("sft", 1, correct_first(10, seeds=1)),
                                   policy("rft", 1, correct_first(12, seeds=1))])
    assert comparison.seed_differences == pytest.approx((0.05,)) and comparison.t_ci is None


def test_holm_decides_significance_across_methods():
    # a gain of 4 questions of 40: P(none drawn) = 0.9^40 = 0.015, so a raw two-sided p near 0.03;
    # three such methods: Holm multiplies the smallest by 3 and the gain is no longer significant
    gain = correct_first(12)
    alone = by_method(compare_to_sft([*RISING, policy("step-dpo", 1, gain)]))["step-dpo"]
    assert alone.p_value < 0.05 and alone.p_holm == alone.p_value and alone.significant
    assert alone.label.startswith("2.0x [")
    three = by_method(compare_to_sft([*RISING, *(policy(m, 1, gain) for m in ("rft", "outcome-dpo", "step-dpo"))]))
    for comparison in three.values():
        assert comparison.p_value == alone.p_value and comparison.p_holm == pytest.approx(3 * alone.p_value)
        assert comparison.difference_ci[0] > 0.0  # the raw interval excludes 0 ...
        assert not comparison.significant and comparison.label == "n.s."  # ... Holm does not


@pytest.mark.parametrize(("undefined", "significant", "difference", "beats", "value", "value_ci", "label"), [
    (FLAT, True, 0.3, True, None, None, FLAT),                          # never "> 8x" from a flat curve
    (FLAT, True, -0.3, False, None, None, FLAT),
    (None, False, 0.05, False, 2.0, (1.0, 3.0), "n.s."),
    (None, True, -0.1, True, 1.0, (1.0, 1.0), "< 1x"),                  # worse than SFT at n: never "> 8x"
    (None, True, 0.3, True, None, (8.0, math.inf), "> 8x"),
    (None, True, 0.1, False, 2.83, (1.2, math.inf), "2.8x [1.2x, >8x]"),
    (None, True, 0.2, False, None, (4.0, math.inf), "beyond 8x (n.s. vs 8x) [4.0x, >8x]"),
])
def test_multiplier_label(undefined, significant, difference, beats, value, value_ci, label):
    assert multiplier_label(undefined, significant, difference, beats, value, value_ci, 8) == label


def test_a_policy_on_other_seeds_fails_the_report():
    other = Correctness("step-dpo", 1, (0,), tuple(f"q{j}" for j in range(40)), correct_first(20, seeds=1))
    with pytest.raises(ReportError) as error:
        compare_to_sft([*RISING, other])
    assert str(error.value) == ("step-dpo: seeds [0] but sft@n has [0, 1]; "
                                "every policy must be evaluated on the same seeds and questions")


def test_a_policy_on_other_questions_fails_the_report():
    questions = tuple(f"q{j}" for j in range(39)) + ("x",)
    with pytest.raises(ReportError) as error:
        curve_rise([*RISING[:3], policy("sft", 8, correct_first(20), questions)])
    assert str(error.value) == ("sft@8x: 1 of sft@n's 40 questions missing and 1 not in sft@n's; "
                                "every policy must be evaluated on the same seeds and questions")


def test_questions_in_another_order_are_aligned_not_refused():
    reversed_questions = tuple(f"q{j}" for j in reversed(range(40)))
    flipped = tuple(tuple(reversed(row)) for row in correct_first(14))
    aligned = compare_to_sft([*RISING, policy("step-dpo", 1, flipped, reversed_questions)])
    assert aligned == compare_to_sft([*RISING, policy("step-dpo", 1, correct_first(14))])
