import math

import pytest

from negrl_operator.report.estimate import (
    MethodSummary,
    PolicyResult,
    effective_multiplier,
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
