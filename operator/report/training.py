"""Training health in the run report: every training stage's curves, and a collapse flag for DPO.

DPO can lower the likelihood of both sides while it widens their margin ("collapse"): the chosen
log-prob falling is the sign to look for, as the margin alone looks healthy. A stage is flagged
when its chosen log-prob (mean over pairs of the summed sequence log-prob, train_log.jsonl's
`chosen_logp`) ends more than `threshold` nats below where it started, or more than
`per_token_threshold` nats per chosen token: a short answer (a star-graph path of 6 tokens) can lose
most of its probability in under 5 nats. Start and end are means over the first and last tenth of
the steps, so one noisy step neither raises nor hides a flag; the tokens per chosen answer come from
the first tenth (`chosen_logp` / `chosen_nll`, the per-token mean).
Pure computation, plus the loader and the plot (the report writer's I/O).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from negrl_operator.api.artifact import TRAIN_LOG

COLLAPSE_THRESHOLD_NATS = 5.0
COLLAPSE_THRESHOLD_PER_TOKEN = 0.25  # nats: each chosen token e^-0.25 = 78% as likely as before
PLOT = "training_curves.png"


@dataclass(frozen=True)
class Collapse:
    stage: str
    chosen_start: float
    chosen_end: float
    rejected_start: float | None
    rejected_end: float | None
    threshold: float
    tokens: float | None = None  # chosen tokens per pair; None where the log has no chosen_nll
    per_token_threshold: float = COLLAPSE_THRESHOLD_PER_TOKEN

    @property
    def drop(self) -> float:
        return self.chosen_start - self.chosen_end

    @property
    def drop_per_token(self) -> float | None:
        return self.drop / self.tokens if self.tokens else None

    @property
    def collapsed(self) -> bool:
        per_token = self.drop_per_token
        return self.drop > self.threshold or (per_token is not None and per_token > self.per_token_threshold)

    def as_dict(self) -> dict:
        per_token = self.drop_per_token
        return {**asdict(self), "drop": round(self.drop, 4),
                "drop_per_token": None if per_token is None else round(per_token, 4), "collapsed": self.collapsed}


def parse_train_log(text: str) -> list[dict]:
    """train_log.jsonl's records (a torn last line, from a killed run, is left out)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def window_mean(values: list[float], last: bool) -> float:
    size = max(1, len(values) // 10)
    part = values[-size:] if last else values[:size]
    return sum(part) / len(part)


def collapse_check(stage: str, records: list[dict], threshold: float = COLLAPSE_THRESHOLD_NATS) -> Collapse | None:
    """The DPO health of one stage; None for a stage without chosen log-probs (SFT, RFT)."""
    chosen = [r["chosen_logp"] for r in records if r.get("chosen_logp") is not None]
    if not chosen:
        return None
    rejected = [r["rejected_logp"] for r in records if r.get("rejected_logp") is not None]
    lengths = [-r["chosen_logp"] / r["chosen_nll"] for r in records
               if r.get("chosen_logp") is not None and r.get("chosen_nll")]
    return Collapse(stage, window_mean(chosen, False), window_mean(chosen, True),
                    window_mean(rejected, False) if rejected else None,
                    window_mean(rejected, True) if rejected else None, threshold,
                    window_mean(lengths, False) if lengths else None)


def health(curves: dict[str, list[dict]], threshold: float = COLLAPSE_THRESHOLD_NATS) -> list[Collapse]:
    checks = (collapse_check(stage, records, threshold) for stage, records in sorted(curves.items()))
    return [check for check in checks if check is not None]


def markdown_lines(checks: list[Collapse], plot: str | None) -> list[str]:
    """The report's section: the plot and one line per DPO stage."""
    lines = ["\n## Training curves\n"]
    if plot:
        lines.append(f"![training curves]({plot})\n")
    for check in checks:
        per_token = "" if check.drop_per_token is None else f", {-check.drop_per_token:+.2f} per token"
        limits = f"{check.threshold:g} nats" + ("" if check.tokens is None else f", {check.per_token_threshold:g} per token")
        verdict = (f"**COLLAPSE**: chosen log-prob changed by {-check.drop:+.2f} nats{per_token} (limits: {limits})"
                   if check.collapsed else f"healthy: chosen log-prob changed by {-check.drop:+.2f} nats{per_token}")
        rejected = (f", rejected {check.rejected_start:.2f} -> {check.rejected_end:.2f}"
                    if check.rejected_start is not None else "")
        lines.append(f"- {check.stage}: {verdict} (chosen {check.chosen_start:.2f} -> {check.chosen_end:.2f}"
                     f"{rejected})")
    return lines


def load_curves(artifacts: Path, stages: list[str]) -> dict[str, list[dict]]:
    """train_log.jsonl of each named training stage that has one."""
    paths = {stage: artifacts / stage / TRAIN_LOG for stage in stages}
    return {stage: parse_train_log(path.read_text()) for stage, path in paths.items() if path.exists()}


def write_training_plot(curves: dict[str, list[dict]], path: Path) -> bool:
    """Loss of every training stage; DPO stages' chosen and rejected log-probs and reward margin.
    One line per stage (method and seed are in its name). False when there is nothing to draw."""
    if not any(curves.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpo = {stage: records for stage, records in curves.items() if any("chosen_logp" in r for r in records)}
    panels = 3 if dpo else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    loss, *rest = axes[0]
    colours = {stage: f"C{index % 10}" for index, stage in enumerate(sorted(curves))}  # one per stage, every panel
    for stage, records in sorted(curves.items()):
        loss.plot([r["step"] for r in records], [r["loss"] for r in records], color=colours[stage], label=stage)
    loss.set(title="loss", xlabel="step")
    loss.legend(fontsize="x-small")
    if dpo:
        logp, margin = rest
        for stage, records in sorted(dpo.items()):
            steps, colour = [r["step"] for r in records], colours[stage]
            logp.plot(steps, [r["chosen_logp"] for r in records], color=colour, label=f"{stage} chosen")
            logp.plot(steps, [r["rejected_logp"] for r in records], color=colour, linestyle="--",
                      label=f"{stage} rejected")
            margin.plot(steps, [r["reward_margin"] for r in records], color=colour, label=stage)
        logp.set(title="DPO log-prob (chosen solid, rejected dashed)", xlabel="step")
        margin.set(title="DPO reward margin", xlabel="step")
        logp.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
