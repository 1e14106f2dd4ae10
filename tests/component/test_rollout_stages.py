"""The rollout stage commands against the real vLLM server (tiny random model), run as the `negrl`
command like a Job would: end to end, shards, kill + resume, a dying or unreachable server.

Random weights write garbage, so the questions' references are chosen so the policy is sometimes
right: each question's reference is the answer its own first sample (seeded, so reproducible)
ends with. Assertions are about structure, counts and exact equality of resumed runs.
Concurrency stays low: vLLM's CPU build crashes when a seeded request's prefill is chunked."""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from negrl_operator.api.stage_config import StepSplitSpec
from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.record import CreditRecord, EvalResult, PreferencePair, Sample
from negrl_sampler.stages.credit import references
from negrl_sampler.step import split_steps
from tests.fixtures.paths import GSM8K_DIR

SHORT_QUESTIONS = [462, 305, 595, 623]  # the shortest GSM8K test questions: prompts stay < 100 tokens
SAMPLES = 4
STEPS = {"minChars": 0, "maxSteps": 4, "delimiter": "space"}
STOP = ["w"]  # the random policy seldom samples EOS: a frequent letter ends most texts (finish "stop")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout) or a connection we hung up on purpose


class Proxy:
    """An HTTP proxy in front of vLLM that can be slow, and can start hanging up on every request
    (a dying server) after forwarding `forward_limit` of them."""

    def __init__(self, upstream: str, delay_s: float = 0.0, forward_limit: int | None = None):
        self.upstream, self.delay_s, self.forward_limit = upstream.removesuffix("/v1"), delay_s, forward_limit
        self.forwarded = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    dead = proxy.forward_limit is not None and proxy.forwarded >= proxy.forward_limit
                    proxy.forwarded += 0 if dead else 1
                if dead:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                time.sleep(proxy.delay_s)
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, data = response.status, response.read()
                except urllib.error.HTTPError as error:
                    status, data = error.code, error.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Workspace:
    def __init__(self, root: Path, server):
        self.root, self.server = root, server

    def server_ref(self, base_url=None, **overrides):
        return {"baseUrl": base_url or self.server.base_url, "model": self.server.model, "timeoutS": 60,
                "maxConcurrency": 2, "maxRetries": 2, **overrides}

    def config(self, name: str, payload: dict) -> Path:
        path = self.root / "configs" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(payload))
        return path

    def sample_config(self, name, questions, base_url=None, server=None, **extra):
        return self.config(name, {
            "kind": "sample", "outputDir": str(self.root / name), "task": "gsm8k", "questions": str(questions),
            "server": server or self.server_ref(base_url),
            "params": {"samplesPerQuestion": SAMPLES, "maxTokens": 24, "temperature": 1.0, "seed": 3, "stop": STOP}, **extra,
        })

    def credit_config(self, name, samples_dir, strategy="early_stop", base_url=None, server=None):
        return self.config(name, {
            "kind": "credit", "outputDir": str(self.root / name), "task": "gsm8k", "samplesDir": str(samples_dir),
            "server": server or self.server_ref(base_url),
            "params": {"rollouts": 3, "strategy": strategy, "negativesPerQuestion": 2, "maxTokens": 16,
                       "temperature": 1.0, "seed": 5, "steps": STEPS, "stop": STOP},
        })

    def run(self, command: str, config: Path, *args: str, env: dict | None = None, check=True):
        result = subprocess.run(
            [sys.executable, "-m", "negrl_operator.cli", command, "--config", str(config), *args],
            capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
        )
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result, json.loads(result.stdout.strip().splitlines()[-1])

    def start(self, command: str, config: Path, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "negrl_operator.cli", command, "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )


def records_of(stage_dir: Path) -> list[dict]:
    records = []
    for path in sorted(Path(stage_dir).glob("records-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: (r["question_id"], r.get("sample_index", 0)))


@pytest.fixture(scope="module")
def space(vllm_server, tmp_path_factory):
    """Questions with references the tiny policy can hit, and uninterrupted reference runs."""
    root = tmp_path_factory.mktemp("rollout")
    workspace = Workspace(root, vllm_server)
    picked = [q for i, q in enumerate(read_source(GSM8K_DIR / "test.jsonl", "gsm8k-jsonl", "test"))
              if i in SHORT_QUESTIONS]
    write_questions(root / "probe.jsonl", picked)
    workspace.run("sample", workspace.sample_config("probe", root / "probe.jsonl"))
    answers = collections.defaultdict(list)
    for record in records_of(root / "probe"):
        answers[record["question_id"]].append(record["grade"]["extracted"])
    for question in picked:  # the first answer the policy's own (seeded) samples give
        question["answer"] = "#### " + next((a for a in answers[question["id"]] if a), "0")
    write_questions(root / "questions.jsonl", picked)
    workspace.questions = root / "questions.jsonl"
    _, workspace.sample_summary = workspace.run("sample", workspace.sample_config("samples", workspace.questions))
    _, workspace.credit_summary = workspace.run("credit", workspace.credit_config("credit", root / "samples"))
    return workspace


def test_sample_stage_writes_graded_samples_and_a_manifest(space):
    records = records_of(space.root / "samples")
    samples = [Sample.model_validate(r) for r in records]
    assert len(samples) == len(SHORT_QUESTIONS) * SAMPLES
    assert sorted(collections.Counter(s.question_id for s in samples).values()) == [SAMPLES] * len(SHORT_QUESTIONS)
    assert all(s.prompt.startswith("Question: ") and s.prompt.endswith("\nAnswer:") for s in samples)
    assert all(any(s.grade.correct for s in samples if s.question_id == q) for q in {s.question_id for s in samples})
    summary = space.sample_summary
    assert summary["stage"] == "sample" and summary["complete"] is True
    assert summary["samples"] == len(samples) and summary["correct"] >= len(SHORT_QUESTIONS)
    assert summary["correct"] + summary["wrong"] + summary["unparseable"] == len(samples)
    assert summary["generated_tokens"] == sum(s.completion_tokens for s in samples) > 0
    manifest = json.loads((space.root / "samples" / "manifest.json").read_text())
    assert manifest["summary"]["questions_path"] == str(space.questions)
    assert set(references(space.root / "samples")) == {s.question_id for s in samples}


def test_credit_records_split_steps_and_find_pits(space):
    samples = {(s["question_id"], s["sample_index"]): s for s in records_of(space.root / "samples")}
    credits = [CreditRecord.model_validate(r) for r in records_of(space.root / "credit")]
    negatives = collections.Counter(q for (q, _), s in samples.items() if s["grade"]["correct"] is not True)
    assert len(credits) == sum(min(2, n) for n in negatives.values())
    for record in credits:
        response = samples[(record.question_id, record.sample_index)]["response"]
        assert "".join(record.steps) == response
        assert record.steps == split_steps(response, StepSplitSpec.model_validate(STEPS))
        assert record.values[0].step == 0 and record.values[0].rollouts == SAMPLES
        assert record.pit is not None and 1 <= record.pit <= len(record.steps)  # every question is solvable
        scanned = min(record.pit, len(record.steps) - 1)  # early_stop: every prefix up to the pit
        assert [v.step for v in record.values] == list(range(scanned + 1))
    summary = space.credit_summary
    assert summary["rollouts"] == sum(r.rollouts for r in credits) > 0
    assert summary["generated_tokens"] == sum(r.generated_tokens for r in credits) > 0
    assert summary["pits"] == len(credits)


def test_strategies_agree_on_the_real_server(space):
    """Seeded completions are the same whichever request draws them: early_stop finds exactly
    full's pits with fewer rollouts; bisect probes few prefixes."""
    results = {}
    for strategy in ("full", "bisect"):
        space.run("credit", space.credit_config(f"credit-{strategy}", space.root / "samples", strategy))
        results[strategy] = {(r["question_id"], r["sample_index"]): r for r in records_of(space.root / f"credit-{strategy}")}
    results["early_stop"] = {(r["question_id"], r["sample_index"]): r for r in records_of(space.root / "credit")}
    full, early = results["full"], results["early_stop"]
    assert full.keys() == early.keys() == results["bisect"].keys()
    assert {k: r["pit"] for k, r in early.items()} == {k: r["pit"] for k, r in full.items()}
    assert sum(r["rollouts"] for r in early.values()) < sum(r["rollouts"] for r in full.values())
    for record in full.values():
        assert record["rollouts"] == 3 * (len(record["steps"]) - 1)
        assert [v["rollouts"] for v in record["values"][1:]] == [3] * (len(record["steps"]) - 1)


def test_pairs_stage_builds_rft_and_both_kinds_of_pairs(space):
    config = space.config("pairs", {
        "kind": "pairs", "outputDir": str(space.root / "pairs"), "samplesDir": str(space.root / "samples"),
        "creditDir": str(space.root / "credit"), "questions": str(space.questions),
        "params": {"chosenSource": "rollout"},
    })
    _, summary = space.run("pairs", config)
    out = space.root / "pairs"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == {"rft": "rft.jsonl", "outcome": "outcome_pairs.jsonl", "step": "step_pairs.jsonl"}
    rft = [json.loads(line) for line in (out / "rft.jsonl").read_text().splitlines()]
    steps = [PreferencePair.model_validate_json(line) for line in (out / "step_pairs.jsonl").read_text().splitlines()]
    credits = {(r["question_id"], r["sample_index"]): r for r in records_of(space.root / "credit")}
    assert summary["rft"] == len(rft) and summary["step"] == len(steps) and summary["complete"] is True
    assert summary["rft"] > 0 and summary["outcome"] > 0 and summary["step"] > 0
    # matchCounts (default): both pair kinds from the same negatives, with the same chosen text, in order
    outcome = [PreferencePair.model_validate_json(line)
               for line in (out / "outcome_pairs.jsonl").read_text().splitlines()]
    assert summary["outcome"] == summary["step"] == summary["negatives_used"] == len(outcome)
    assert summary["matched"] == "same-negatives" and summary["negatives_scanned"] == len(credits)
    responses = {(r["question_id"], r["sample_index"]): r for r in records_of(space.root / "samples")}
    for pair, twin in zip(steps, outcome, strict=True):
        record = credits[(pair.question_id, pair.rejected_sample_index)]
        assert pair.rejected == "".join(record["steps"][: pair.pit]) and pair.chosen_source == "rollout"
        assert pair.chosen.startswith("".join(record["steps"][: pair.pit - 1]))
        negative = responses[(pair.question_id, pair.rejected_sample_index)]
        assert (twin.question_id, twin.rejected_sample_index, twin.chosen, twin.chosen_source) == \
               (pair.question_id, pair.rejected_sample_index, pair.chosen, "rollout")
        assert twin.rejected == negative["response"] and twin.rejected_eos == (negative["finish_reason"] != "length")
    _, again = space.run("pairs", config)
    assert again["resumed"] == "stage already complete"


def test_evaluate_stage_reports_pass_rates_with_intervals(space):
    config = space.config("evaluate", {
        "kind": "evaluate", "outputDir": str(space.root / "evaluate"), "task": "gsm8k",
        "questions": str(space.questions), "server": space.server_ref(), "policy": "tiny",
        "params": {"k": 3, "maxTokens": 16, "temperature": 1.0, "stop": STOP},
    })
    termination = space.root / "evaluate-termination.log"
    result, summary = space.run("evaluate", config, env={"NEGRL_TERMINATION_LOG": str(termination)})
    results = [EvalResult.model_validate(r) for r in records_of(space.root / "evaluate")]
    assert len(results) == len(SHORT_QUESTIONS) and all(r.samples == 3 for r in results)
    final = json.loads((space.root / "evaluate" / "summary.json").read_text())
    assert final["questions"] == len(SHORT_QUESTIONS) and final["policy"] == "tiny"
    low, high = final["pass_at_k_ci95"]
    assert 0 <= low <= final["pass_at_k"] <= high <= 1
    assert summary["pass_at_1"] == final["pass_at_1"]
    assert termination.read_text() == result.stdout.strip().splitlines()[-1]


def test_shards_merge_into_the_unsharded_records(space):
    config = space.sample_config("sharded", space.questions, shardCount=2)
    space.run("sample", config, "--shard", "0/2")
    assert not (space.root / "sharded" / "manifest.json").exists()
    space.run("sample", config, env={"JOB_COMPLETION_INDEX": "1"})
    manifest = json.loads((space.root / "sharded" / "manifest.json").read_text())
    assert manifest["shards"] == 2 and len(manifest["records"]) == 2
    assert records_of(space.root / "sharded") == records_of(space.root / "samples")
    assert manifest["summary"]["samples"] == space.sample_summary["samples"]
    _, again = space.run("sample", config, "--shard", "0/2")
    assert again["resumed"] == "shard already complete"


def wait_for(predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize("stage", ["sample", "credit"])
def test_killed_stage_resumes_to_exactly_the_uninterrupted_records(space, stage):
    proxy = Proxy(space.server.base_url, delay_s=0.25)
    port = free_port()
    server = space.server_ref(proxy.base_url, maxConcurrency=1)
    if stage == "sample":
        config = space.sample_config("killed-sample", space.questions, server=server, metricsPort=port)
        reference = space.root / "samples"
    else:
        config = space.credit_config("killed-credit", space.root / "samples", server=server)
        reference = space.root / "credit"
    out = Path(json.loads(config.read_text())["outputDir"])
    path = out / "records-00000-of-00001.jsonl"
    process = space.start(stage, config)
    try:
        if stage == "sample":  # /metrics is live while the stage runs
            assert wait_for(lambda: metric(scrape(port), "negrl_sampler_completions_total") > 0)
            text = scrape(port)
            for name in ("negrl_sampler_requests_total", "negrl_sampler_generated_tokens_total",
                         "negrl_sampler_graded_total", "negrl_sampler_correct_ratio",
                         "negrl_sampler_unparseable_ratio", "negrl_sampler_request_duration_seconds_bucket"):
                assert name in text
        assert wait_for(lambda: path.exists() and path.read_text().count("\n") >= 1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        proxy.close()
    written = [json.loads(line) for line in path.read_text().splitlines()]
    expected = records_of(reference)
    assert 0 < len(written) < len(expected), "the stage was not killed midway"
    assert not (out / "manifest.json").exists()
    # What a crash inside a write leaves: the first line of the next question's unit, then a torn line.
    missing = [r for r in expected if r["question_id"] not in {w["question_id"] for w in written}]
    with open(path, "a") as handle:
        handle.write(json.dumps(missing[0], sort_keys=True) + "\n" + '{"question_id": "torn')
    space.run(stage, space.config(f"resume-{stage}", {
        **json.loads(config.read_text()), "server": space.server_ref(), "metricsPort": 0}))
    assert records_of(out) == expected
    assert (out / "manifest.json").exists()


def test_dying_server_fails_clearly_and_keeps_what_was_written(space):
    proxy = Proxy(space.server.base_url, forward_limit=2)
    server = space.server_ref(proxy.base_url, maxConcurrency=1, maxRetries=2, healthWaitS=3)
    config = space.sample_config("dying", space.questions, server=server)
    try:
        started = time.monotonic()
        result, summary = space.run("sample", config, check=False)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert result.returncode == 1
    assert summary["error"].startswith("ServerUnavailable") and "not healthy after waiting" in summary["error"]
    assert summary["records_kept"] == 2 * SAMPLES and summary["request_errors"] >= 1
    assert elapsed < 60
    out = space.root / "dying"
    assert not (out / "manifest.json").exists()
    expected = records_of(space.root / "samples")
    kept = records_of(out)
    assert len(kept) == 2 * SAMPLES and all(r in expected for r in kept)
    space.run("sample", space.config("dying-resume", {**json.loads(config.read_text()), "server": space.server_ref()}))
    assert records_of(out) == expected


def test_unreachable_server_is_a_clear_error(space):
    server = space.server_ref(f"http://127.0.0.1:{free_port()}/v1", maxRetries=1, healthWaitS=2)
    result, summary = space.run("sample", space.sample_config("unreachable", space.questions, server=server),
                                check=False)
    assert result.returncode == 1
    assert "ServerUnavailable" in summary["error"] and "ConnectError" in summary["error"]
    assert summary["records_kept"] == 0
