"""Estimates from a run's evaluations: accuracy per method over seeds, SFT's accuracy curve over
|D_syn| and each method's effective data multiplier on it. Pure functions over plain values."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

METHOD_ORDER = ("base", "sft", "rft", "outcome-dpo", "step-dpo")


@dataclass(frozen=True)
class PolicyResult:
    method: str          # sft, rft, outcome-dpo, step-dpo, base
    multiplier: int      # |D_syn| multiple the policy was trained at (SFT sweep), 1 otherwise
    seed: int
    accuracy: float      # greedy pass@1 on the test split
    pass_at_k: float | None = None


@dataclass(frozen=True)
class MethodSummary:
    method: str
    multiplier: int
    mean: float
    std: float
    seeds: int
    pass_at_k: float | None


def summarise(results: list[PolicyResult]) -> list[MethodSummary]:
    groups: dict[tuple[str, int], list[PolicyResult]] = {}
    for result in results:
        groups.setdefault((result.method, result.multiplier), []).append(result)
    summaries = []
    for (method, multiplier), group in groups.items():
        accuracies = [r.accuracy for r in group]
        at_k = [r.pass_at_k for r in group if r.pass_at_k is not None]
        summaries.append(MethodSummary(
            method, multiplier, statistics.fmean(accuracies),
            statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0, len(group),
            statistics.fmean(at_k) if at_k else None,
        ))
    rank = {method: index for index, method in enumerate(METHOD_ORDER)}
    return sorted(summaries, key=lambda s: (rank.get(s.method, len(rank)), s.multiplier))


def sft_curve(summaries: list[MethodSummary]) -> list[tuple[int, float]]:
    """SFT's mean accuracy by |D_syn| multiple, made non-decreasing (more data never counts as worse)."""
    points = sorted((s.multiplier, s.mean) for s in summaries if s.method == "sft")
    curve, best = [], -math.inf
    for multiplier, accuracy in points:
        best = max(best, accuracy)
        curve.append((multiplier, best))
    return curve


def effective_multiplier(curve: list[tuple[int, float]], accuracy: float) -> tuple[float | None, str]:
    """How much more SFT data reaches `accuracy`, interpolated on a log scale of |D_syn|.

    Returns (value, label): the label is "> 8x" beyond the sweep and "<= 1x" at or below SFT at 1x."""
    if not curve:
        return None, "n/a"
    first_multiplier, first_accuracy = curve[0]
    if accuracy <= first_accuracy:
        return float(first_multiplier), f"<= {first_multiplier}x"
    for (k0, a0), (k1, a1) in zip(curve, curve[1:], strict=False):
        if a0 < accuracy <= a1:
            fraction = (accuracy - a0) / (a1 - a0)
            value = math.exp(math.log(k0) + fraction * (math.log(k1) - math.log(k0)))
            return value, f"{value:.1f}x"
    return None, f"> {curve[-1][0]}x"
