"""Each method against SFT at n, paired over the same bootstrap replicates of seeds x questions: the
difference of accuracy with its interval, the per-seed differences with a Student-t interval, the
two-sided bootstrap p-value with Holm's correction across the methods, and the effective data
multiplier. A multiplier exists only where SFT's own curve rises significantly from n to the largest
sweep point: on a flat curve no amount of SFT data is known to reach a gain, so none is invented."""

from __future__ import annotations

import math
from dataclasses import dataclass

from negrl_operator.report.estimate import (
    BOOTSTRAP_REPLICATES,
    BOOTSTRAP_SEED,
    Correctness,
    effective_multiplier,
    monotone,
    paired_with,
    policy_name,
    quantile_interval,
    replicate_means,
    resample_weights,
)
from negrl_operator.report.significance import ALPHA, bootstrap_p_value, holm, t_interval

FLAT = "undefined: SFT curve flat"
NO_SWEEP = "undefined: no SFT sweep point beyond n"
SFT_AT_N = ("sft", 1)


@dataclass(frozen=True)
class CurveRise:
    """SFT at the largest sweep point minus SFT at n, paired: the curve rises when the interval is above 0."""

    largest: int
    difference: float
    difference_ci: tuple[float, float]

    @property
    def rises(self) -> bool:
        return self.difference_ci[0] > 0.0

    def as_dict(self) -> dict:
        return {"from": policy_name("sft", 1), "to": policy_name("sft", self.largest), "difference": self.difference,
                "difference_ci": list(self.difference_ci), "verdict": "rises" if self.rises else "flat"}


@dataclass(frozen=True)
class Comparison:
    """One policy against SFT at n; `label` is what the table's multiplier column prints."""

    method: str
    policy_multiplier: int                    # the |D_syn| multiple the policy trained at (1: at n)
    accuracy: float
    accuracy_ci: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]        # bootstrap over seeds x questions
    seeds: tuple[int, ...]
    seed_differences: tuple[float, ...]       # per seed: accuracy minus SFT at n's, over all questions
    t_ci: tuple[float, float] | None          # Student-t over the per-seed differences; None with one seed
    p_value: float                            # two-sided bootstrap p
    p_holm: float                             # Holm-adjusted across the run's comparisons
    multiplier: float | None                  # None: undefined, or beyond the sweep
    multiplier_ci: tuple[float, float] | None
    undefined: str | None                     # why there is no multiplier (FLAT, NO_SWEEP)
    label: str

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    def as_dict(self) -> dict:
        return {
            "method": self.method, "policy": policy_name(self.method, self.policy_multiplier),
            "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "difference": self.difference, "difference_ci": list(self.difference_ci),
            "seed_differences": {str(seed): d for seed, d in zip(self.seeds, self.seed_differences, strict=True)},
            "t_ci": None if self.t_ci is None else list(self.t_ci),
            "p_bootstrap": self.p_value, "p_holm": self.p_holm, "significant_holm": self.significant,
            "multiplier": self.multiplier,
            "multiplier_ci": None if self.multiplier_ci is None else [_finite(v) for v in self.multiplier_ci],
            "multiplier_undefined": self.undefined, "multiplier_label": self.label,
        }


def _finite(value: float) -> float | None:
    """JSON has no infinity: null stands for "past the largest sweep point"."""
    return value if math.isfinite(value) else None


def multiplier_label(undefined: str | None, significant: bool, difference: float, beats_largest: bool,
                     multiplier: float | None, multiplier_ci: tuple[float, float] | None, largest: int) -> str:
    """The undefined reason when SFT's curve gives no multiplier; else `n.s.` unless the Holm-corrected
    difference is significant, `< 1x` when significantly worse, `> {largest}x` when the method also beats
    SFT at the largest point significantly, else the interpolated multiplier and its interval."""
    if undefined is not None:
        return undefined
    if not significant:
        return "n.s."
    if difference < 0.0:
        return "< 1x"
    if beats_largest:
        return f"> {largest}x"
    low, high = (f"{value:.1f}x" if math.isfinite(value) else f">{largest}x" for value in multiplier_ci)
    if multiplier is None:  # past the sweep's best accuracy, but not significantly past it
        return f"beyond {largest}x (n.s. vs {largest}x) [{low}, {high}]"
    return f"{multiplier:.1f}x [{low}, {high}]"


