import math

import numpy as np
import pytest

from negrl_operator.report.estimate import (
    Correctness,
    MethodSummary,
    PolicyResult,
    accuracy_intervals,
    compare_to_sft,
    correctness_tables,
    effective_multiplier,
    multiplier_label,
    replicate_means,
    resample_weights,
    sft_curve,
    summarise,
)
from negrl_operator.report.table import markdown_table, results_table

CURVE = [(1, 0.30), (2, 0.40), (4, 0.50), (8, 0.60)]


@pytest.mark.parametrize("name,accuracy,value,label", [
    ("below SFT at 1x", 0.20, 1.0, "<= 1x"),
    ("equal to SFT at 1x", 0.30, 1.0, "<= 1x"),
    ("exactly the 2x point", 0.40, 2.0, "2.0x"),
    ("halfway 2x-4x on log scale", 0.45, math.sqrt(8), "2.8x"),
    ("exactly 8x", 0.60, 8.0, "8.0x"),
    ("beyond the sweep", 0.61, None, "> 8x"),
])
def test_effective_multiplier(name, accuracy, value, label):
    got_value, got_label = effective_multiplier(CURVE, accuracy)
    assert got_label == label
    assert got_value == pytest.approx(value) if value is not None else got_value is None


def test_curve_is_made_monotone():
    summaries = [MethodSummary("sft", k, a, 0, 1, None) for k, a in [(1, 0.3), (2, 0.5), (4, 0.4), (8, 0.6)]]
    assert sft_curve(summaries) == [(1, 0.3), (2, 0.5), (4, 0.5), (8, 0.6)]


def test_summarise_mean_and_sample_std_over_seeds():
    results = [PolicyResult("sft", 1, seed, acc, None) for seed, acc in enumerate([0.2, 0.4, 0.6])]
    results += [PolicyResult("step-dpo", 1, 0, 0.9, 0.95)]
    sft, step = summarise(results)
    assert (sft.method, sft.mean, sft.seeds) == ("sft", pytest.approx(0.4), 3)
    assert sft.std == pytest.approx(0.2)
    assert (step.method, step.std, step.pass_at_k) == ("step-dpo", 0.0, 0.95)


def test_results_table_rows_and_markdown():
    summaries = [MethodSummary("sft", 1, 0.3, 0.01, 3, None), MethodSummary("sft", 2, 0.4, 0.02, 3, None),
                 MethodSummary("rft", 1, 0.35, 0.0, 3, None)]
    rows = results_table(summaries)
    assert [row["method"] for row in rows] == ["sft", "sft @ 2x", "rft"]
    assert rows[2]["effective data multiplier"] == "1.4x"
    assert rows[0]["accuracy"] == "0.300 ± 0.010"
    text = markdown_table(rows)
    assert text.splitlines()[0] == "| method | accuracy | pass@k | seeds | effective data multiplier |"
    assert len(text.splitlines()) == 5


# --- paired bootstrap ---------------------------------------------------------------------------

def correct_first(count: int, questions: int = 40, seeds: int = 2) -> tuple[tuple[bool, ...], ...]:
    """A policy right on the first `count` questions, on every seed."""
    return tuple(tuple(j < count for j in range(questions)) for _ in range(seeds))


def policy(method, multiplier, table):
    return Correctness(method, multiplier, (0, 1), tuple(f"q{j}" for j in range(len(table[0]))), table)


SWEEP = [policy("sft", 1, correct_first(10)), policy("sft", 2, correct_first(20)),
         policy("sft", 4, correct_first(30)), policy("sft", 8, correct_first(32))]


def test_replicate_means_weight_each_drawn_seed_and_question():
    table = [[1, 0], [1, 1]]
    seeds = np.array([[2, 0], [1, 1], [0, 2]])
    questions = np.array([[1, 1], [0, 2], [2, 0]])
    # (2*1*1 + 2*0*1)/4, (1*0*2 + 1*1*2)/4, (0 + 2*1*2)/4
    assert replicate_means(table, seeds, questions).tolist() == [0.5, 0.5, 1.0]


def test_resample_weights_draw_every_item_count_times_per_replicate():
    weights = resample_weights(np.random.default_rng(3), 5, 100)
    assert weights.shape == (100, 5) and set(weights.sum(axis=1).tolist()) == {5}


@pytest.mark.parametrize(("difference_ci", "beats", "value", "value_ci", "label"), [
    ((-0.01, 0.05), False, 2.0, (1.0, 3.0), "n.s."),
    ((0.0, 0.05), False, 2.0, (1.0, 3.0), "n.s."),              # an interval touching 0 is not a gain
    ((0.01, 0.05), True, None, (8.0, math.inf), "> 8x"),
    ((-0.11, -0.01), True, 1.0, (1.0, 1.0), "< 1x"),           # worse than SFT at n: never "> 8x"
    ((0.01, 0.05), False, 2.83, (1.2, math.inf), "2.8x [1.2x, >8x]"),
    ((0.01, 0.05), False, None, (4.0, math.inf), "beyond 8x (n.s. vs 8x)"),
])
def test_multiplier_label(difference_ci, beats, value, value_ci, label):
    assert multiplier_label(difference_ci, beats, value, value_ci, 8) == label


