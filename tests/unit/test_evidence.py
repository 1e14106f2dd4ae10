"""The report's evidence from a run's artifact folders: per-question correctness paired across
seeds, and per-seed regime diagnostics, on hand-made artifacts."""

import json

import pytest

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.report.estimate import ReportError
from negrl_operator.report.evidence import gather, science_json, science_markdown
from negrl_operator.report.training import Collapse
from negrl_sampler.arithmetic import Event, Problem, render_question

SPEC = {
    "model": {"name": "tiny", "scratch": {"hidden": 64}},
    "data": {"task": "sequence", "syntheticSize": 4, "prompt": {"template": "{question} ="},
             "source": {"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10}},
    "stages": {"eval": {"trainQuestions": 2}},
    "storage": {"claimName": "negrl-data"}, "seeds": [0, 1], "sweep": {"sftMultipliers": [2]},
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
    # 4 questions: SFT at 2x gains one (q2), an interval touching 0, so the curve is flat and no method
    # gets a multiplier, however it does against SFT at n
    assert (evidence.rise.difference, evidence.rise.rises) == (0.25, False)
    assert by_method["step-dpo"].difference == 0.25 and by_method["step-dpo"].multiplier is None
    assert {c.label for c in evidence.comparisons} == {"undefined: SFT curve flat"}
    assert by_method["rft"].p_holm == 1.0 and by_method["outcome-dpo"].difference == -0.25
    document = science_json(evidence)
    assert document["sft_rise"]["verdict"] == "flat" and document["comparisons"][0]["multiplier_ci"] is None
    seed0 = evidence.seeds[0]
    assert (seed0["test_accuracy"], seed0["first_move"], seed0["given_first_move"], seed0["train_accuracy"]) == (
        0.5, 0.75, 0.667, 1.0)
    assert (seed0["negatives"], seed0["usable_pit_share"], seed0["pit_histogram"]) == (2, 0.5, {"2": 1})
    assert (seed0["pairs"], seed0["dpo_steps"], seed0["rollouts_per_negative"]) == ("1/1", "3/3", 3.0)
    gates = {g["gate"].split(":")[0]: g["pass"] for g in evidence.gates}
    assert gates == {"edge-following": False, "first move near chance": False, "no memorisation": False,
                     "negatives with a usable pit": True}
    text = "".join(science_markdown(evidence, experiment.spec))
    assert "each point trains 3 epochs over its own questions; the last checkpoint is evaluated" in text
    assert "Distinct examples per point: 4, 8." in text and "| 1 | 0.5 | 0.75 |" in text


ARITHMETIC_SPEC = {**SPEC, "data": {"task": "arithmetic", "syntheticSize": 4, "prompt": {"template": "{question} ="},
                                    "source": {"kind": "arithmetic"}}}
# train-0: Ann is asked, lines 1-3 and 6 on her slice, Cid's line 4 off it (as in test_credit_truth)
ANN = Problem(("Ann", "Bob", "Cid"), "apples", (5, 7, 2),
              (Event("Ann", "+", amount=4), Event("Ann", "-", amount=3), Event("Ann", "+", other="Bob"),
               Event("Cid", "*", amount=3), Event("Bob", "*", amount=2)), "Ann")
# train-1: Bob = 3 + 2 = 5 / Eve = 4 + 5 = 9 / #### 9
EVE = Problem(("Bob", "Eve"), "coins", (3, 4), (Event("Bob", "+", amount=2), Event("Eve", "+", other="Bob")), "Eve")
ANN_LINES = ["Ann = 5 + 4 = 9", "Ann = 9 - 3 = 6", "Ann = 6 + 7 = 13", "Cid = 2 * 3 = 6", "Bob = 7 * 2 = 14", "#### 13"]
TESTS = [f"t{index}" for index in range(10)]


def credit_record(qid, lines, pit, rollouts):
    steps = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    return {"question_id": qid, "steps": steps, "pit": pit, "rollouts": rollouts, "generated_tokens": 10 * rollouts,
            "finished": True}


def with_lines(lines, line, text):
    return [text if index == line else old for index, old in enumerate(lines, start=1)]


def sampled(qid, *grades):
    return [{"question_id": qid, "sample_index": i, "grade": {"correct": g}} for i, g in enumerate(grades)]


def greedy(questions, right):
    return [{"question_id": q, "greedy_correct": q in right, "greedy_response": "#### 1"} for q in questions]


def arithmetic_run(root):
    """Seed 0: SFT 0.3 held out, 0.5 on train, pits 2 hits of 3, an RFT set; seed 1: SFT 0.2, no eval-train,
    pits 2 of 2 and a negative without a pit, no RFT set. SFT at 2x: 0.9 on both seeds."""
    prepare = root / "artifacts" / "prepare"
    prepare.mkdir(parents=True)
    train = [{"id": "train-0", "question": render_question(ANN), "answer": "#### 13"},
             {"id": "train-1", "question": render_question(EVE), "answer": "#### 9"}]
    (prepare / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in train))
    (prepare / "test.jsonl").write_text("".join(json.dumps({"id": q, "question": "?", "answer": "#### 1"}) + "\n"
                                                for q in TESTS))
    slip_2 = with_lines(ANN_LINES[:-1], 2, "Ann = 9 - 3 = 5") + ["#### 12"]         # true line 2
    recent_3 = with_lines(ANN_LINES[:-1], 3, "Ann = 6 + 6 = 12") + ["#### 12"]      # true line 3
    answer_6 = ANN_LINES[:-1] + ["#### 14"]                                           # true line 6
    eve_2 = ["Bob = 3 + 2 = 5", "Eve = 4 + 4 = 8", "#### 8"]                          # true line 2
    for seed, right in ((0, TESTS[:3]), (1, TESTS[:2])):
        stage(root, f"eval-sft-s{seed}", greedy(TESTS, right))
        stage(root, f"eval-sft-x2-s{seed}", greedy(TESTS, TESTS[:9]))
    stage(root, "eval-train-sft-s0", greedy(["train-0", "train-1"], {"train-0"}))
    stage(root, "sample-s0", sampled("train-0", True, False) + sampled("train-1", True, True))
    stage(root, "sample-s1", sampled("train-0", False, None) + sampled("train-1", True, False))
    stage(root, "credit-s0", [credit_record("train-0", slip_2, 2, 6), credit_record("train-0", recent_3, 1, 9),
                              credit_record("train-1", eve_2, 2, 3)])
    stage(root, "credit-s1", [credit_record("train-0", slip_2, 2, 10), credit_record("train-0", answer_6, 6, 4),
                              credit_record("train-1", eve_2, None, 0)])
    pairs = root / "artifacts" / "rft-data-s0"
    pairs.mkdir()
    positives = [ANN_LINES, with_lines(ANN_LINES, 4, "Cid = 2 * 3 = 5")]   # the second: a wrong line, answer right
    (pairs / "rft.jsonl").write_text("".join(json.dumps({"question_id": "train-0", "response": "\n".join(lines)})
                                             + "\n" for lines in positives))
    (pairs / "outcome_pairs.jsonl").write_text(json.dumps({"question_id": "nowhere"}) + "\n")  # not a positive
    (pairs / "manifest.json").write_text(json.dumps({
        "files": {"rft": "rft.jsonl", "outcome": "outcome_pairs.jsonl"},
        "records": ["rft.jsonl", "outcome_pairs.jsonl"], "summary": {}}))


def test_gather_scores_pits_against_the_true_error_and_decides_the_arithmetic_gates(tmp_path):
    arithmetic_run(tmp_path)
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": ARITHMETIC_SPEC})
    healthy = Collapse("step-dpo-s0", -10.0, -11.0, None, None, 5.0)
    evidence = gather(experiment, tmp_path, {}, collapses=[healthy])
    truth = science_json(evidence)["credit_truth"]
    seed0, seed1, pooled = truth["seeds"]["0"], truth["seeds"]["1"], truth["pooled"]
    assert (seed0["negatives"], seed0["pits"], seed0["hits"], seed0["early_pits"], seed0["pit_precision"]) == (
        3, 3, 2, 1, 2 / 3)
    assert seed0["by_true_line"] == {"2": {"negatives": 2, "pits": 2, "hits": 2},
                                     "3": {"negatives": 1, "pits": 1, "hits": 0}}
    assert (seed0["rft_positives"], seed0["rft_positives_with_wrong_line"]) == (2, 1)
    assert (seed0["rollouts_per_negative"], seed0["tokens_per_negative"]) == (6.0, 60.0)
    assert (seed1["pits"], seed1["hits"], seed1["no_pit"], seed1["rft_positives"]) == (2, 2, 1, None)
    assert (pooled["negatives"], pooled["pits"], pooled["pit_precision"], pooled["false_pit_rate"]) == (6, 5, 0.8, 0.2)
    assert (pooled["pit_histogram"], pooled["true_histogram"]) == ({"1": 1, "2": 3, "6": 1}, {"2": 4, "3": 1, "6": 1})
    assert (pooled["rft_positives"], pooled["rft_positives_with_wrong_line"]) == (2, 1)
    assert (pooled["rollouts_per_negative"], pooled["tokens_per_negative"]) == (5.33, 53.3)
    gates = {(g["gate"].split(" (")[0].split(":")[0], g["seed"]): (g["value"], g["result"]) for g in evidence.gates}
    assert gates == {
        ("SFT rises with data", "all"): (0.65, "PASS"),
        ("SFT at n held-out accuracy", 0): (0.3, "PASS"), ("SFT at n held-out accuracy", 1): (0.2, "PASS"),
        ("SFT at n held-out accuracy", "all"): (0.25, "PASS"),
        ("sampled questions with a correct and a wrong sample", 0): (0.5, "PASS"),
        ("sampled questions with a correct and a wrong sample", 1): (0.5, "PASS"),
        ("sampled questions with a correct and a wrong sample", "all"): (0.5, "PASS"),
        ("pit precision", 0): (0.667, "FAIL"), ("pit precision", 1): (1.0, "PASS"),
        ("pit precision", "all"): (0.8, "PASS"),
        ("no memorisation", 0): (0.2, "FAIL"), ("no memorisation", 1): (None, "n/a"),
        ("no memorisation", "all"): (None, "n/a"),
        ("no DPO collapse flag", "all"): (0, "PASS"),
    }
    text = "".join(science_markdown(evidence, experiment.spec))
    assert "## Regime gates of the arithmetic task" in text and "## Credit against the true first error" in text
    assert "| no memorisation: train - held-out accuracy | 1 | - | <= 0.1 | n/a (no eval-train stage" in text
    assert "| pooled | 6 | 5 | 0.800 |" in text


def test_gather_without_a_dpo_log_reads_the_collapse_gate_n_a_and_other_tasks_have_no_credit_truth(tmp_path):
    arithmetic_run(tmp_path)
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": ARITHMETIC_SPEC})
    row = gather(experiment, tmp_path, {}).gates[-1]
    assert (row["gate"], row["result"], row["reason"]) == ("no DPO collapse flag", "n/a", "no DPO training log")
    star = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                           "metadata": {"name": "e"}, "spec": SPEC})
    assert science_json(gather(star, tmp_path, {}))["credit_truth"] is None


