"""Async client of an OpenAI-compatible server's `/v1/completions` (vLLM in practice).

Plain completions, not chat: rollouts continue a prompt plus a prefix of a response verbatim.
Concurrency is bounded by a semaphore; connection errors, timeouts, 5xx and 429 are retried with a
capped exponential back-off; any other 4xx is the caller's fault and raised at once. Token counts
come from the response's `usage`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ConfigDict, Field

from negrl_operator.api.stage_config import ServerRef


class CompletionError(RuntimeError):
    """A request that will not succeed: a 4xx, a malformed answer, or the retry budget spent."""


class ServerUnavailable(CompletionError):
    """Connection errors, timeouts, 5xx or 429 on every attempt of the retry budget."""


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


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class CompletionClient:
    """`await client.complete(request)`; use as `async with CompletionClient(...) as client`.

    `on_request(seconds, completion)` (seconds include retries) and `on_error(kind)` are hooks for metrics; `kind` is one of
    connect, timeout, http_429, http_5xx, http_4xx, protocol."""

    def __init__(
        self, base_url: str, model: str, *, timeout_s: float = 300.0, max_concurrency: int = 64,
        max_retries: int = 5, backoff_base_s: float = 0.5, backoff_cap_s: float = 10.0,
        extra_body: dict | None = None,
        on_request: Callable[[float, Completion], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.extra_body = dict(extra_body or {})
        self.on_request, self.on_error = on_request, on_error
        self._semaphore = asyncio.Semaphore(max_concurrency)
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits)

    @classmethod
    def for_server(cls, server: ServerRef, **kwargs) -> CompletionClient:
        return cls(server.base_url, server.model, timeout_s=server.timeout_s,
                   max_concurrency=server.max_concurrency, max_retries=server.max_retries, **kwargs)

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
        """POST with retries; returns the decoded JSON answer."""
        started = time.monotonic()
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_s(attempt - 1, self.backoff_base_s, self.backoff_cap_s))
            async with self._semaphore:
                try:
                    response = await self._http.post(url, json=body)
                except httpx.TimeoutException as error:
                    last = self._count_error("timeout", f"timeout ({type(error).__name__})")
                    continue
                except httpx.TransportError as error:
                    last = self._count_error("connect", f"{type(error).__name__}: {error}")
                    continue
            if response.status_code == 200:
                return self._decode(response, url)
            detail = f"HTTP {response.status_code}: {response.text[:300]}"
            if not _retryable_status(response.status_code):
                self._count_error("http_4xx")
                raise CompletionError(f"POST {url} rejected: {detail}")
            last = self._count_error("http_429" if response.status_code == 429 else "http_5xx", detail)
        elapsed = time.monotonic() - started
        raise ServerUnavailable(
            f"POST {url}: no successful answer after {self.max_retries + 1} attempts in {elapsed:.1f}s "
            f"(max_retries={self.max_retries}); last error: {last}"
        )

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
