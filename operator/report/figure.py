"""The plot of a run, in the paper's style: test error against distinct |D_syn| examples on log-log
axes. SFT is a curve with its 95% bootstrap band (and, dashed, the monotone curve multipliers are
interpolated on); every other method a point at n with its interval, its legend entry carrying its
multiplier label. The title says whether SFT's curve rises; on a flat one, multipliers are undefined."""

from __future__ import annotations

from negrl_operator.report.comparison import Comparison, CurveRise
from negrl_operator.report.estimate import CurvePoint, MethodSummary

MARKERS = {"rft": "s", "outcome-dpo": "v", "step-dpo": "*", "base": "x"}
FLOOR = 1e-3  # log axes: an error of 0 is drawn at this floor


def _error(accuracy: float) -> float:
    return max(1.0 - accuracy, FLOOR)


def plot_title(rise: CurveRise | None) -> str:
    if rise is None:
        return "no SFT sweep beyond n: multipliers undefined"
    low, high = rise.difference_ci
    change = f"SFT@{rise.largest}x - SFT@n = {rise.difference:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"SFT curve rises: {change}" if rise.rises else f"SFT curve flat: multipliers undefined\n{change}"


def _x(curve: list[CurvePoint], multiplier: int) -> float:
    """Where a policy trained at `multiplier` x |D_syn| sits on the x axis (distinct examples)."""
    by_multiplier = {p.multiplier: p for p in curve}
    if multiplier in by_multiplier and by_multiplier[multiplier].distinct_examples is not None:
        return float(by_multiplier[multiplier].distinct_examples)
    base = by_multiplier.get(1)
    return float(multiplier * (base.distinct_examples if base and base.distinct_examples else 1))


def write_plot(path, summaries: list[MethodSummary], curve: list[CurvePoint],
               comparisons: list[Comparison] | None = None, rise: CurveRise | None = None) -> None:
    """Methods with a comparison are drawn with its bootstrap interval; others (base) with ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    xs = [_x(curve, p.multiplier) for p in curve]
    axes.plot(xs, [_error(p.accuracy) for p in curve], marker="o", color="tab:blue", label="SFT")
    axes.fill_between(xs, [_error(p.high) for p in curve], [_error(p.low) for p in curve], color="tab:blue",
                      alpha=0.2, label="SFT 95% CI")
    axes.plot(xs, [_error(p.monotone_accuracy) for p in curve], linestyle="--", color="tab:blue", alpha=0.6,
              linewidth=1, label="SFT monotone (interpolated)")
    by_policy = {(c.method, c.policy_multiplier): c for c in comparisons or []}
    others = [s for s in summaries if s.method != "sft"]
    for index, summary in enumerate(others):
        nudge = 1.0 + 0.06 * (index - (len(others) - 1) / 2)  # keep markers at the same size apart
        comparison = by_policy.get((summary.method, summary.multiplier))
        accuracy, low, high = ((comparison.accuracy, *comparison.accuracy_ci) if comparison else
                               (summary.mean, summary.mean - summary.std, summary.mean + summary.std))
        x, error = _x(curve, summary.multiplier) * nudge, _error(accuracy)
        # the multiplier label goes in the legend entry: methods at n sit too close for text beside them
        label = summary.method if comparison is None else f"{summary.method}: {comparison.label}"
        axes.errorbar([x], [error], yerr=[[error - _error(high)], [_error(low) - error]], capsize=3,
                      linestyle="none", marker=MARKERS.get(summary.method, "D"), markersize=9, label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    if xs:  # ticks at the sweep points themselves (distinct examples are rarely powers of anything)
        axes.set_xticks(xs, [f"{x:,.0f}" for x in xs])
        axes.xaxis.set_minor_locator(ticker.NullLocator())
    distinct = bool(curve) and all(p.distinct_examples is not None for p in curve)
    axes.set_xlabel("distinct |D_syn| examples seen by SFT" if distinct else "|D_syn| multiple")
    axes.set_ylabel("test error (1 - greedy pass@1)")
    axes.set_title(plot_title(rise), fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
