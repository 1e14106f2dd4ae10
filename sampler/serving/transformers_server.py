"""The fallback sampler when vLLM is not installed: transformers generation behind the same
OpenAI-compatible `/v1/completions` protocol (n, seed, temperature, top_p, max_tokens, stop, usage),
served from threads of the calling process. Like vLLM it batches: requests that arrive together and
share their sampling parameters are generated as one left-padded batch. As in vLLM, the prompt is
tokenised with the tokenizer's special tokens (BOS) unless the request says `add_special_tokens:
false`, exactly as the trainer tokenises it, and sampling is seeded per sequence: completion j of a
request with seed s draws from its own generator seeded s + j, so its text does not depend on the
batch it was generated in (up to floating-point ties) and a request (s, n=3) gives the texts of
(s, n=1), (s+1, n=1), (s+2, n=1). Meant for tiny models on CPU."""

from __future__ import annotations

import json
import queue
import random
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


def prompt_ids(tokenizer, body: dict) -> list[int]:
    """The prompt's token ids as vLLM makes them: with special tokens unless the request turns them off."""
    special = body.get("add_special_tokens", True)
    return list(tokenizer(body["prompt"], add_special_tokens=bool(special))["input_ids"])


def left_padded(rows: list[list[int]], pad_id: int, torch):
    """(input_ids, attention_mask) of rows padded on the left to the longest."""
    width = max(len(row) for row in rows)
    ids = [[pad_id] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def row_seeds(bodies: list[dict]) -> list[int]:
    """Seed of every generated row: s + j for completion j of a request with seed s (vLLM's rule for
    the children of an n > 1 request); a fresh random seed for each row of an unseeded request."""
    seeds = []
    for body in bodies:
        n, seed = int(body.get("n", 1)), body.get("seed")
        seeds += [int(seed) + j if seed is not None else random.SystemRandom().randrange(2**62) for j in range(n)]
    return seeds


class RowSampler:
    """A logits processor that samples each row's next token (temperature, top-p) from that row's own
    generator and returns scores that keep only the drawn token, so greedy decoding takes it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, torch):
        self.torch, self.temperature, self.top_p = torch, temperature, top_p
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids, scores):
        torch = self.torch
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            outside = ordered.cumsum(dim=-1) - ordered >= self.top_p  # the first token always stays
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        chosen = torch.full_like(scores, -float("inf"))
        for row, generator in enumerate(self.generators):
            token = torch.multinomial(probs[row], 1, generator=generator)
            chosen[row, token] = 0.0
        return chosen


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
        rows = [prompt_ids(self.tokenizer, body) for body in bodies for _ in range(int(body.get("n", 1)))]
        input_ids, attention_mask = left_padded(rows, self.tokenizer.pad_token_id, self.torch)
        options = {"do_sample": False, "max_new_tokens": max_tokens,
                   "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:  # each row draws its own token; greedy decoding then picks that token
            from transformers import LogitsProcessorList

            sampler = RowSampler(row_seeds(bodies), temperature, top_p, self.torch)
            options["logits_processor"] = LogitsProcessorList([sampler])
        with self.torch.no_grad():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **options)
        generated = output[:, input_ids.shape[1]:].tolist()
        results, start = [], 0
        for body in bodies:
            n = int(body.get("n", 1))
            results.append(self._response(body, generated[start:start + n], len(rows[start])))
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
