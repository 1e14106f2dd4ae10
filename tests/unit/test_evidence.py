"""The report's evidence from a run's artifact folders: per-question correctness paired across
seeds, and per-seed regime diagnostics, on hand-made artifacts."""

import json

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.report.evidence import gather, science_markdown

SPEC = {
    "model": {"name": "tiny", "scratch": {"hidden": 64}},
    "data": {"task": "sequence", "syntheticSize": 4, "prompt": {"template": "{question} ="},
             "source": {"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10}},
    "stages": {"eval": {"trainQuestions": 2}},
    "storage": {"claimName": "negrl-data"}, "seeds": [0, 1], "sweep": {"sftMultipliers": [2], "sftSteps": 10},
}
ANSWERS = {"q0": "1 2 3", "q1": "4 5 6", "q2": "7 8 9", "q3": "1 5 9"}


def stage(root, name, records):
    folder = root / "artifacts" / name
    folder.mkdir(parents=True)
    (folder / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({"records": ["r.jsonl"], "summary": {}}))


def evaluated(right: set[str], first_move: set[str] = frozenset()):
    """Greedy responses: the answer for `right`, the right first move then a wrong node for `first_move`."""
    def response(qid):
        answer = ANSWERS[qid].split()
        if qid in right:
            return " ".join(answer)
        return " ".join(answer[:2] + ["0"]) if qid in first_move else " ".join([answer[0], "0", "0"])
    return [{"question_id": q, "greedy_correct": q in right, "greedy_response": response(q)} for q in ANSWERS]


def test_gather_pairs_evaluations_and_diagnoses_each_seed(tmp_path):
    prepare = tmp_path / "artifacts" / "prepare"
    prepare.mkdir(parents=True)
    for split in ("test", "train"):
        (prepare / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": q, "question": "?", "answer": a}) + "\n" for q, a in ANSWERS.items()))
    for seed in (0, 1):
        stage(tmp_path, f"eval-sft-s{seed}", evaluated({"q0", "q1"}, {"q2"}))  # first move 3/4, then 2/3
        stage(tmp_path, f"eval-sft-x2-s{seed}", evaluated({"q0", "q1", "q2"}))
        stage(tmp_path, f"eval-step-dpo-s{seed}", evaluated({"q0", "q1", "q2"}))
        stage(tmp_path, f"eval-rft-s{seed}", evaluated({"q0", "q1"}))
        stage(tmp_path, f"eval-outcome-dpo-s{seed}", evaluated({"q0"}))
        stage(tmp_path, f"eval-train-sft-s{seed}", evaluated({"q0", "q1", "q2", "q3"}))
        stage(tmp_path, f"credit-s{seed}", [
            {"pit": 2, "steps": ["1", " 0", " 0"], "finished": True, "rollouts": 6, "generated_tokens": 12},
            {"pit": None, "steps": ["1", " 0"], "finished": True, "rollouts": 0, "generated_tokens": 0}])
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": SPEC})
    summaries = {"step-pairs-s0": {"step": 1, "outcome": 1}, "step-dpo-s0": {"steps": 3},
                 "outcome-dpo-s0": {"steps": 3}, "sft-s0": {"steps": 10}, "sft-x2-s1": {"steps": 10}}
    evidence = gather(experiment, tmp_path, summaries)
    by_method = {c.method: c for c in evidence.comparisons}
    assert set(by_method) == {"rft", "outcome-dpo", "step-dpo"}
    assert by_method["step-dpo"].difference == 0.25 and by_method["step-dpo"].multiplier == 2.0
    assert by_method["rft"].label == "n.s." and by_method["outcome-dpo"].difference == -0.25
    seed0 = evidence.seeds[0]
    assert (seed0["test_accuracy"], seed0["first_move"], seed0["given_first_move"], seed0["train_accuracy"]) == (
        0.5, 0.75, 0.667, 1.0)
    assert (seed0["negatives"], seed0["usable_pit_share"], seed0["pit_histogram"]) == (2, 0.5, {"2": 1})
    assert (seed0["pairs"], seed0["dpo_steps"], seed0["rollouts_per_negative"]) == ("1/1", "3/3", 3.0)
    gates = {g["gate"].split(":")[0]: g["pass"] for g in evidence.gates}
    assert gates == {"edge-following": False, "first move near chance": False, "no memorisation": False,
                     "negatives with a usable pit": True}
    text = "".join(science_markdown(evidence, experiment.spec))
    assert "compute-matched: every SFT ran 10 optimizer steps" in text and "| 1 | 0.5 | 0.75 |" in text