def test_a_credit_record_of_an_unknown_question_fails_the_report(tmp_path):
    arithmetic_run(tmp_path)
    folder = tmp_path / "artifacts" / "credit-s1"
    (folder / "r.jsonl").write_text(json.dumps(credit_record("train-7", ["#### 1"], 1, 1)) + "\n")
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": ARITHMETIC_SPEC})
    with pytest.raises(ReportError, match="credit: question_id 'train-7' is not among the run's training questions"):
        gather(experiment, tmp_path, {})


def test_with_a_teacher_the_credit_truth_reads_the_teachers_d_syn(tmp_path):
    arithmetic_run(tmp_path)
    artifacts = tmp_path / "artifacts"
    (artifacts / "synthesize").mkdir()
    (artifacts / "prepare" / "train.jsonl").rename(artifacts / "synthesize" / "train.jsonl")
    teacher = {"endpoint": {"baseUrl": "https://api.example.com/v1", "model": "big"}}
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": {**ARITHMETIC_SPEC,
                                                                                     "teacher": teacher}})
    pooled = science_json(gather(experiment, tmp_path, {}))["credit_truth"]["pooled"]
    assert (pooled["negatives"], pooled["pits"], pooled["pit_precision"], pooled["rft_positives"]) == (6, 5, 0.8, 2)
