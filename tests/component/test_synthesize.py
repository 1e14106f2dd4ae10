"""`negrl synthesize` against the real vLLM CPU server started with `--api-key`, the key coming from
the environment variable a Secret would set, run as the `negrl` command like a Job.

The teacher's answers are known: a scratch model is trained here until it reproduces, at
temperature 0, a hand-written answer to each prompt the stage will send (wrong ones included). So
every count is worked out by hand: greedy decoding makes all K solutions of a question identical
(K-1 duplicates each), the wrong answers are rejected, one new problem is a test question
(contaminated). A run killed midway resumes from its last complete record without duplicates."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from negrl_operator.api.teacher import SynthesisParams
from negrl_sampler.serving.local_server import (
    LocalServer,
    free_port,
    vllm_command,
    vllm_environment,
    wait_healthy,
)
from negrl_sampler.synthesis import problem_prompt, solution_prompt
from tests.fixtures.tiny_model import gsm8k_texts

EXAMPLES = [{"question": "What is 5 plus 5?", "solution": "5 plus 5 is 10.\n#### 10"},
            {"question": "What is 9 minus 2?", "solution": "9 minus 2 is 7.\n#### 7"}]
PARAMS = SynthesisParams.model_validate({"examples": EXAMPLES[:1], "solutionsPerQuestion": 2, "keepPerQuestion": 2,
                                         "temperature": 0.0, "maxTokens": 24})
PROBLEM_PARAMS = SynthesisParams.model_validate({
    "mode": "problems", "examples": EXAMPLES, "solutionsPerQuestion": 2, "keepPerQuestion": 2, "temperature": 0.0,
    "maxTokens": 24, "problemMaxTokens": 24, "ngram": 3, "overlap": 0.5, "agreement": 0.5})
TEST_QUESTION = "Tom has 3 apples and 4 pears. How many fruits?"
NEW_PROBLEM = "Ann has 6 pens and gives 2 away. How many pens?"
QUESTIONS = [  # (question, reference, the teacher's answer)
    ("What is 2 plus 2?", "4", " 2 plus 2 is 4.\n#### 4"),
    ("What is 3 plus 3?", "6", " 3 plus 3 is 5.\n#### 5"),  # wrong: rejected
    ("What is 4 plus 1?", "5", " 4 plus 1 is 5.\n#### 5"),
]
COPIES = 3  # each question three times (distinct ids), so the kill lands midway
KEY_ENV = "NEGRL_TEACHER_API_KEY"


def teacher_lessons() -> list[tuple[str, str]]:
    """(prompt, the completion the teacher must give) for every prompt the two runs send."""
    lessons = [(solution_prompt(PARAMS, question), answer) for question, _, answer in QUESTIONS]
    lessons += [(problem_prompt(PROBLEM_PARAMS, 0), f" {TEST_QUESTION}\n\n"),
                (problem_prompt(PROBLEM_PARAMS, 1), f" {NEW_PROBLEM}\n\n"),
                (solution_prompt(PROBLEM_PARAMS, NEW_PROBLEM), " 6 minus 2 is 4.\n#### 4")]
    return lessons


def greedy_misses(model, tokenizer, lessons: list[tuple[str, str]]) -> list[str]:
    """What greedy decoding gives for the lessons it does not reproduce yet."""
    misses = []
    for prompt, completion in lessons:
        prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(prompt_ids, max_new_tokens=30, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, prompt_ids.shape[1]:], skip_special_tokens=True)
        misses += [] if text == completion else [text]
    return misses


def memorise(model_dir: Path, lessons: list[tuple[str, str]], max_steps: int = 400) -> int:
    """Train the scratch model on the lessons (loss on the completions only) until greedy decoding
    reproduces each one, then save it in place; returns the steps taken."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    rows = []
    for prompt, completion in lessons:
        prompt_ids = tokenizer(prompt).input_ids
        completion_ids = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append((prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row, _ in rows])
    labels = torch.tensor([label + [-100] * (width - len(label)) for _, label in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row, _ in rows])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    misses = ["not trained"]
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 and loss.item() < 0.05:
            model.eval()
            with torch.no_grad():
                misses = greedy_misses(model, tokenizer, lessons)
            if not misses:
                break
    assert not misses, f"the teacher did not learn its lessons in {max_steps} steps (loss {loss.item():.4f}): {misses}"
    model.save_pretrained(model_dir, safe_serialization=True)
    return step


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The memorising teacher behind vLLM's OpenAI server with `--api-key` (the Secret's value)."""
    from negrl_trainer.scratch_model import build_scratch_model

    model_dir = build_scratch_model(tmp_path_factory.mktemp("teacher"), gsm8k_texts(1000), vocab_size=512, seed=0)
    memorise(model_dir, teacher_lessons())
    key = "sk-" + secrets.token_hex(12)
    port, logs = free_port(), tmp_path_factory.mktemp("teacher-logs")
    command = [*vllm_command(str(model_dir), port, 256, "teacher"), "--api-key", key]
    log_path = logs / "vllm-teacher.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=vllm_environment(1), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = LocalServer(f"http://127.0.0.1:{port}/v1", "teacher", process, log_path)
    try:
        wait_healthy(server, timeout_s=300)
        yield server, key
    finally:
        server.stop()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def stage_config(root: Path, server: LocalServer, params: SynthesisParams, name: str, **endpoint) -> Path:
    questions = [{"id": f"q{copy}-{index}", "question": question, "answer": reference}
                 for copy in range(COPIES) for index, (question, reference, _) in enumerate(QUESTIONS)]
    config = {
        "kind": "synthesize", "outputDir": str(root / name), "task": "gsm8k",
        "questions": write_jsonl(root / "train.jsonl", questions),
        "heldout": [write_jsonl(root / "test.jsonl", [{"id": "t0", "question": TEST_QUESTION, "answer": "7"}])],
        "problems": 2, "tracking": {"tensorboard": False},
        "endpoint": {"baseUrl": server.base_url, "model": "teacher", "maxConcurrency": 1, **endpoint},
        "params": params.model_dump(mode="json", by_alias=True),
    }
    path = root / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def negrl(config: Path, env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "negrl_operator.cli", "synthesize", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, **popen)


def finish(process: subprocess.Popen) -> tuple[dict, str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), out + err


def test_the_server_wants_the_key(teacher):
    server, key = teacher
    body = {"model": "teacher", "prompt": "What", "max_tokens": 2}
    assert httpx.post(f"{server.base_url}/completions", json=body, timeout=60).status_code == 401
    answered = httpx.post(f"{server.base_url}/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {key}"})
    assert answered.status_code == 200


def test_solutions_killed_midway_resume_to_the_hand_worked_counts(teacher, tmp_path):
    server, key = teacher
    # four requests a second, two per question: nine questions take about 4 s, so the kill lands midway
    config = stage_config(tmp_path, server, PARAMS, "synthesize", requestsPerSecond=4)
    records = tmp_path / "synthesize" / "records-00000-of-00001.jsonl"
    env = {KEY_ENV: key, "NEGRL_TERMINATION_LOG": str(tmp_path / "termination.json")}
    first = negrl(config, env)
    deadline = time.monotonic() + 120
    while not (records.exists() and records.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    _, first_err = first.communicate()
    written = records.read_text().splitlines()
    assert 2 <= len(written) < len(QUESTIONS) * COPIES, "the stage was not killed midway"
    assert not (tmp_path / "synthesize" / "train.jsonl").exists()

    summary, output = finish(negrl(config, env))
    lines = records.read_text().splitlines()
    assert lines[:len(written)] == written  # what the killed run wrote is kept, not redone
    assert sorted(json.loads(line)["question_id"] for line in lines) == sorted(
        f"q{copy}-{index}" for copy in range(COPIES) for index in range(len(QUESTIONS)))
    # per copy: two right questions keep 1 and drop 1 duplicate each; the wrong one rejects both.
    # Greedy decoding: vLLM refuses n=2, so each solution is its own request (2 per question)
    counts = {name: summary[name] for name in ("units", "requests", "generated", "accepted", "kept", "rejected",
                                               "duplicates", "surplus", "dsyn_records")}
    assert counts == {"units": 9, "requests": 18, "generated": 18, "accepted": 12, "kept": 6, "rejected": 6,
                      "duplicates": 6, "surplus": 0, "dsyn_records": 6}
    assert summary["acceptance_rate"] == round(12 / 18, 4)
    assert 0 < summary["run_generated_tokens"] < summary["generated_tokens"]  # the rerun generated only the rest
    d_syn = [json.loads(line) for line in (tmp_path / "synthesize" / "train.jsonl").read_text().splitlines()]
    assert [row["id"] for row in d_syn] == [f"q{copy}-{index}-t0" for copy in range(COPIES) for index in (0, 2)]
    assert d_syn[0] == {"id": "q0-0-t0", "question": "What is 2 plus 2?", "answer": "4",
                        "solution": "2 plus 2 is 4.\n#### 4"}
    files = [path.read_text() for path in tmp_path.rglob("*") if path.is_file()]
    assert all(key not in text for text in [output, first_err, *files])


def test_new_problems_are_labelled_by_majority_and_decontaminated(teacher, tmp_path):
    server, key = teacher
    config = stage_config(tmp_path, server, PROBLEM_PARAMS, "problems")
    summary, output = finish(negrl(config, {KEY_ENV: key, "NEGRL_TERMINATION_LOG": str(tmp_path / "t.json")}))
    counts = {name: summary[name] for name in ("units", "requests", "generated", "accepted", "kept", "duplicates",
                                               "contaminated", "disagreed", "empty", "dsyn_records")}
    assert counts == {"units": 2, "requests": 4, "generated": 2, "accepted": 2, "kept": 1, "duplicates": 1,
                      "contaminated": 1, "disagreed": 0, "empty": 0, "dsyn_records": 1}
    d_syn = json.loads((tmp_path / "problems" / "train.jsonl").read_text())
    assert d_syn == {"id": "p1-t0", "question": NEW_PROBLEM, "answer": "4", "solution": "6 minus 2 is 4.\n#### 4"}
    assert key not in output
