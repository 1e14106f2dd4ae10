"""`negrl run` of examples/arithmetic-teacher.yaml, shortened (#22): a teacher-sft stage trains the
scratch teacher, the synthesize stage serves what it wrote and keeps its correct solutions as D_syn,
and the student's SFT trains on them. Real stage processes; the transformers backend serves."""

from __future__ import annotations

import json

import yaml

from negrl_sampler.arithmetic import parse_problem
from negrl_sampler.arithmetic_check import check_response
from tests.component.test_run import negrl_run
from tests.fixtures.paths import REPO

QUESTIONS, K = 16, 4
OFF = {"enabled": False}


def shortened(tmp_path) -> str:
    """One event on counts up to 10 (a teacher trained for 320 steps solves about half of them), a
    one-layer student, SFT and its evaluation only."""
    manifest = yaml.safe_load((REPO / "examples" / "arithmetic-teacher.yaml").read_text())
    spec = manifest["spec"]
    spec["model"]["scratch"] = {"hidden": 64, "layers": 1, "heads": 1, "maxPositions": 96}
    spec["data"]["source"].update(chainLength=1, maxValue=10, trainSize=QUESTIONS, validationSize=4, testSize=4)
    spec["data"]["syntheticSize"] = QUESTIONS
    spec["teacher"]["served"]["scratch"].update(hidden=64, layers=2, heads=1, maxPositions=96, training={
        "examples": 640, "chainLengths": [1],
        "params": {"learningRate": 3.0e-3, "epochs": 8, "microBatchSize": 16, "maxLength": 96}})
    spec["teacher"]["synthesis"].update(solutionsPerQuestion=K, temperature=1.0, maxTokens=24)
    spec["stages"] = {"sft": {"params": {"learningRate": 1.0e-3, "epochs": 1, "microBatchSize": 8, "maxLength": 96}},
                      **{name: OFF for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")},
                      "eval": {"split": "validation", "params": {"k": 1, "maxTokens": 24}}}
    spec["sampler"] = {"maxModelLen": 96, "localBackend": "transformers"}
    path = tmp_path / "arithmetic-teacher.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return str(path)


def test_the_experiment_trains_its_teacher_which_writes_the_students_d_syn(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGRL_CACHE_DIR", str(tmp_path / "cache"))
    workdir = tmp_path / "run"
    process = negrl_run(shortened(tmp_path), workdir)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    started = [line.split("] ", 1)[1].split()[1] for line in output.splitlines()
               if line.startswith("[") and "] start " in line]
    assert started == ["prepare", "teacher-sft", "synthesize", "sft", "eval-sft"], output

    summaries = json.loads((workdir / "summaries.json").read_text())
    assert summaries["teacher-sft"]["steps"] == 320  # 640 questions x 8 epochs / 16
    assert (workdir / "artifacts" / "teacher-sft" / "model" / "model.safetensors").exists()
    synthesis = summaries["synthesize"]
    dsyn = [json.loads(line) for line in (workdir / "artifacts" / "synthesize" / "train.jsonl").read_text().splitlines()]
    assert synthesis["generated"] == QUESTIONS * K and synthesis["requests"] >= QUESTIONS
    assert 0 < synthesis["kept"] == len(dsyn) <= synthesis["accepted"] <= QUESTIONS * K
    for record in dsyn:  # the grader kept right answers; the task's line checker agrees with every line
        check = check_response(parse_problem(record["question"]), record["solution"])
        assert check.answer_correct and check.first_error is None, record
    assert summaries["sft"]["examples"] == len(dsyn)  # the student trains on the teacher's data only
    assert f"acceptance rate {synthesis['acceptance_rate']:.3f}" in (workdir / "report.md").read_text()
