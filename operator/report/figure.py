"""The plot of a run, in the paper's style: test error against |D_syn| on log-log axes. SFT is a
curve with its 95% bootstrap band, every other method a point at n with its interval, annotated with
its effective data multiplier (matplotlib, written to a PNG file)."""

from __future__ import annotations

from negrl_operator.report.estimate import Comparison, MethodSummary

MARKERS = {"rft": "s", "outcome-dpo": "v", "step-dpo": "*", "base": "x"}


def write_plot(summaries: list[MethodSummary], base_size: int | None, path,
               intervals: dict[tuple[str, int], tuple[float, float, float]] | None = None,
               comparisons: list[Comparison] | None = None) -> None:
    """`intervals`: (method, multiplier) -> (accuracy, low, high); without them, ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, intervals = base_size or 1, intervals or {}
    labels = {c.method: c.label for c in comparisons or []}

    def error_band(summary: MethodSummary) -> tuple[float, float, float]:
        """(error, error at the interval's high accuracy, error at its low accuracy), floored for log axes."""
        mean, low, high = intervals.get((summary.method, summary.multiplier),
                                        (summary.mean, summary.mean - summary.std, summary.mean + summary.std))
        return tuple(max(1.0 - value, 1e-3) for value in (mean, high, low))

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    sft = sorted((s for s in summaries if s.method == "sft"), key=lambda s: s.multiplier)
    xs = [s.multiplier * size for s in sft]
    bands = [error_band(s) for s in sft]
    axes.plot(xs, [b[0] for b in bands], marker="o", label="SFT")
    axes.fill_between(xs, [b[1] for b in bands], [b[2] for b in bands], alpha=0.2, label="SFT 95% CI")
    others = [s for s in summaries if s.method != "sft"]
    for index, summary in enumerate(others):
        nudge = 1.0 + 0.06 * (index - (len(others) - 1) / 2)  # keep markers at the same size apart
        error, low, high = error_band(summary)
        x = summary.multiplier * size * nudge
        axes.errorbar([x], [error], yerr=[[error - low], [high - error]], capsize=3, linestyle="none",
                      marker=MARKERS.get(summary.method, "D"), markersize=9, label=summary.method)
        if summary.method in labels:
            axes.annotate(labels[summary.method], (x, error), textcoords="offset points", xytext=(6, 4), fontsize=7)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("|D_syn| (synthetic SFT questions)" if base_size else "|D_syn| multiple")
    axes.set_ylabel("test error (1 - greedy pass@1)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