@dataclass(frozen=True)
class _Paired:
    """Every policy's table aligned on SFT at n's seeds and questions, and its mean in each replicate."""

    policies: dict[tuple[str, int], Correctness]
    means: dict[tuple[str, int], object]      # numpy arrays, one value per replicate
    points: dict[tuple[str, int], float]
    sweep: list[int]                          # SFT multipliers, ascending

    def curve(self, replicate: int | None = None) -> list[tuple[int, float]]:
        """SFT's monotone curve on the point estimates (None) or in one replicate."""
        return monotone([(k, self.points[("sft", k)] if replicate is None else float(self.means[("sft", k)][replicate]))
                         for k in self.sweep])


def _paired(policies: list[Correctness], replicates: int, seed: int) -> _Paired | None:
    import numpy as np

    reference = next((p for p in policies if (p.method, p.multiplier) == SFT_AT_N), None)
    if reference is None:
        return None
    aligned = {(p.method, p.multiplier): paired_with(reference, p) for p in policies}
    rng = np.random.default_rng(seed)
    seed_weights = resample_weights(rng, len(reference.seeds), replicates)
    question_weights = resample_weights(rng, len(reference.questions), replicates)
    means = {key: replicate_means(p.table, seed_weights, question_weights) for key, p in aligned.items()}
    points = {key: float(np.mean(np.asarray(p.table, dtype=float))) for key, p in aligned.items()}
    return _Paired(aligned, means, points, sorted(k for method, k in aligned if method == "sft"))


def _rise(paired: _Paired) -> CurveRise | None:
    largest = paired.sweep[-1]
    if largest == 1:
        return None
    replicates = paired.means[("sft", largest)] - paired.means[SFT_AT_N]
    return CurveRise(largest, paired.points[("sft", largest)] - paired.points[SFT_AT_N], quantile_interval(replicates))


def curve_rise(policies: list[Correctness], replicates: int = BOOTSTRAP_REPLICATES,
               seed: int = BOOTSTRAP_SEED) -> CurveRise | None:
    """Whether SFT's curve rises from n to its largest point (the same replicates as `compare_to_sft`);
    None without SFT at n or without a sweep point beyond it."""
    paired = _paired(policies, replicates, seed)
    return None if paired is None else _rise(paired)


def seed_differences(policy: Correctness, reference: Correctness) -> tuple[float, ...]:
    """Per seed: the policy's accuracy over all questions minus the reference's on the same seed."""
    return tuple(sum(row) / len(row) - sum(base) / len(base) for row, base in zip(policy.table, reference.table,
                                                                                  strict=True))


def compare_to_sft(policies: list[Correctness], replicates: int = BOOTSTRAP_REPLICATES,
                   seed: int = BOOTSTRAP_SEED) -> list[Comparison]:
    """Every non-SFT policy against SFT at n, paired over the same resampled seeds and questions, with
    Holm's correction across them. [] without SFT at n; ReportError when a policy does not pair."""
    paired = _paired(policies, replicates, seed)
    if paired is None:
        return []
    rise = _rise(paired)
    keys = [key for key in paired.policies if key[0] != "sft"]
    raw = [bootstrap_p_value(paired.means[key] - paired.means[SFT_AT_N]) for key in keys]
    return [_compare(paired, key, rise, p, adjusted) for key, p, adjusted in zip(keys, raw, holm(raw), strict=True)]


def _compare(paired: _Paired, key: tuple[str, int], rise: CurveRise | None, p_value: float,
             p_holm: float) -> Comparison:
    policy, reference = paired.policies[key], paired.policies[SFT_AT_N]
    differences = seed_differences(policy, reference)
    difference = paired.points[key] - paired.points[SFT_AT_N]
    undefined = NO_SWEEP if rise is None else None if rise.rises else FLAT
    multiplier, multiplier_ci, beats = None, None, False
    if undefined is None:
        count = len(paired.means[key])
        replicate_multipliers = [effective_multiplier(paired.curve(b), float(paired.means[key][b])) for b in range(count)]
        point = effective_multiplier(paired.curve(), paired.points[key])
        multiplier = point if math.isfinite(point) else None
        multiplier_ci = quantile_interval(replicate_multipliers)
        beats = quantile_interval(paired.means[key] - paired.means[("sft", rise.largest)])[0] > 0.0
    label = multiplier_label(undefined, p_holm < ALPHA, difference, beats, multiplier, multiplier_ci,
                             paired.sweep[-1])
    return Comparison(
        policy.method, policy.multiplier, paired.points[key], quantile_interval(paired.means[key]), difference,
        quantile_interval(paired.means[key] - paired.means[SFT_AT_N]), policy.seeds, differences,
        t_interval(differences), p_value, p_holm, multiplier, multiplier_ci, undefined, label)