def test_compare_to_sft_hand_worked_sweep():
    methods = [policy("rft", 1, correct_first(10)),           # = SFT at n: no gain
               policy("outcome-dpo", 1, correct_first(15)),   # halfway 1x-2x: sqrt(2)
               policy("step-dpo", 1, correct_first(20)),      # = SFT at 2x in every replicate
               policy("step-dpo", 3, correct_first(40)),      # right everywhere: beats 8x (0.8)
               policy("step-dpo", 5, correct_first(33))]      # one question past 8x: not significant
    got = {(c.method, round(c.accuracy, 3)): c for c in compare_to_sft(SWEEP + methods)}
    rft = got[("rft", 0.25)]
    assert (rft.difference, rft.difference_ci, rft.label) == (0.0, (0.0, 0.0), "n.s.")
    outcome = got[("outcome-dpo", 0.375)]
    assert outcome.difference == pytest.approx(0.125) and outcome.multiplier == pytest.approx(math.sqrt(2))
    assert outcome.difference_ci[0] > 0 and outcome.label.startswith("1.4x [")
    step = got[("step-dpo", 0.5)]
    assert step.multiplier == pytest.approx(2.0) and step.multiplier_ci == pytest.approx((2.0, 2.0))
    assert step.label == "2.0x [2.0x, 2.0x]"
    assert got[("step-dpo", 1.0)].label == "> 8x" and got[("step-dpo", 1.0)].multiplier is None
    assert got[("step-dpo", 0.825)].label == "beyond 8x (n.s. vs 8x)"
    assert compare_to_sft(SWEEP + methods) == compare_to_sft(SWEEP + methods)  # seeded


def test_compare_to_sft_pairs_seeds_a_seed_noise_widens_the_interval():
    # seed 0 gains 10 questions, seed 1 loses 10: the mean difference is 0 and with only two seeds
    # a replicate can draw seed 0 twice (+0.25) or seed 1 twice (-0.25)
    table = (tuple(j < 20 for j in range(40)), tuple(False for _ in range(40)))
    [comparison] = compare_to_sft([SWEEP[0], SWEEP[1], policy("step-dpo", 1, table)])
    assert comparison.difference == 0.0 and comparison.label == "n.s."
    assert comparison.difference_ci[0] < -0.2 and comparison.difference_ci[1] > 0.2


def test_compare_to_sft_needs_sft_at_n_and_skips_unpaired_policies():
    assert compare_to_sft([policy("step-dpo", 1, correct_first(20))]) == []
    other = Correctness("rft", 1, (0,), tuple(f"q{j}" for j in range(40)), correct_first(20, seeds=1))
    assert compare_to_sft([*SWEEP, other]) == []


def test_results_table_prints_the_bootstrap_difference_and_label():
    summaries = [MethodSummary("sft", 1, 0.25, 0.0, 2, None), MethodSummary("sft", 2, 0.5, 0.0, 2, None),
                 MethodSummary("step-dpo", 1, 0.5, 0.0, 2, None), MethodSummary("rft", 1, 0.25, 0.0, 2, None)]
    comparisons = compare_to_sft([SWEEP[0], SWEEP[1], policy("step-dpo", 1, correct_first(20)),
                                  policy("rft", 1, correct_first(10))])
    rows = {row["method"]: row for row in results_table(summaries, comparisons)}
    assert rows["step-dpo"]["effective data multiplier"] == "2.0x [2.0x, 2.0x]"
    assert rows["step-dpo"]["Δ vs SFT@n [95% CI]"].startswith("+0.250 [+0.")
    assert rows["rft"]["Δ vs SFT@n [95% CI]"] == "+0.000 [+0.000, +0.000]"
    assert rows["rft"]["effective data multiplier"] == "n.s."
    assert rows["sft @ 2x"]["Δ vs SFT@n [95% CI]"] == "-"


def test_accuracy_intervals_bracket_the_mean_and_collapse_for_constant_tables():
    intervals = accuracy_intervals([SWEEP[1], policy("rft", 1, correct_first(40))])
    point, low, high = intervals[("sft", 2)]
    assert point == 0.5 and low < 0.5 < high
    assert intervals[("rft", 1)] == (1.0, 1.0, 1.0)


def test_correctness_tables_group_seeds_and_keep_common_questions():
    tables = correctness_tables([("sft", 1, 1, {"a": True, "b": False}), ("sft", 1, 0, {"a": False, "b": True, "c": True}),
                                 ("rft", 1, 0, {"a": True})])
    sft = next(t for t in tables if t.method == "sft")
    assert (sft.seeds, sft.questions, sft.table) == ((0, 1), ("a", "b"), ((False, True), (True, False)))


def test_plot_is_written_with_bands_points_and_labels(tmp_path):
    from negrl_operator.report.figure import write_plot

    summaries = [MethodSummary("sft", 1, 0.25, 0.0, 2, None), MethodSummary("sft", 2, 0.5, 0.0, 2, None),
                 MethodSummary("step-dpo", 1, 1.0, 0.0, 2, None)]
    tables = [SWEEP[0], SWEEP[1], policy("step-dpo", 1, correct_first(40))]
    write_plot(summaries, 500, tmp_path / "plot.png", accuracy_intervals(tables), compare_to_sft(tables))
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
