"""`negrl sample` rides out a restart of its server: the real transformers backend behind the OpenAI
API is stopped mid-stage (in-flight requests fail, connections are refused) and a new server is
started on the same port a few seconds later, as a vLLM pod restart or a rolling update does. The
stage waits on /health within its budget and finishes with every record once; with a budget
shorter than the outage it fails clearly and keeps what it wrote."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.serving.local_server import free_port
from negrl_sampler.serving.transformers_server import TransformersServer
from tests.fixtures.paths import GSM8K_DIR

QUESTIONS = 12
SAMPLES = 2
OUTAGE_S = 4.0


def questions_file(root: Path) -> Path:
    records = read_source(GSM8K_DIR / "test.jsonl", "gsm8k-jsonl", "test", limit=QUESTIONS)
    path = root / "questions.jsonl"
    write_questions(path, records)
    return path


def sample_config(root: Path, name: str, port: int, health_wait_s: float) -> Path:
    path = root / f"{name}.json"
    path.write_text(json.dumps({
        "kind": "sample", "outputDir": str(root / name), "task": "gsm8k", "questions": str(questions_file(root)),
        "server": {"baseUrl": f"http://127.0.0.1:{port}/v1", "model": "tiny", "timeoutS": 60, "maxConcurrency": 2,
                   "maxRetries": 1, "healthWaitS": health_wait_s},
        "params": {"samplesPerQuestion": SAMPLES, "maxTokens": 24, "temperature": 1.0, "seed": 3},
    }))
    return path


def records(out: Path) -> list[dict]:
    lines = []
    for path in sorted(out.glob("records-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def run_with_outage(config: Path, model_dir: Path, port: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start the stage, stop the server once the first records are on disk, bring a new one up on
    the same port after OUTAGE_S; returns the finished process and the records written before."""
    out = Path(json.loads(config.read_text())["outputDir"])
    server = TransformersServer(model_dir, served_name="tiny", port=port)
    process = subprocess.Popen([sys.executable, "-m", "negrl_operator.cli", "sample", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not records(out) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        before = len(records(out))
        server.stop()
        time.sleep(OUTAGE_S)
        server = TransformersServer(model_dir, served_name="tiny", port=port)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        server.stop()
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), before


def test_sample_stage_rides_out_a_server_restart(tiny_model_dir, tmp_path):
    port = free_port()
    config = sample_config(tmp_path, "restart", port, health_wait_s=60)
    result, before = run_with_outage(config, tiny_model_dir, port)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["complete"] is True and summary["request_errors"] >= 1  # the outage was seen
    written = records(tmp_path / "restart")
    assert 0 < before < QUESTIONS * SAMPLES  # the server went away mid-stage
    keys = sorted((r["question_id"], r["sample_index"]) for r in written)
    assert len(keys) == QUESTIONS * SAMPLES and len(set(keys)) == len(keys)
    assert (tmp_path / "restart" / "manifest.json").exists()


def test_an_outage_longer_than_the_budget_fails_and_keeps_what_was_written(tiny_model_dir, tmp_path):
    port = free_port()
    config = sample_config(tmp_path, "short-budget", port, health_wait_s=1.0)
    result, before = run_with_outage(config, tiny_model_dir, port)
    assert result.returncode == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["error"].startswith("ServerUnavailable")
    assert "not healthy after waiting" in summary["error"] and "health_wait_s=1.0" in summary["error"]
    assert summary["records_kept"] >= before > 0
    assert not (tmp_path / "short-budget" / "manifest.json").exists()
