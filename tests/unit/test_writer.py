"""What `negrl run` leaves at the end, on hand-made evaluation artifacts: results.json's comparison
keys, the SFT curve at its distinct examples and its rise test, and report.md's statistics text."""

import io
import json

from rich.console import Console

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.report.writer import PLOT, write_report

SPEC = {
    "model": {"name": "tiny", "scratch": {"hidden": 64}},
    "data": {"task": "sequence", "syntheticSize": 4, "prompt": {"template": "{question} ="},
             "source": {"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10}},
    "storage": {"claimName": "negrl-data"}, "seeds": [0, 1], "sweep": {"sftMultipliers": [2]},
}
QUESTIONS = ("q0", "q1", "q2", "q3")
RIGHT = {"sft": {"q0", "q1"}, "sft-x2": {"q0", "q1", "q2"}, "step-dpo": {"q0", "q1", "q2"}, "rft": {"q0", "q1"},
         "outcome-dpo": {"q0"}}


def evaluation(root, policy: str, seed: int) -> None:
    folder = root / "artifacts" / f"eval-{policy}-s{seed}"
    folder.mkdir(parents=True)
    records = [{"question_id": q, "greedy_correct": q in RIGHT[policy], "greedy_response": "1"} for q in QUESTIONS]
    (folder / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({"records": ["r.jsonl"], "summary": {}}))


def test_results_json_and_report_carry_the_statistics(tmp_path):
    for policy in RIGHT:
        for seed in (0, 1):
            evaluation(tmp_path, policy, seed)
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": SPEC})
    summaries = {f"eval-{policy}-s{seed}": {"pass_at_1": len(right) / 4} for policy, right in RIGHT.items()
                 for seed in (0, 1)}
    write_report(experiment, summaries, tmp_path, 60.0, Console(file=io.StringIO()))
    results = json.loads((tmp_path / "results.json").read_text())
    # SFT gains one question of 4 from n to 2x: the interval touches 0, so the curve is flat
    assert results["sft_rise"] == {"from": "sft@n", "to": "sft@2x", "difference": 0.25, "difference_ci": [0.0, 0.75],
                                   "verdict": "flat"}
    curve = [(p["multiplier"], p["distinct_examples"], p["accuracy"], p["monotone_accuracy"]) for p in results["sft_curve"]]
    assert curve == [(1, 4, 0.5, 0.5), (2, 8, 0.75, 0.75)]
    step = next(c for c in results["comparisons"] if c["method"] == "step-dpo")
    assert set(step) == {"method", "policy", "accuracy", "accuracy_ci", "difference", "difference_ci",
                         "seed_differences", "t_ci", "p_bootstrap", "p_holm", "significant_holm", "multiplier",
                         "multiplier_ci", "multiplier_undefined", "multiplier_label"}
    assert (step["difference"], step["seed_differences"], step["t_ci"]) == (0.25, {"0": 0.25, "1": 0.25}, [0.25, 0.25])
    assert (step["multiplier"], step["multiplier_ci"], step["multiplier_label"]) == (
        None, None, "undefined: SFT curve flat")
    report = (tmp_path / "report.md").read_text()
    assert "Holm-corrected across the 3 methods" in report and "so every multiplier reads" in report
    assert "| step-dpo | 0.750 ± 0.000 | - | 2 | +0.250 [+0.000, +0.750] | [+0.250, +0.250] | 1 (n.s.) | " \
           "undefined: SFT curve flat |" in report
    assert (tmp_path / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
