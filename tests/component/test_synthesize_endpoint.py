"""`negrl synthesize` end to end against a loopback OpenAI-compatible stub whose answers are written
here, so every count is known: kept, rejected, duplicate, surplus, contaminated, disagreed and empty;
the request cap stops the stage and a rerun resumes without asking again; the API key reaches the
endpoint and nothing else (config, log, summary, artifacts)."""

import json
import re

import pytest

from negrl_operator.api.teacher import SynthesizeStageConfig
from negrl_sampler.stages import synthesize
from negrl_sampler.stages.rollout import derive_seed
from tests.fixtures.endpoint_stub import EndpointStub

pytestmark = pytest.mark.component

SOLUTIONS = {  # question -> the teacher's K=3 solutions
    "What is 2 plus 2?": ["2 plus 2 is 4.\n#### 4", "2 plus 2 is 4.\n#### 4", "It is 5.\n#### 5"],
    "What is 3 plus 3?": ["3 plus 3 is 6.\n#### 6", "Three and three make 6.\n#### 6", "6 it is.\n#### 6"],
    "What is 1 plus 1?": ["no idea", "#### 3", "#### 4"],
    "Sam has 2 cats and gets 2 more. How many cats?": ["2 + 2 = 4\n#### 4", "2 + 2 = 4\n#### 4", "#### 5"],
    "Pick a number.": ["#### 1", "#### 2", "#### 3"],
}
QUESTIONS = [("q0", "What is 2 plus 2?", "4"), ("q1", "What is 3 plus 3?", "6"), ("q2", "What is 1 plus 1?", "2")]
TEST_QUESTION = "Tom has 3 apples and buys 4 more. How many apples does Tom have?"
PROBLEMS = {  # slot -> the problem the teacher writes
    0: "Sam has 2 cats and gets 2 more. How many cats?",
    1: TEST_QUESTION + "\nAnswer: 7",  # a test question: contaminated
    2: "Sam has 2 cats and gets 2 more. How many cats?",  # the same as slot 0: a duplicate problem
    3: "Pick a number.",  # no majority above the agreement threshold
    4: "   ",  # nothing: empty
}
SLOT_OF_SEED = {derive_seed(0, "problem", f"p{slot}"): slot for slot in PROBLEMS}
SECRET = "sk-stage-secret-7f3a"


def teacher(body: dict) -> list[str]:
    prompt = body["prompt"]
    if prompt.endswith("Question:"):
        return [PROBLEMS[SLOT_OF_SEED[body["seed"]]]]
    question = re.findall(r"Question: (.*?)\nAnswer:", prompt, re.DOTALL)[-1]
    return SOLUTIONS[question][: body["n"]]


@pytest.fixture
def stub():
    server = EndpointStub(teacher=teacher)
    yield server
    server.close()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _config(tmp_path, stub, mode="solutions", params=None, **endpoint) -> str:
    questions = _write_jsonl(tmp_path / "train.jsonl", [{"id": i, "question": q, "answer": a} for i, q, a in QUESTIONS])
    test = _write_jsonl(tmp_path / "test.jsonl", [{"id": "t0", "question": TEST_QUESTION, "answer": "7"}])
    config = SynthesizeStageConfig(
        output_dir=str(tmp_path / "synthesize"), task="gsm8k", questions=questions, heldout=[test], problems=5,
        tracking={"tensorboard": False},
        endpoint={"base_url": stub.base_url, "model": "teacher", "max_concurrency": 1, **endpoint},
        params={"mode": mode, "solutions_per_question": 3, "keep_per_question": 2, "ngram": 3, "overlap": 0.5,
                "examples": [{"question": "What is 5 plus 5?", "solution": "5 plus 5 is 10.\n#### 10"}],
                **(params or {})},
    )
    path = tmp_path / f"{mode}.json"
    path.write_text(config.model_dump_json())
    return str(path)


def _run(config_path, tmp_path, monkeypatch, capsys) -> tuple[int, dict, str]:
    termination = tmp_path / "termination.json"
    monkeypatch.setenv("NEGRL_TERMINATION_LOG", str(termination))
    code = synthesize.main(["--config", config_path])
    captured = capsys.readouterr()
    return code, json.loads(termination.read_text()), captured.out + captured.err


def _dsyn(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "synthesize" / "train.jsonl").read_text().splitlines()]


