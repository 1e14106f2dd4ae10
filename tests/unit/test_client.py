"""The completions client against a local stub HTTP server (the protocol boundary): retries on
connection errors, timeouts, 5xx and 429; immediate errors on 4xx; concurrency bound; usage; an
outage waits for /health within its time budget instead of spending retries."""

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from negrl_sampler.serving.client import (
    CompletionClient,
    CompletionError,
    CompletionRequest,
    ServerUnavailable,
    backoff_s,
    choice_tokens,
)


def completion_payload(body):
    n = body.get("n", 1)
    choices = [{"index": i, "text": f"{body['prompt']}|{i}", "finish_reason": "stop"} for i in reversed(range(n))]
    return {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 4 * n}}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client gave up on a slow answer (timeout tests)


class Stub:
    """Answers from a script of statuses (then 200s); records request bodies; can be slow."""

    def __init__(self, script=(), delay_s=0.0, health=(), down=False):
        """`health`: statuses of the next /health probes (then 200); `down`: every POST answers 503
        while failing /health probes remain (an outage that ends when /health comes back)."""
        self.script, self.delay_s, self.health, self.down = list(script), delay_s, list(health), down
        self.bodies, self.in_flight, self.max_in_flight, self.probes = [], 0, 0, 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with stub.lock:
                    stub.probes += 1
                    status = stub.health.pop(0) if stub.health else 200
                self.send_response(status if self.path == "/health" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.bodies.append((self.path, body))
                    status = stub.script.pop(0) if stub.script else 200
                    status = 503 if stub.down and stub.health else status
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                time.sleep(stub.delay_s)
                with stub.lock:
                    stub.in_flight -= 1
                payload = stub.answer(self.path, body) if status == 200 else {"error": f"status {status}"}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, path, body):
        if path == "/tokenize":
            return {"tokens": [1, 2, 3], "count": 3}
        if path == "/detokenize":
            return {"prompt": "<user>" + body["tokens"].__repr__() + "<assistant>"}
        return completion_payload(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(request):
    server = Stub(**getattr(request, "param", {}))
    yield server
    server.close()


def run(coroutine):
    return asyncio.run(coroutine)


async def complete(base_url, request, **kwargs):
    errors = []
    kwargs.setdefault("backoff_base_s", 0.01)
    async with CompletionClient(base_url, "tiny", on_error=errors.append, **kwargs) as client:
        try:
            return await client.complete(request), errors
        except CompletionError as error:
            return error, errors


def test_request_body_choices_and_usage(stub):
    request = CompletionRequest(prompt="Q:", n=3, seed=7, temperature=0.5, top_p=0.9, max_tokens=12,
                                stop=("\n\n",))
    completion, errors = run(complete(stub.base_url, request))
    path, body = stub.bodies[0]
    assert path == "/v1/completions"
    assert body == {"model": "tiny", "prompt": "Q:", "n": 3, "seed": 7, "temperature": 0.5, "top_p": 0.9,
                    "max_tokens": 12, "stop": ["\n\n"]}
    assert [c.text for c in completion.choices] == ["Q:|0", "Q:|1", "Q:|2"]  # sorted by index
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 12)
    assert [c.tokens for c in completion.choices] == [4, 4, 4]
    assert errors == []


@pytest.mark.parametrize("stub", [{"script": [503, 429, 502]}], indirect=True)
def test_retries_5xx_and_429_then_succeeds(stub):
    completion, errors = run(complete(stub.base_url, CompletionRequest(prompt="x"), max_retries=3))
    assert completion.choices[0].text == "x|0"
    assert len(stub.bodies) == 4
    assert errors == ["http_5xx", "http_429", "http_5xx"]


@pytest.mark.parametrize("stub", [{"script": [400, 200]}], indirect=True)
def test_4xx_fails_at_once(stub):
    error, errors = run(complete(stub.base_url, CompletionRequest(prompt="x"), max_retries=5))
    assert isinstance(error, CompletionError) and not isinstance(error, ServerUnavailable)
    assert "HTTP 400" in str(error)
    assert len(stub.bodies) == 1
    assert errors == ["http_4xx"]


@pytest.mark.parametrize("stub", [{"script": [500] * 10}], indirect=True)
def test_persistent_5xx_exhausts_the_retry_budget(stub):
    error, errors = run(complete(stub.base_url, CompletionRequest(prompt="x"), max_retries=2))
    assert isinstance(error, ServerUnavailable)
    assert "after 3 attempts" in str(error) and "HTTP 500" in str(error)
    assert len(stub.bodies) == 3


def test_unreachable_server_is_a_clear_error_once_the_health_budget_is_spent():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    error, errors = run(complete(f"http://127.0.0.1:{port}/v1", CompletionRequest(prompt="x"), max_retries=2,
                                 health_wait_s=0.3, health_poll_s=0.05))
    assert time.monotonic() - started >= 0.3
    assert isinstance(error, ServerUnavailable)
    assert "not healthy after waiting" in str(error) and "health_wait_s=0.3" in str(error)
    assert "ConnectError" in str(error)
    assert errors == ["connect"]  # the outage is waited out on /health, not on the retry count


