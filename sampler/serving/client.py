"""Async client of an OpenAI-compatible server's `/v1/completions` (vLLM in practice).

Plain completions, not chat: rollouts continue a prompt plus a prefix of a response verbatim.
Concurrency is bounded by a semaphore; connection errors, timeouts, 5xx and 429 are retried with a
capped exponential back-off; any other 4xx is the caller's fault and raised at once. Token counts
come from the response's `usage`.

A server that is down (connection refused or reset, 502/503/504: a restart, a rolling update, a
resume from zero replicas) is not charged to the retry count: the client waits for the server's
`/health` to answer 200, up to a time budget (`health_wait_s`) per outage, then resends. One poller
serves every request in flight, so a restart costs one probe stream, not one per request.

For a paid endpoint (`health_probe=False`: it has no /health), every failure counts against the
retries, a `Retry-After` header (seconds or an HTTP date) replaces the back-off, and an optional
`throttle` (throttle.py) spaces the requests and enforces hard caps on requests and tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import BaseModel, ConfigDict, Field

from negrl_operator.api.stage_config import ServerRef


class CompletionError(RuntimeError):
    """A request that will not succeed: a 4xx, a malformed answer, or the retry budget spent."""


class ServerUnavailable(CompletionError):
    """Connection errors, timeouts, 5xx or 429 on every attempt of the retry budget, or a server
    whose /health did not come back within the health-wait budget."""


DOWN_STATUSES = (502, 503, 504)  # what a proxy or a starting vLLM answers while no engine serves


class CompletionRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    n: int = Field(1, ge=1)
    seed: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = Field(16, ge=1)
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str | None
    tokens: int  # exact when n == 1 or the choice hit max_tokens; otherwise an even share


@dataclass(frozen=True)
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


def choice_tokens(finish_reasons: list[str | None], completion_tokens: int, max_tokens: int) -> list[int]:
    """Split the request's completion tokens over its choices: a choice cut by max_tokens made
    exactly max_tokens; the rest share what is left evenly (usage has no per-choice count)."""
    cut = [reason == "length" for reason in finish_reasons]
    left = max(0, completion_tokens - max_tokens * sum(cut))
    others = len(cut) - sum(cut)
    share, extra = divmod(left, others) if others else (0, 0)
    tokens, seen = [], 0
    for is_cut in cut:
        if is_cut:
            tokens.append(max_tokens)
        else:
            tokens.append(share + (1 if seen < extra else 0))
            seen += 1
    return tokens


def parse_completion(payload: dict, request: CompletionRequest) -> Completion:
    try:
        raw = sorted(payload["choices"], key=lambda choice: choice.get("index", 0))
        texts = [str(choice["text"]) for choice in raw]
        reasons = [choice.get("finish_reason") for choice in raw]
        usage = payload.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens") or 0)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CompletionError(f"malformed completion response: {error!r}") from error
    if len(texts) != request.n:
        raise CompletionError(f"asked for n={request.n} completions, the server returned {len(texts)}")
    tokens = choice_tokens(reasons, completion_tokens, request.max_tokens)
    choices = [Choice(text, reason, count) for text, reason, count in zip(texts, reasons, tokens, strict=True)]
    return Completion(choices=choices, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    return min(cap_s, base_s * 2**attempt)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait: delta-seconds or an HTTP date (RFC 9110);
    None when absent or unreadable; never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class CompletionClient:
    """`await client.complete(request)`; use as `async with CompletionClient(...) as client`.

    `on_request(seconds, completion)` (seconds include retries) and `on_error(kind)` are hooks for metrics; `kind` is one of
    connect, timeout, http_429, http_5xx, http_4xx, protocol."""

    def __init__(
        self, base_url: str, model: str, *, timeout_s: float = 300.0, max_concurrency: int = 64,
        max_retries: int = 5, backoff_base_s: float = 0.5, backoff_cap_s: float = 10.0,
        health_wait_s: float = 300.0, health_poll_s: float = 1.0, extra_body: dict | None = None,
        on_request: Callable[[float, Completion], None] | None = None,
        on_error: Callable[[str], None] | None = None, api_key: str | None = None,
        health_probe: bool = True, throttle=None, retry_after_cap_s: float = 600.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.health_wait_s, self.health_poll_s = health_wait_s, health_poll_s
        self._recovery: asyncio.Task | None = None
        self._recovered_at = -1.0  # monotonic time the last outage ended
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.extra_body = dict(extra_body or {})
        self.on_request, self.on_error = on_request, on_error
        self.health_probe, self.throttle, self.retry_after_cap_s = health_probe, throttle, retry_after_cap_s
        self.sleep = asyncio.sleep  # the back-off waits (tests record them)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None  # never logged or repr'd
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers)

    @classmethod
    def for_server(cls, server: ServerRef, **kwargs) -> CompletionClient:
        return cls(server.base_url, server.model, timeout_s=server.timeout_s,
                   max_concurrency=server.max_concurrency, max_retries=server.max_retries,
                   health_wait_s=server.health_wait_s, **kwargs)

    async def __aenter__(self) -> CompletionClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def body(self, request: CompletionRequest) -> dict:
        body = {
            "model": self.model, "prompt": request.prompt, "n": request.n,
            "temperature": request.temperature, "top_p": request.top_p,
            "max_tokens": request.max_tokens, **self.extra_body,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.monotonic()
        payload = await self.post_json(f"{self.base_url}/completions", self.body(request))
        try:
            completion = parse_completion(payload, request)
        except CompletionError:
            self._count_error("protocol")
            raise
        if self.on_request is not None:
            self.on_request(time.monotonic() - started, completion)
        return completion

    async def post_json(self, url: str, body: dict) -> dict:
        """POST with retries; returns the decoded JSON answer. Errors of a healthy server count
        against `max_retries`; an outage waits for /health (see the module docstring) instead."""
        started = time.monotonic()
        last, failures = "no attempt made", 0
        while True:
            async with self._semaphore:
                if self.throttle is not None:
                    await self.throttle.acquire()  # rate and caps: BudgetExhausted is not retried
                sent = time.monotonic()
                outcome = await self._attempt(url, body)
            if isinstance(outcome, dict):
                if self.throttle is not None:
                    self.throttle.settle(outcome)
                return outcome
            kind, last, retry_after = outcome
            # Sent before the end of an outage another request already waited out: resend at once.
            if kind == "down" and (sent < self._recovered_at or await self._server_recovered()):
                failures = 0  # the server restarted: earlier failures were not this request's fault
                continue
            failures += 1
            if failures > self.max_retries:
                break
            backoff = backoff_s(failures - 1, self.backoff_base_s, self.backoff_cap_s)
            await self.sleep(backoff if retry_after is None else min(retry_after, self.retry_after_cap_s))
        elapsed = time.monotonic() - started
        raise ServerUnavailable(
            f"POST {url}: no successful answer after {failures} attempts in {elapsed:.1f}s "
            f"(max_retries={self.max_retries}); last error: {last}"
        )

    async def _attempt(self, url: str, body: dict) -> dict | tuple[str, str, float | None]:
        """One POST: the answer, or (kind, message, Retry-After seconds) with kind `down` (server
        unreachable: wait for /health, when it has one) or `retry`."""
        down = "down" if self.health_probe else "retry"
        try:
            response = await self._http.post(url, json=body)
        except httpx.TimeoutException as error:
            return "retry", self._count_error("timeout", f"timeout ({type(error).__name__})"), None
        except httpx.TransportError as error:
            return down, self._count_error("connect", f"{type(error).__name__}: {error}"), None
        if response.status_code == 200:
            return self._decode(response, url)
        detail = f"HTTP {response.status_code}: {response.text[:300]}"
        if not _retryable_status(response.status_code):
            self._count_error("http_4xx")
            raise CompletionError(f"POST {url} rejected: {detail}")
        self._count_error("http_429" if response.status_code == 429 else "http_5xx", detail)
        wait = retry_after_s(response.headers.get("retry-after"))
        return (down if response.status_code in DOWN_STATUSES else "retry"), detail, wait

    async def _server_recovered(self) -> bool:
        """True once /health answers 200 after having failed (the server was down and is back);
        False if it answered at once (the failure was this request's). Raises ServerUnavailable
        when the budget is spent. Concurrent callers share one poller."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._wait_healthy())
        return await asyncio.shield(self._recovery)

    async def _wait_healthy(self) -> bool:
        health = self.base_url.removesuffix("/v1") + "/health"
        started, probes, last = time.monotonic(), 0, ""
        while True:
            probes += 1
            try:
                response = await self._http.get(health, timeout=min(5.0, self.health_poll_s * 5))
                if response.status_code == 200:
                    if probes > 1:
                        self._recovered_at = time.monotonic()
                    return probes > 1
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
            waited = time.monotonic() - started
            if waited >= self.health_wait_s:
                raise ServerUnavailable(
                    f"server {self.base_url} not healthy after waiting {waited:.1f}s "
                    f"(health_wait_s={self.health_wait_s}); last /health error: {last}"
                )
            await asyncio.sleep(min(self.health_poll_s, max(0.0, self.health_wait_s - waited)))

    def _decode(self, response: httpx.Response, url: str) -> dict:
        try:
            payload = response.json()
        except ValueError as error:
            self._count_error("protocol")
            raise CompletionError(f"POST {url}: answer is not JSON: {response.text[:200]!r}") from error
        if not isinstance(payload, dict):
            self._count_error("protocol")
            raise CompletionError(f"POST {url}: answer is not a JSON object")
        return payload

    def _count_error(self, kind: str, message: str = "") -> str:
        if self.on_error is not None:
            self.on_error(kind)
        return message or kind

    async def chat_prompt(self, user_text: str) -> str:
        """The model's chat template applied to one user message, rendered by the server (vLLM's
        /tokenize and /detokenize), ending with the generation prompt."""
        root = self.base_url.removesuffix("/v1")
        tokens = await self.post_json(f"{root}/tokenize", {
            "model": self.model, "messages": [{"role": "user", "content": user_text}],
            "add_generation_prompt": True, "add_special_tokens": False,
        })
        text = await self.post_json(f"{root}/detokenize", {"model": self.model, "tokens": tokens["tokens"]})
        return text["prompt"]
