"""The fallback sampler when vLLM is not installed: transformers generation behind the same
OpenAI-compatible `/v1/completions` protocol (n, seed, temperature, top_p, max_tokens, stop, usage),
served from threads of the calling process. Like vLLM it batches: requests that arrive together and
share their sampling parameters are generated as one left-padded batch. Sampling is seeded per batch,
so a seed reproduces text only for the same batch; it is meant for tiny models on CPU."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BATCH_ROWS = 256
GATHER_S = 0.01


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded), and whether one was found."""
    cuts = [text.find(marker) for marker in stop if marker and marker in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def sampling_key(body: dict) -> tuple[int, float, float]:
    """Requests with equal keys can share one generate() call."""
    return int(body.get("max_tokens", 16)), float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0))


def take_batch(pending: list[dict], max_rows: int) -> tuple[list[dict], list[dict]]:
    """(batch, rest): the first request and every later one with its sampling key, up to max_rows
    sequences (a request counts n rows); order is kept on both sides."""
    key, batch, rest, rows = sampling_key(pending[0]), [], [], 0
    for body in pending:
        n = int(body.get("n", 1))
        if sampling_key(body) == key and (not batch or rows + n <= max_rows):
            batch.append(body)
            rows += n
        else:
            rest.append(body)
    return batch, rest


@dataclass
class _Job:
    body: dict
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None


class TransformersGenerator:
    def __init__(self, model_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the runner's live view owns the terminal
        # one intra-op thread: a tiny model gains little from two, and the stage processes beside
        # this server compete for the same cores (OpenMP barriers stall badly when oversubscribed)
        torch.set_num_threads(1)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.train(False)  # inference mode
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._serve_jobs, daemon=True).start()

    def complete(self, body: dict) -> dict:
        job = _Job(body)
        self.jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _serve_jobs(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(self.jobs.get())
                time.sleep(GATHER_S)  # let the requests sent together arrive together
            while not self.jobs.empty():
                pending.append(self.jobs.get_nowait())
            job_of = {id(job.body): job for job in pending}
            bodies, rest = take_batch([job.body for job in pending], MAX_BATCH_ROWS)
            pending = [job_of[id(body)] for body in rest]
            self.batches += 1
            self._run([job_of[id(body)] for body in bodies])

    def _run(self, batch: list[_Job]) -> None:
        try:
            outputs = self._generate([job.body for job in batch])
            for job, result in zip(batch, outputs, strict=True):
                job.result = result
        except BaseException as error:  # handed to the waiting request threads
            for job in batch:
                job.error = error
        for job in batch:
            job.done.set()

    def _generate(self, bodies: list[dict]) -> list[dict]:
        max_tokens, temperature, top_p = sampling_key(bodies[0])
        rows = [body["prompt"] for body in bodies for _ in range(int(body.get("n", 1)))]
        encoded = self.tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        options = {"do_sample": temperature > 0, "max_new_tokens": max_tokens,
                   "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            options.update(temperature=temperature, top_p=top_p)
        with self.torch.no_grad():
            if bodies[0].get("seed") is not None:
                self.torch.manual_seed(int(bodies[0]["seed"]))
            output = self.model.generate(**encoded, **options)
        generated = output[:, encoded.input_ids.shape[1]:].tolist()
        results, start = [], 0
        for body in bodies:
            n = int(body.get("n", 1))
            prompt_tokens = int(encoded.attention_mask[start].sum())
            results.append(self._response(body, generated[start:start + n], prompt_tokens))
            start += n
        return results

    def _response(self, body: dict, generated: list[list[int]], prompt_tokens: int) -> dict:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        eos, choices, total = self.tokenizer.eos_token_id, [], 0
        for index, row in enumerate(generated):
            ended = eos in row
            tokens = row[: row.index(eos)] if ended else row
            text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)
            total += len(tokens) + (1 if ended else 0)
            finish = "stop" if ended or stopped else "length"
            choices.append({"index": index, "text": text, "finish_reason": finish, "logprobs": None})
        return {
            "object": "text_completion", "model": body.get("model", "policy"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total,
                      "total_tokens": prompt_tokens + total},
        }


def handler_for(generator: TransformersGenerator, served_name: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the runner's terminal clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": served_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not isinstance(body.get("prompt"), str):
                    raise ValueError("prompt must be a string")
            except (ValueError, json.JSONDecodeError) as error:
                self._send(400, {"error": {"message": str(error)}})
                return
            self._send(200, generator.complete(body))

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the client keeps up to max_concurrency connections open at once
    daemon_threads = True


class TransformersServer:
    """Serve `model_dir` on a loopback port (`port`, or a free one) until `stop()`; same shape as a
    LocalServer. A given port lets a test stop the server and start another in its place."""

    def __init__(self, model_dir: str | Path, served_name: str = "policy", port: int = 0):
        self.model = served_name
        self.generator = TransformersGenerator(model_dir)
        self.httpd = _Server(("127.0.0.1", port), handler_for(self.generator, served_name))
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.started_s = 0.0
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> TransformersServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