@pytest.mark.parametrize("stub", [{"script": [503, 502], "health": [503, 503, 200, 503, 200]}], indirect=True)
def test_outages_wait_for_health_and_do_not_spend_retries(stub):
    completion, errors = run(complete(stub.base_url, CompletionRequest(prompt="x"), max_retries=0,
                                      health_wait_s=5.0, health_poll_s=0.01))
    assert completion.choices[0].text == "x|0"
    assert len(stub.bodies) == 3  # 503, then 502 after the first recovery, then 200
    assert stub.probes == 5 and stub.health == []
    assert errors == ["http_5xx", "http_5xx"]


@pytest.mark.parametrize("stub", [{"script": [503], "health": [503] * 1000}], indirect=True)
def test_a_server_that_stays_unhealthy_fails_after_the_budget(stub):
    started = time.monotonic()
    error, _ = run(complete(stub.base_url, CompletionRequest(prompt="x"), health_wait_s=0.4, health_poll_s=0.05))
    waited = time.monotonic() - started
    assert isinstance(error, ServerUnavailable) and "last /health error: HTTP 503" in str(error)
    assert 0.4 <= waited < 3.0
    assert len(stub.bodies) == 1  # no request is resent while /health fails
    assert 6 <= stub.probes <= 10  # one probe per poll period, 0.4 s / 0.05 s (+ the first)


@pytest.mark.parametrize("stub", [{"health": [503, 503], "down": True}], indirect=True)
def test_requests_in_flight_share_one_health_poller(stub):
    errors = []

    async def many():
        async with CompletionClient(stub.base_url, "tiny", max_retries=0, health_wait_s=5.0, health_poll_s=0.2,
                                    on_error=errors.append) as client:
            return await asyncio.gather(*(client.complete(CompletionRequest(prompt=str(i))) for i in range(8)))

    results = run(many())
    assert [r.choices[0].text for r in results] == [f"{i}|0" for i in range(8)]
    assert stub.probes == 3  # one poller for every request that met the outage, not one each
    assert errors and set(errors) == {"http_5xx"}
    assert len(stub.bodies) == 8 + len(errors)  # each request that met the outage was resent once


def test_server_that_accepts_and_hangs_up_is_retried_then_reported():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def hang_up():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            connection.recv(65536)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        error, errors = run(complete(url, CompletionRequest(prompt="x"), max_retries=1, health_wait_s=0.2,
                                     health_poll_s=0.05))
    finally:
        listener.close()
    assert isinstance(error, ServerUnavailable)
    assert "not healthy after waiting" in str(error) and "RemoteProtocolError" in str(error)
    assert errors == ["connect"] and len(accepted) >= 2  # the request, then the /health probes


@pytest.mark.parametrize("stub", [{"delay_s": 0.5}], indirect=True)
def test_timeouts_are_retried(stub):
    error, errors = run(complete(stub.base_url, CompletionRequest(prompt="x"), max_retries=1, timeout_s=0.1))
    assert isinstance(error, ServerUnavailable) and "timeout" in str(error)
    assert errors == ["timeout", "timeout"]


@pytest.mark.parametrize("stub", [{"delay_s": 0.1}], indirect=True)
def test_concurrency_is_bounded(stub):
    async def many():
        async with CompletionClient(stub.base_url, "tiny", max_concurrency=2) as client:
            return await asyncio.gather(*(client.complete(CompletionRequest(prompt=str(i))) for i in range(8)))

    results = run(many())
    assert [r.choices[0].text for r in results] == [f"{i}|0" for i in range(8)]
    assert stub.max_in_flight == 2


def test_wrong_number_of_choices_is_a_protocol_error(stub):
    stub.answer = lambda path, body: completion_payload({**body, "n": 1})
    error, errors = run(complete(stub.base_url, CompletionRequest(prompt="x", n=2)))
    assert isinstance(error, CompletionError) and "n=2" in str(error)
    assert errors == ["protocol"]


def test_chat_prompt_is_rendered_by_the_server(stub):
    async def render():
        async with CompletionClient(stub.base_url, "tiny") as client:
            return await client.chat_prompt("What is 2+3?")

    assert run(render()) == "<user>[1, 2, 3]<assistant>"
    (path, body), (path2, body2) = stub.bodies
    assert path == "/tokenize" and body["messages"] == [{"role": "user", "content": "What is 2+3?"}]
    assert body["add_generation_prompt"] is True
    assert path2 == "/detokenize" and body2["tokens"] == [1, 2, 3]


@pytest.mark.parametrize(("reasons", "total", "max_tokens", "tokens"), [
    (["stop"], 9, 16, [9]),
    (["length", "stop", "stop"], 16 + 7, 16, [16, 4, 3]),
    (["length", "length"], 32, 16, [16, 16]),
    ([None, None], 0, 16, [0, 0]),
])
def test_choice_tokens(reasons, total, max_tokens, tokens):
    assert choice_tokens(reasons, total, max_tokens) == tokens
    assert sum(tokens) == total


def test_backoff_is_exponential_and_capped():
    assert [backoff_s(a, 0.5, 3.0) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
