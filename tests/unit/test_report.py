"""The report's estimates, table and plot on hand-worked values: SFT's monotone curve and its piecewise
log-linear interpolation, per-question correctness tables that refuse to drop anything, the
bootstrap's building blocks, the results table's columns and the plot's title."""

import json
import math

import numpy as np
import pytest

from negrl_operator.report.comparison import FLAT, Comparison, CurveRise, compare_to_sft
from negrl_operator.report.estimate import (
    Correctness,
    CurvePoint,
    MethodSummary,
    PolicyResult,
    ReportError,
    accuracy_intervals,
    correctness_tables,
    effective_multiplier,
    monotone,
    replicate_means,
    resample_weights,
    sft_curve,
    sft_curve_points,
    summarise,
)
from negrl_operator.report.figure import plot_title, write_plot
from negrl_operator.report.table import markdown_table, results_table
from negrl_operator.report.writer import distinct_examples, statistics_text

CURVE = [(1, 0.2), (2, 0.3), (4, 0.4), (8, 0.5)]


@pytest.mark.parametrize("name,accuracy,value", [
    ("below SFT at n", 0.1, 1.0),
    ("equal to SFT at n", 0.2, 1.0),
    ("exactly the 2x point", 0.3, 2.0),
    ("halfway 2x-4x: 2^1.5", 0.35, 2 ** 1.5),
    ("a quarter of 1x-2x: 2^0.25", 0.225, 2 ** 0.25),
    ("halfway 4x-8x: 2^2.5", 0.45, 2 ** 2.5),
    ("exactly 8x", 0.5, 8.0),
    ("past the sweep: no extrapolation", 0.51, math.inf),
])
def test_effective_multiplier_interpolates_log_linearly_between_every_pair_of_points(name, accuracy, value):
    assert effective_multiplier(CURVE, accuracy) == pytest.approx(value)


def test_effective_multiplier_on_a_dip_uses_the_running_max_and_every_point():
    curve = monotone([(8, 0.5), (1, 0.2), (4, 0.3), (2, 0.4)])   # 4x dips below 2x
    assert curve == [(1, 0.2), (2, 0.4), (4, 0.4), (8, 0.5)]
    assert effective_multiplier(curve, 0.3) == pytest.approx(2 ** 0.5)   # halfway 1x-2x
    assert effective_multiplier(curve, 0.45) == pytest.approx(2 ** 2.5)  # 4x-8x: the flat 2x-4x is skipped
    with pytest.raises(ValueError, match="at least one SFT sweep point"):
        effective_multiplier([], 0.3)


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


def test_results_table_without_comparisons_reads_no_multiplier_off_bare_means():
    summaries = [MethodSummary("sft", 1, 0.3, 0.01, 3, None), MethodSummary("sft", 2, 0.4, 0.02, 3, None),
                 MethodSummary("rft", 1, 0.35, 0.0, 3, None)]
    rows = results_table(summaries)
    assert [row["method"] for row in rows] == ["sft", "sft @ 2x", "rft"]
    assert [row["effective data multiplier"] for row in rows] == ["1x (by definition)", "2x (by definition)", "-"]
    assert rows[0]["accuracy"] == "0.300 ± 0.010"
    text = markdown_table(rows)
    assert text.splitlines()[0] == "| method | accuracy | pass@k | seeds | effective data multiplier |"
    assert len(text.splitlines()) == 5


# --- per-question correctness ---------------------------------------------------------------------

def correct_first(count: int, questions: int = 40, seeds: int = 2) -> tuple[tuple[bool, ...], ...]:
    """A policy right on the first `count` questions, on every seed."""
    return tuple(tuple(j < count for j in range(questions)) for _ in range(seeds))


def policy(method, multiplier, table):
    return Correctness(method, multiplier, tuple(range(len(table))), tuple(f"q{j}" for j in range(len(table[0]))), table)


def test_correctness_tables_group_seeds_in_order():
    tables = correctness_tables([("sft", 1, 1, {"a": True, "b": False}), ("sft", 1, 0, {"b": True, "a": False}),
                                 ("rft", 1, 0, {"a": True})])
    sft, rft = tables
    assert (sft.seeds, sft.questions, sft.table) == ((0, 1), ("a", "b"), ((False, True), (True, False)))
    assert (rft.method, rft.seeds, rft.table) == ("rft", (0,), ((True,),))


