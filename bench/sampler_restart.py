"""How long `negrl sample` takes to ride out a restart of its server.

A tiny random Llama is served by the transformers backend behind the OpenAI API (the same API as
vLLM) on a fixed loopback port. The same sample stage runs twice: once uninterrupted, once with the
server stopped after the first records are written and a new server started on the same port
`--outage-s` later (a pod restart). Figures:

- ride_out_s: from the new server listening to the stage's first record written after it (how fast
  the client notices the server is back: /health poll period plus one request);
- extra_s: the interrupted run's time minus the uninterrupted run's, less the outage itself (what a
  restart costs beyond the time the server was away; includes the new server's model load).

Last line: name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.serving.local_server import free_port
from negrl_sampler.serving.transformers_server import TransformersServer

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "datasets" / "gsm8k"


def build_model(workdir: Path) -> Path:
    from negrl_trainer.scratch_model import build_scratch_model

    texts = []
    for record in read_source(GSM8K / "train.jsonl", "gsm8k-jsonl", "t", limit=3000):
        texts += [record["question"], record["solution"]]
    return build_scratch_model(workdir / "model", texts, vocab_size=512, seed=0)


def config(workdir: Path, name: str, port: int, questions: Path) -> Path:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps({
        "kind": "sample", "outputDir": str(workdir / name), "task": "gsm8k", "questions": str(questions),
        "server": {"baseUrl": f"http://127.0.0.1:{port}/v1", "model": "tiny", "maxConcurrency": 4,
                   "healthWaitS": 300},
        "params": {"samplesPerQuestion": 2, "maxTokens": 32, "temperature": 1.0, "seed": 3},
    }))
    return path


def record_count(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("records-*.jsonl"))


def run_stage(path: Path, model: Path, port: int, outage_s: float | None) -> dict:
    out = Path(json.loads(path.read_text())["outputDir"])
    server = TransformersServer(model, served_name="tiny", port=port)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "negrl_operator.cli", "sample", "--config", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    figures: dict = {}
    try:
        if outage_s is not None:
            while record_count(out) == 0 and process.poll() is None:
                time.sleep(0.02)
            server.stop()
            time.sleep(outage_s)
            written = record_count(out)
            server = TransformersServer(model, served_name="tiny", port=port)
            back = time.monotonic()
            while record_count(out) == written and process.poll() is None:
                time.sleep(0.02)
            figures["ride_out_s"] = time.monotonic() - back
        _, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            raise SystemExit(f"negrl sample failed:\n{stderr[-2000:]}")
        figures["total_s"] = time.monotonic() - started
    finally:
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--outage-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="negrl-restart-") as tmp:
        workdir = Path(tmp)
        model = build_model(workdir)
        questions = workdir / "questions.jsonl"
        write_questions(questions, read_source(GSM8K / "test.jsonl", "gsm8k-jsonl", "test", limit=args.questions))
        port = free_port()
        plain = run_stage(config(workdir, "plain", port, questions), model, port, None)
        restarted = run_stage(config(workdir, "restarted", port, questions), model, port, args.outage_s)
    extra = restarted["total_s"] - plain["total_s"] - args.outage_s
    print(f"uninterrupted {plain['total_s']:.2f}s; with a {args.outage_s:.1f}s outage {restarted['total_s']:.2f}s")
    print(f"outage_s={args.outage_s:.1f} ride_out_s={restarted['ride_out_s']:.2f} extra_s={extra:.2f} "
          f"uninterrupted_s={plain['total_s']:.2f} restarted_s={restarted['total_s']:.2f}")


if __name__ == "__main__":
    main()
