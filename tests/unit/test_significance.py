"""The report's significance arithmetic on hand-worked numbers: Student-t quantiles (checked against a
numerical integral of the t density), the per-seed t interval, the bootstrap p-value and Holm."""

import math

import pytest

from negrl_operator.report.significance import T_975, bootstrap_p_value, holm, t_interval, t_quantile_975


def t_cdf(x: float, df: int, steps: int = 20000) -> float:
    """P(T <= x) for x > 0: 1/2 plus Simpson's rule over the t density on [0, x]."""
    constant = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(t):
        return constant * (1 + t * t / df) ** (-(df + 1) / 2)

    h = x / steps
    total = density(0) + density(x) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("df", range(1, 31))
def test_every_tabulated_t_quantile_has_cdf_0_975(df):
    assert t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=2e-6)


def test_t_quantiles_in_closed_form_and_past_the_table():
    assert t_quantile_975(1) == pytest.approx(math.tan(0.475 * math.pi), abs=1e-8)           # Cauchy
    assert t_quantile_975(2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), abs=1e-8)  # (2p-1)/sqrt(2p(1-p))
    assert t_quantile_975(100) == T_975[29]  # the df-30 value: wider than the exact one, never narrower
    with pytest.raises(ValueError, match="at least 1 degree of freedom"):
        t_quantile_975(0)


def test_t_interval_of_three_per_seed_differences():
    # mean 0.2, sd 0.1, se 0.1/sqrt(3) = 0.0577350; half-width 4.3026527 * 0.0577350 = 0.2484138
    low, high = t_interval([0.1, 0.2, 0.3])
    assert (low, high) == (pytest.approx(-0.0484138, abs=1e-7), pytest.approx(0.4484138, abs=1e-7))
    assert t_interval([0.25, 0.25]) == (0.25, 0.25)
    assert t_interval([0.1]) is None


@pytest.mark.parametrize(("replicates", "p"), [
    ([1.0, 2.0, 3.0, -1.0], 0.5),    # 1 of 4 at or below 0
    ([0.0, 1.0, 2.0, 3.0], 0.5),     # 0 counts on both sides
    ([0.0, 0.0, 0.0], 1.0),          # no difference at all: capped at 1
    ([1.0, 1.0, 1.0, 1.0], 0.25),    # every replicate positive: floored at 1/replicates
    ([-1.0] * 9 + [1.0], 0.2),
])
def test_bootstrap_p_value(replicates, p):
    assert bootstrap_p_value(replicates) == pytest.approx(p)


@pytest.mark.parametrize(("p_values", "adjusted"), [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # 3 x 0.01; 2 x 0.03; max(0.06, 1 x 0.04)
    ([0.5, 0.01], [0.5, 0.02]),
    ([0.6, 0.7], [1.0, 1.0]),                  # capped at 1, then kept non-decreasing
    ([0.02], [0.02]),
    ([], []),
])
def test_holm(p_values, adjusted):
    assert holm(p_values) == pytest.approx(adjusted)
