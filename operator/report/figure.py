"""The plot of a run: test accuracy against |D_syn| (matplotlib, written to a PNG file)."""

from __future__ import annotations

from negrl_operator.report.estimate import MethodSummary


def write_plot(summaries: list[MethodSummary], base_size: int | None, path) -> None:
    """Test accuracy vs |D_syn| for SFT (error bars over seeds), other methods marked at their size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = base_size or 1
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    sft = [s for s in summaries if s.method == "sft"]
    axes.errorbar([s.multiplier * size for s in sft], [s.mean for s in sft], yerr=[s.std for s in sft],
                  marker="o", capsize=3, label="SFT")
    markers = {"rft": "s", "outcome-dpo": "v", "step-dpo": "*", "base": "x"}
    others = [s for s in summaries if s.method != "sft"]
    for index, summary in enumerate(others):
        nudge = 1.0 + 0.05 * (index - (len(others) - 1) / 2)  # keep markers at the same size apart
        axes.errorbar([summary.multiplier * size * nudge], [summary.mean], yerr=[summary.std], capsize=3,
                      linestyle="none", marker=markers.get(summary.method, "D"), markersize=9, label=summary.method)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("|D_syn| (synthetic SFT questions)" if base_size else "|D_syn| multiple")
    axes.set_ylabel("test accuracy (greedy pass@1)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