def test_correctness_tables_refuse_seeds_that_answered_different_questions():
    evaluations = [("sft", 2, 0, {"a": True, "b": False, "c": True}), ("sft", 2, 1, {"a": True, "d": False})]
    with pytest.raises(ReportError) as error:
        correctness_tables(evaluations)
    assert str(error.value) == ("sft@2x: seed 1 answered 2 questions, seed 0 3 (2 of seed 0's missing, 1 others); "
                                "every policy must be evaluated on the same seeds and questions")


def test_replicate_means_weight_each_drawn_seed_and_question():
    table = [[1, 0], [1, 1]]
    seeds = np.array([[2, 0], [1, 1], [0, 2]])
    questions = np.array([[1, 1], [0, 2], [2, 0]])
    # (2*1*1 + 2*0*1)/4, (1*0*2 + 1*1*2)/4, (0 + 2*1*2)/4
    assert replicate_means(table, seeds, questions).tolist() == [0.5, 0.5, 1.0]


def test_resample_weights_draw_every_item_count_times_per_replicate():
    weights = resample_weights(np.random.default_rng(3), 5, 100)
    assert weights.shape == (100, 5) and set(weights.sum(axis=1).tolist()) == {5}


def test_accuracy_intervals_bracket_the_mean_and_collapse_for_constant_tables():
    intervals = accuracy_intervals([policy("sft", 2, correct_first(20)), policy("rft", 1, correct_first(40))])
    point, low, high = intervals[("sft", 2)]
    assert point == 0.5 and low < 0.5 < high
    assert intervals[("rft", 1)] == (1.0, 1.0, 1.0)


def test_sft_curve_points_put_each_sweep_point_at_its_distinct_examples():
    intervals = {("sft", 2): (0.25, 0.2, 0.3), ("sft", 1): (0.3, 0.2, 0.4), ("rft", 1): (0.9, 0.8, 1.0)}
    assert sft_curve_points(intervals, {1: 100, 2: 200}) == [
        CurvePoint(1, 100, 0.3, 0.2, 0.4, 0.3), CurvePoint(2, 200, 0.25, 0.2, 0.3, 0.3)]  # 2x dips: monotone 0.3
    assert sft_curve_points(intervals, None)[1].distinct_examples is None
    assert distinct_examples(500, [1, 2, 8]) == {1: 500, 2: 1000, 8: 4000} and distinct_examples(None, [1]) is None


# --- table, plot and text --------------------------------------------------------------------------

RISING = [policy("sft", 1, correct_first(10)), policy("sft", 2, correct_first(20)), policy("sft", 8, correct_first(32))]


def test_results_table_prints_difference_t_interval_holm_p_and_label():
    summaries = [MethodSummary("sft", 1, 0.25, 0.0, 2, None), MethodSummary("sft", 2, 0.5, 0.0, 2, None),
                 MethodSummary("step-dpo", 1, 0.5, 0.0, 2, None), MethodSummary("rft", 1, 0.25, 0.0, 2, None)]
    comparisons = compare_to_sft([*RISING, policy("step-dpo", 1, correct_first(20)), policy("rft", 1, correct_first(10))])
    rows = {row["method"]: row for row in results_table(summaries, comparisons)}
    assert list(rows["sft"]) == ["method", "accuracy", "pass@k", "seeds", "Δ vs SFT@n [bootstrap 95% CI]",
                                 "Δ per-seed t 95% CI", "Holm p", "effective data multiplier"]
    step, rft = rows["step-dpo"], rows["rft"]
    assert step["effective data multiplier"] == "2.0x [2.0x, 2.0x]"   # = SFT at 2x in every replicate
    assert step["Δ vs SFT@n [bootstrap 95% CI]"].startswith("+0.250 [+0.")
    assert step["Δ per-seed t 95% CI"] == "[+0.250, +0.250]"         # both seeds gain exactly 10/40
    assert step["Holm p"] == "0.001"                                 # 1/2000 floor, times 2 methods
    assert rft["Δ vs SFT@n [bootstrap 95% CI]"] == "+0.000 [+0.000, +0.000]"
    assert (rft["Holm p"], rft["effective data multiplier"]) == ("1 (n.s.)", "n.s.")
    assert rows["sft @ 2x"]["Δ vs SFT@n [bootstrap 95% CI]"] == "-" and rows["sft @ 2x"]["Holm p"] == "-"


