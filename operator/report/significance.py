"""Significance of a method's difference to SFT at n: the per-seed Student-t interval (for runs with
few seeds), the two-sided bootstrap p-value and Holm's step-down correction across methods. Pure
functions over plain numbers (standard library only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ALPHA = 0.05
FEW_SEEDS = 5  # below this, the report also shows the per-seed t interval beside the bootstrap

# 0.975 quantiles of Student's t for 1..30 degrees of freedom (scipy is not a dependency; the unit test
# checks every entry against a numerical integral of the t density).
T_975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
    2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
    2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
    2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
    2.045229642, 2.042272456,
)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; past 30 degrees of freedom the df-30 value, which only widens the interval."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 seeds), got df={df}")
    return T_975[min(df, len(T_975)) - 1]


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% Student-t interval of the mean of `values` (one per seed); None with fewer than 2 values."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def bootstrap_p_value(replicates: Sequence[float]) -> float:
    """Two-sided p-value of "the difference is 0" from its bootstrap replicates: twice the smaller share
    of replicates on either side of 0 (0 counting for both), floored at 1/replicates, capped at 1."""
    count = len(replicates)
    at_most = sum(1 for value in replicates if value <= 0.0) / count
    at_least = sum(1 for value in replicates if value >= 0.0) / count
    return min(1.0, max(2.0 * min(at_most, at_least), 1.0 / count))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the input's order: the i-th smallest (from 0) times (m - i), made
    non-decreasing in that order and capped at 1. Reject where the adjusted p < ALPHA."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