def test_solutions_mode_keeps_graded_correct_deduplicated_solutions(stub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEGRL_TEACHER_API_KEY", SECRET)
    config_path = _config(tmp_path, stub)
    code, summary, output = _run(config_path, tmp_path, monkeypatch, capsys)
    assert code == 0, output
    counts = {key: summary[key] for key in ("units", "requests", "generated", "accepted", "kept", "rejected",
                                            "duplicates", "surplus", "contaminated", "dsyn_records")}
    assert counts == {"units": 3, "requests": 3, "generated": 9, "accepted": 5, "kept": 3, "rejected": 4,
                      "duplicates": 1, "surplus": 1, "contaminated": 0, "dsyn_records": 3}
    assert summary["acceptance_rate"] == round(5 / 9, 4) and summary["cost_tokens"] == 3 * 10 + 3 * 15
    assert _dsyn(tmp_path) == [
        {"id": "q0-t0", "question": "What is 2 plus 2?", "answer": "4", "solution": "2 plus 2 is 4.\n#### 4"},
        {"id": "q1-t0", "question": "What is 3 plus 3?", "answer": "6", "solution": "3 plus 3 is 6.\n#### 6"},
        {"id": "q1-t1", "question": "What is 3 plus 3?", "answer": "6",
         "solution": "Three and three make 6.\n#### 6"},
    ]
    assert stub.authorizations == [f"Bearer {SECRET}"] * 3
    written = [path.read_text() for path in tmp_path.rglob("*") if path.is_file()]
    assert all(SECRET not in text for text in [output, json.dumps(summary), *written])


def test_problems_mode_labels_by_majority_and_drops_contaminated_and_repeated(stub, tmp_path, monkeypatch, capsys):
    code, summary, output = _run(_config(tmp_path, stub, "problems"), tmp_path, monkeypatch, capsys)
    assert code == 0, output
    counts = {key: summary[key] for key in ("units", "requests", "generated", "accepted", "kept", "rejected",
                                            "duplicates", "contaminated", "disagreed", "empty", "dsyn_records",
                                            "duplicate_problems")}
    assert counts == {"units": 5, "requests": 8, "generated": 9, "accepted": 4, "kept": 2, "rejected": 5,
                      "duplicates": 2, "contaminated": 1, "disagreed": 1, "empty": 1, "dsyn_records": 1,
                      "duplicate_problems": 1}
    assert _dsyn(tmp_path) == [{"id": "p0-t0", "question": PROBLEMS[0], "answer": "4", "solution": "2 + 2 = 4\n#### 4"}]
    assert stub.authorizations == [None] * 8  # no key in the environment: no header


def test_request_cap_stops_the_stage_and_a_rerun_resumes_without_asking_again(stub, tmp_path, monkeypatch, capsys):
    code, summary, output = _run(_config(tmp_path, stub, max_requests=2), tmp_path, monkeypatch, capsys)
    assert code == 1
    assert re.search(r"BudgetExhausted: request cap reached: 2 requests sent \(maxRequests=2\)", summary["error"])
    assert summary["records_kept"] == 2 and not (tmp_path / "synthesize" / "train.jsonl").exists()
    code, summary, output = _run(_config(tmp_path, stub, max_requests=3), tmp_path, monkeypatch, capsys)
    assert code == 0, output
    assert len(stub.bodies) == 3  # the rerun asked only for the question it had not written
    assert [row["id"] for row in _dsyn(tmp_path)] == ["q0-t0", "q1-t0", "q1-t1"]
    assert summary["units"] == 3 and summary["requests"] == 3


def test_greedy_decoding_asks_k_single_requests(stub, tmp_path, monkeypatch, capsys):
    """vLLM refuses n > 1 at temperature 0: each of the K solutions is its own request."""
    code, summary, output = _run(_config(tmp_path, stub, params={"temperature": 0.0}), tmp_path, monkeypatch, capsys)
    assert code == 0, output
    assert [body["n"] for body in stub.bodies] == [1] * 9 and {body["temperature"] for body in stub.bodies} == {0.0}
    # the stub answers n=1 with each question's first solution: K=3 copies of it
    assert (summary["requests"], summary["generated"], summary["accepted"], summary["kept"], summary["duplicates"],
            summary["rejected"]) == (9, 9, 6, 2, 4, 3)
