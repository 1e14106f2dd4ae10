"""Spending limits of a client of a paid endpoint: a request rate, hard caps on requests and tokens,
and the server's own `Retry-After`.

The decisions are pure (`RateLimiter.reserve`, `Budget.admit`; `retry_after_s` is the client's); `Throttle` is the
thin async shell the completion client calls before each attempt and after each answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from negrl_sampler.serving.client import CompletionError


class BudgetExhausted(CompletionError):
    """A hard cap (requests or tokens) is reached: no further request is sent."""


@dataclass
class RateLimiter:
    """Starts spaced at least 1/rate apart: `reserve(now)` books the next free slot and returns the
    wait until it (0 when the client is idle long enough)."""

    per_second: float
    next_free: float = float("-inf")

    def reserve(self, now: float) -> float:
        start = max(now, self.next_free)
        self.next_free = start + 1.0 / self.per_second
        return start - now


@dataclass
class Budget:
    """Hard caps: `admit()` counts a request or raises BudgetExhausted naming the cap and the fix;
    `spend(tokens)` adds the tokens an answer reports."""

    max_requests: int | None = None
    max_tokens: int | None = None
    requests: int = 0
    tokens: int = 0

    def admit(self) -> None:
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise BudgetExhausted(f"request cap reached: {self.requests} requests sent (maxRequests="
                                  f"{self.max_requests}); raise teacher.endpoint.maxRequests to go on")
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            raise BudgetExhausted(f"token cap reached: {self.tokens} tokens used (maxTokensTotal="
                                  f"{self.max_tokens}); raise teacher.endpoint.maxTokensTotal to go on")
        self.requests += 1

    def spend(self, tokens: int) -> None:
        self.tokens += tokens


def usage_tokens(payload: dict) -> int:
    usage = payload.get("usage") or {}
    try:
        return int(usage.get("total_tokens") or 0) or int(usage.get("prompt_tokens") or 0) + int(
            usage.get("completion_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0


@dataclass
class Throttle:
    """`await acquire()` before each attempt (waits for the rate, checks the caps); `settle(payload)`
    after each answer. `sleep` is injectable so tests can record the waits."""

    rate: RateLimiter | None = None
    budget: Budget = field(default_factory=Budget)
    clock: object = time.monotonic
    sleep: object = asyncio.sleep
    waits: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, requests_per_second: float | None, max_requests: int | None, max_tokens: int | None) -> Throttle:
        rate = RateLimiter(requests_per_second) if requests_per_second else None
        return cls(rate=rate, budget=Budget(max_requests, max_tokens))

    async def acquire(self) -> None:
        self.budget.admit()
        if self.rate is not None:
            wait = self.rate.reserve(self.clock())
            if wait > 0:
                self.waits.append(wait)
                await self.sleep(wait)

    def settle(self, payload: dict) -> None:
        self.budget.spend(usage_tokens(payload))
