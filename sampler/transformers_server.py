"""The fallback sampler when vLLM is not installed: transformers generation behind the same
OpenAI-compatible `/v1/completions` protocol (n, seed, temperature, top_p, max_tokens, stop, usage),
served from a thread of the calling process. Generation is serialised (one global RNG); it is meant
for tiny models on CPU, not for throughput."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded), and whether one was found."""
    cuts = [text.find(marker) for marker in stop if marker and marker in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class TransformersGenerator:
    def __init__(self, model_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the runner's live view owns the terminal

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.train(False)  # inference mode
        self.lock = threading.Lock()

    def complete(self, body: dict) -> dict:
        prompt = body["prompt"]
        n, max_tokens = int(body.get("n", 1)), int(body.get("max_tokens", 16))
        temperature, top_p = float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        sampling = temperature > 0
        options = {"do_sample": sampling, "max_new_tokens": max_tokens, "num_return_sequences": n,
                   "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if sampling:
            options.update(temperature=temperature, top_p=top_p)
        with self.lock, self.torch.no_grad():
            if body.get("seed") is not None:
                self.torch.manual_seed(int(body["seed"]))
            output = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), **options)
        return self._response(body, output[:, ids.shape[1]:], ids.shape[1], stop)

    def _response(self, body: dict, generated, prompt_tokens: int, stop: list[str]) -> dict:
        eos, choices, total = self.tokenizer.eos_token_id, [], 0
        for index, row in enumerate(generated.tolist()):
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
    """Serve `model_dir` on a free loopback port until `stop()`; same shape as a LocalServer."""

    def __init__(self, model_dir: str | Path, served_name: str = "policy"):
        self.model = served_name
        self.httpd = _Server(("127.0.0.1", 0), handler_for(TransformersGenerator(model_dir), served_name))
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
