"""Overhead of `negrl sample` over a bare concurrent HTTP loop: the same requests (same prompts,
seeds, n, max_tokens, concurrency) against the same vLLM server, in one run.

The bare loop only posts and decodes JSON. `negrl sample` also grades every completion, writes
and fsyncs each question's records, keeps metrics and writes the manifests. Both send identical
bodies, so they generate identical text. After a warm-up pass (compilation, prefix cache) the runs
alternate `--repeats` times in rotating order; throughput_ratio is the median over repeats of
bare time / negrl time of the same repeat (neighbouring runs share the machine's load of the
moment), throughput_ratio_best compares the best times. The client processes' own CPU seconds are reported too: on a small shared
machine they are the part of the overhead that does not drown in noise. `negrl sample` is timed twice: as the
stage's main() in this process, and as the `negrl sample` command in a fresh process (interpreter
start and imports included). Without --base-url a tiny random Llama is built and served by vLLM on
this machine (CPU: chunked prefill off, which the CPU build needs for seeded requests).

Target: throughput_ratio (stage in-process / bare loop) >= 0.9. Last line: name=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from negrl_operator.api.stage_config import SampleStageConfig
from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.serving.client import CompletionClient
from negrl_sampler.stages.rollout import load_questions
from negrl_sampler.stages.sample import main as sample_main
from negrl_sampler.stages.sample import sample_request

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO.parent / "shared" / "datasets" / "gsm8k" / "test.jsonl"


def start_tiny_server(workdir: Path):
    from negrl_sampler.serving import local_server
    from negrl_trainer.scratch_model import build_scratch_model

    texts = []
    for record in read_source(REPO.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl", "gsm8k-jsonl", "t",
                              limit=3000):
        texts += [record["question"], record["solution"]]
    model = build_scratch_model(workdir / "model", texts, vocab_size=512, seed=0)
    port = local_server.free_port()
    command = local_server.vllm_command(str(model), port, 512, "tiny") + ["--no-enable-chunked-prefill"]
    log_path = workdir / "vllm.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=local_server.vllm_environment(1), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = local_server.LocalServer(f"http://127.0.0.1:{port}/v1", "tiny", process, log_path)
    local_server.wait_healthy(server, 300)
    return server


async def bare_loop(config: SampleStageConfig) -> tuple[int, int]:
    """Post every question's request with the stage's concurrency; returns (completions, tokens)."""
    questions = load_questions(config.questions, config.max_questions)
    shaper = CompletionClient.for_server(config.server)
    bodies = [shaper.body(sample_request(config, config.prompt.render(q.question), q.id)) for q in questions]
    await shaper.aclose()
    limit = config.server.max_concurrency
    semaphore = asyncio.Semaphore(limit)
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(timeout=config.server.timeout_s, limits=limits) as http:
        async def post(body: dict) -> dict:
            async with semaphore:
                response = await http.post(f"{config.server.base_url}/completions", json=body)
                response.raise_for_status()
                return response.json()

        answers = await asyncio.gather(*(post(body) for body in bodies))
    return sum(len(a["choices"]) for a in answers), sum(a["usage"]["completion_tokens"] for a in answers)


def stage_config(workdir: Path, base_url: str, model: str, args, name: str) -> Path:
    payload = {
        "kind": "sample", "outputDir": str(workdir / name), "task": "gsm8k", "questions": str(workdir / "q.jsonl"),
        "server": {"baseUrl": base_url, "model": model, "maxConcurrency": args.concurrency},
        "params": {"samplesPerQuestion": args.samples, "maxTokens": args.max_tokens, "temperature": 1.0},
    }
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(payload))
    return path


def run_stage(path: Path, in_process: bool) -> tuple[float, dict]:
    shutil.rmtree(json.loads(path.read_text())["outputDir"], ignore_errors=True)
    started = time.perf_counter()
    if in_process:
        code = sample_main(["--config", str(path)])
        elapsed = time.perf_counter() - started
        manifest = json.loads((Path(json.loads(path.read_text())["outputDir"]) / "manifest.json").read_text())
        if code != 0:
            raise RuntimeError("negrl sample failed")
        return elapsed, manifest["summary"]
    result = subprocess.run([sys.executable, "-m", "negrl_operator.cli", "sample", "--config", str(path)],
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"negrl sample failed ({result.returncode}): {result.stdout[-1000:]} {result.stderr[-2000:]}")
    return elapsed, json.loads(result.stdout.strip().splitlines()[-1])


def measure(workdir: Path, base_url: str, model: str, args) -> dict:
    write_questions(workdir / "q.jsonl", read_source(GSM8K_TEST, "gsm8k-jsonl", "test", limit=args.questions))
    config_path = stage_config(workdir, base_url, model, args, "samples")
    config = SampleStageConfig.model_validate_json(config_path.read_text())
    asyncio.run(bare_loop(config))  # warm-up
    times: dict[str, list[float]] = {"bare": [], "stage": [], "command": []}
    cpu: dict[str, list[float]] = {"bare": [], "stage": []}
    order = ["bare", "stage", "command"]
    for repeat in range(args.repeats):
        for kind in order[repeat % 3:] + order[: repeat % 3]:  # rotate: no run always goes first
            started, cpu_started = time.perf_counter(), time.process_time()
            if kind == "bare":
                completions, tokens = asyncio.run(bare_loop(config))
            else:
                summary = run_stage(config_path, in_process=kind == "stage")[1]
            times[kind].append(time.perf_counter() - started)
            if kind in cpu:
                cpu[kind].append(time.process_time() - cpu_started)
    if (summary["samples"], summary["generated_tokens"]) != (completions, tokens):
        raise RuntimeError(f"not the same work: stage {summary} vs bare {completions} completions, {tokens} tokens")
    bare, stage, command = (times[kind] for kind in order)
    return {
        "completions": completions, "generated_tokens": tokens,
        "bare_tokens_per_s": round(tokens / min(bare), 1),
        "negrl_tokens_per_s": round(tokens / min(stage), 1),
        "throughput_ratio": round(statistics.median(b / s for b, s in zip(bare, stage, strict=True)), 3),
        "throughput_ratio_best": round(min(bare) / min(stage), 3),
        "command_throughput_ratio": round(statistics.median(b / c for b, c in zip(bare, command, strict=True)), 3),
        "bare_s": round(min(bare), 2), "stage_s": round(min(stage), 2), "command_s": round(min(command), 2),
        "bare_client_cpu_s": round(min(cpu["bare"]), 3), "stage_client_cpu_s": round(min(cpu["stage"]), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: start a tiny vLLM here)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="negrl-bench-sampler-"))
    server = None
    try:
        if args.base_url is None:
            server = start_tiny_server(workdir)
        base_url = args.base_url or server.base_url
        figures = measure(workdir, base_url, args.model, args)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{figures['completions']} completions, {figures['generated_tokens']} tokens per pass")
    print(f"bare loop:    {figures['bare_s']:.2f}s  {figures['bare_tokens_per_s']:.0f} tok/s")
    print(f"negrl stage:  {figures['stage_s']:.2f}s  {figures['negrl_tokens_per_s']:.0f} tok/s")
    print(f"negrl command (fresh process): {figures['command_s']:.2f}s")
    print(f"client CPU per pass: bare {figures['bare_client_cpu_s']:.3f}s, negrl stage {figures['stage_client_cpu_s']:.3f}s")
    ok = figures["throughput_ratio"] >= 0.9
    print(f"throughput_ratio: {figures['throughput_ratio']} (target >= 0.9) {'ok' if ok else 'MISSED'}")
    print(" ".join(f"{name}={value}" for name, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
