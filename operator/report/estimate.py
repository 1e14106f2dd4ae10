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


# --- Paired bootstrap over seeds x test questions -------------------------------------------------

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Correctness:
    """Greedy correctness of one policy: `table[i][j]` for seed `seeds[i]` and question `questions[j]`.
    Every policy of a comparison shares the seeds and the questions (that is what makes it paired)."""

    method: str
    multiplier: int
    seeds: tuple[int, ...]
    questions: tuple[str, ...]
    table: tuple[tuple[bool, ...], ...]


@dataclass(frozen=True)
class Comparison:
    """A method against SFT at n: the difference of mean accuracy with its 95% CI, the effective data
    multiplier with its CI, and the label the table prints."""

    method: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]
    multiplier: float | None
    multiplier_ci: tuple[float, float]
    label: str


def resample_weights(rng, count: int, replicates: int):
    """How often each of `count` items is drawn in each replicate (replicates x count), numpy."""
    import numpy as np

    draws = rng.integers(0, count, size=(replicates, count))
    return np.stack([np.bincount(row, minlength=count) for row in draws])


def replicate_means(table, seed_weights, question_weights):
    """Mean accuracy of a (seeds x questions) 0/1 table in every replicate: the mean over the drawn
    (seed, question) cells, i.e. sum_ij ws_i * wq_j * x_ij / (S * Q)."""
    import numpy as np

    table = np.asarray(table, dtype=float)
    seeds, questions = table.shape
    return np.einsum("bi,ij,bj->b", seed_weights, table, question_weights) / (seeds * questions)


def quantile_interval(values) -> tuple[float, float]:
    """The 2.5% and 97.5% points (no interpolation, so infinities stay infinities)."""
    import numpy as np

    low, high = np.quantile(np.asarray(values, dtype=float), [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def multiplier_label(difference_ci: tuple[float, float], beats_largest: bool, multiplier: float | None,
                     multiplier_ci: tuple[float, float], largest: int) -> str:
    """`n.s.` when the difference to SFT at n is not significant, `< 1x` when it is significantly
    negative, `> {largest}x` when the method beats SFT at n and the largest sweep point significantly,
    else the multiplier and its CI."""
    if difference_ci[0] <= 0.0 <= difference_ci[1]:
        return "n.s."
    if difference_ci[1] < 0.0:  # significantly worse than SFT at n, whatever the curve does later
        return "< 1x"
    if beats_largest:
        return f"> {largest}x"
    if multiplier is None:  # past the sweep's best, but not significantly
        return f"beyond {largest}x (n.s. vs {largest}x)"
    low, high = (f"{value:.1f}x" if math.isfinite(value) else f">{largest}x" for value in multiplier_ci)
    return f"{multiplier:.1f}x [{low}, {high}]"


def _curve_multiplier(sweep: dict[int, float], accuracy: float) -> float:
    """The effective multiplier on the monotone SFT curve; inf beyond the sweep."""
    points = [MethodSummary("sft", multiplier, mean, 0.0, 1, None) for multiplier, mean in sweep.items()]
    value, _ = effective_multiplier(sft_curve(points), accuracy)
    return math.inf if value is None else value


def compare_to_sft(policies: list[Correctness], replicates: int = BOOTSTRAP_REPLICATES,
                   seed: int = BOOTSTRAP_SEED) -> list[Comparison]:
    """Every non-SFT policy against SFT at 1x, paired over the same resampled seeds and questions."""
    import numpy as np

    sft = {p.multiplier: p for p in policies if p.method == "sft"}
    if 1 not in sft:
        return []
    shape = (sft[1].seeds, sft[1].questions)
    usable = [p for p in policies if (p.seeds, p.questions) == shape]
    rng = np.random.default_rng(seed)
    seed_weights = resample_weights(rng, len(shape[0]), replicates)
    question_weights = resample_weights(rng, len(shape[1]), replicates)
    means = {(p.method, p.multiplier): replicate_means(p.table, seed_weights, question_weights) for p in usable}
    points = {(p.method, p.multiplier): float(np.mean(np.asarray(p.table, dtype=float))) for p in usable}
    sweep_keys = sorted(k for (m, k) in means if m == "sft")
    largest = sweep_keys[-1]
    comparisons = []
    for policy in usable:
        if policy.method == "sft":
            continue
        key = (policy.method, policy.multiplier)
        difference = means[key] - means[("sft", 1)]
        multipliers = [
            _curve_multiplier({k: float(means[("sft", k)][b]) for k in sweep_keys}, float(means[key][b]))
            for b in range(replicates)
        ]
        point = _curve_multiplier({k: points[("sft", k)] for k in sweep_keys}, points[key])
        beats = quantile_interval(means[key] - means[("sft", largest)])[0] > 0.0
        difference_ci, multiplier_ci = quantile_interval(difference), quantile_interval(multipliers)
        comparisons.append(Comparison(
            policy.method, points[key], quantile_interval(means[key]), points[key] - points[("sft", 1)],
            difference_ci, None if math.isinf(point) else point, multiplier_ci,
            multiplier_label(difference_ci, beats and largest > 1, None if math.isinf(point) else point,
                             multiplier_ci, largest),
        ))
    return comparisons


def accuracy_intervals(policies: list[Correctness], replicates: int = BOOTSTRAP_REPLICATES,
                       seed: int = BOOTSTRAP_SEED) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(method, multiplier) -> (mean accuracy, 2.5%, 97.5%) from a bootstrap over each policy's own
    seeds x questions (the SFT curve's band in the plot)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    intervals = {}
    for policy in policies:
        seed_weights = resample_weights(rng, len(policy.seeds), replicates)
        question_weights = resample_weights(rng, len(policy.questions), replicates)
        means = replicate_means(policy.table, seed_weights, question_weights)
        point = float(np.mean(np.asarray(policy.table, dtype=float)))
        intervals[(policy.method, policy.multiplier)] = (point, *quantile_interval(means))
    return intervals


def correctness_tables(evaluations: list[tuple[str, int, int, dict[str, bool]]]) -> list[Correctness]:
    """(method, multiplier, seed, {question: greedy correct}) per evaluated policy -> one table per
    (method, multiplier) over its seeds and the questions every one of its seeds answered."""
    groups: dict[tuple[str, int], dict[int, dict[str, bool]]] = {}
    for method, multiplier, seed, answers in evaluations:
        groups.setdefault((method, multiplier), {})[seed] = answers
    tables = []
    for (method, multiplier), by_seed in groups.items():
        seeds = tuple(sorted(by_seed))
        questions = tuple(sorted(set.intersection(*(set(by_seed[s]) for s in seeds))))
        table = tuple(tuple(bool(by_seed[s][q]) for q in questions) for s in seeds)
        tables.append(Correctness(method, multiplier, seeds, questions, table))
    return tables