def test_results_table_drops_the_t_column_with_five_seeds():
    tables = [policy("sft", 1, correct_first(10, seeds=5)), policy("rft", 1, correct_first(12, seeds=5))]
    rows = results_table([MethodSummary("rft", 1, 0.3, 0.0, 5, None)], compare_to_sft(tables))
    assert "Δ per-seed t 95% CI" not in rows[0] and rows[0]["effective data multiplier"].startswith("undefined")


@pytest.mark.parametrize(("rise", "title"), [
    (None, "no SFT sweep beyond n: multipliers undefined"),
    (CurveRise(8, 0.01, (-0.02, 0.04)), "SFT curve flat: multipliers undefined\nSFT@8x - SFT@n = +0.010 [-0.020, +0.040]"),
    (CurveRise(8, 0.3, (0.2, 0.4)), "SFT curve rises: SFT@8x - SFT@n = +0.300 [+0.200, +0.400]"),
])
def test_plot_title_says_whether_multipliers_exist(rise, title):
    assert plot_title(rise) == title


def test_plot_is_written_with_bands_points_and_labels(tmp_path):
    summaries = [MethodSummary("base", 1, 0.0, 0.0, 1, None), MethodSummary("sft", 1, 0.25, 0.0, 2, None),
                 MethodSummary("sft", 2, 0.5, 0.0, 2, None), MethodSummary("step-dpo", 1, 1.0, 0.0, 2, None)]
    tables = [policy("sft", 1, correct_first(10)), policy("sft", 2, correct_first(20)),
              policy("step-dpo", 1, correct_first(40))]
    curve = sft_curve_points(accuracy_intervals(tables), {1: 500, 2: 1000})
    write_plot(tmp_path / "plot.png", summaries, curve, compare_to_sft(tables), None)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_statistics_text_states_the_method_and_the_flat_rule():
    flat = statistics_text(CurveRise(8, 0.01, (-0.02, 0.04)), seeds=3, methods=3)
    for phrase in ("paired bootstrap over seeds x test questions (2000 replicates", "Student-t 95% interval",
                   "Holm-corrected across the 3 methods compared to SFT at n (alpha 0.05)", "running max",
                   "interpolated piecewise log-linearly", "never extrapolated", "same bootstrap replicates",
                   f"every multiplier reads \"{FLAT}\"", "+0.010 [-0.020, +0.040]"):
        assert phrase in flat, phrase
    rising = statistics_text(CurveRise(8, 0.3, (0.2, 0.4)), seeds=5, methods=2)
    assert "it rises (interval above 0), so multipliers are defined" in rising and "Student-t" not in rising
    assert "no multiplier is defined" in statistics_text(None, seeds=1, methods=0)


def test_comparison_json_has_no_infinity():
    comparison = Comparison("step-dpo", 1, 0.8, (0.7, 0.9), 0.1, (0.05, 0.15), (0, 1), (0.1, 0.1), (0.1, 0.1),
                            0.001, 0.003, None, (4.0, math.inf), None, "beyond 8x (n.s. vs 8x) [4.0x, >8x]")
    document = json.loads(json.dumps(comparison.as_dict(), allow_nan=False))
    assert document["multiplier_ci"] == [4.0, None] and document["seed_differences"] == {"0": 0.1, "1": 0.1}
    assert (document["p_holm"], document["significant_holm"], document["policy"]) == (0.003, True, "step-dpo")


def test_the_teacher_section_gives_the_synthesize_stages_headline_figures():
    from negrl_operator.report.table import teacher_lines

    summary = {"requests": 1000, "generated": 4000, "generated_tokens": 96000, "tokens_per_s": 812.5,
               "acceptance_rate": 0.6125, "accepted": 2450, "line_errors": 31, "dsyn_records": 931,
               "duplicates": 7, "contaminated": 0, "cost_tokens": 150000}
    heading, text = teacher_lines(summary)
    assert heading == "\n## Teacher (synthesize stage)\n"
    assert text == ("1000 requests, 4000 solutions, 96000 generated tokens at 812.5 tokens/s; acceptance rate 0.613 "
                    "(2450 accepted, 31 more with a right answer refused for a wrong line); D_syn: 931 records; "
                    "7 duplicates and 0 contaminated dropped; cost 150000 tokens.\n")
    assert "refused" not in teacher_lines({**summary, "line_errors": 0})[1]
    assert teacher_lines(None) == [] and teacher_lines({}) == []
