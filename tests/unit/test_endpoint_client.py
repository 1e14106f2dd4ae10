"""The teacher endpoint's client against a loopback stub: Retry-After (seconds and HTTP date) replaces
the back-off, 429 and 5xx are retried up to max_retries without /health probes, the request rate is
held, the API key is sent as a bearer token, and the hard caps stop further requests."""

import asyncio
import time
from datetime import UTC, datetime

import pytest

from negrl_sampler.serving.client import CompletionClient, CompletionRequest, ServerUnavailable, retry_after_s
from negrl_sampler.serving.throttle import Budget, BudgetExhausted, RateLimiter, Throttle, usage_tokens
from tests.fixtures.endpoint_stub import EndpointStub

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 14, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value, seconds", [
    ("3", 3.0),
    (" 120 ", 120.0),
    ("Sun, 06 Dec 2026 14:00:05 GMT", 5.0),
    ("Sun, 06 Dec 2026 13:59:00 GMT", 0.0),  # a date in the past: go now
    ("soon", None),
    ("-1", None),
    ("", None),
    (None, None),
])
def test_retry_after_reads_seconds_and_http_dates(value, seconds):
    assert retry_after_s(value, now=NOW) == seconds


def test_rate_limiter_spaces_starts_by_one_over_the_rate():
    limiter = RateLimiter(per_second=2.0)
    assert [limiter.reserve(now) for now in (0.0, 0.0, 0.2, 5.0, 5.1)] == pytest.approx([0.0, 0.5, 0.8, 0.0, 0.4])


def test_budget_caps_requests_and_tokens_and_names_the_field():
    budget = Budget(max_requests=2)
    budget.admit()
    budget.admit()
    with pytest.raises(BudgetExhausted, match=r"2 requests sent \(maxRequests=2\); raise teacher.endpoint.maxRequests"):
        budget.admit()
    tokens = Budget(max_tokens=10)
    tokens.admit()
    tokens.spend(12)
    with pytest.raises(BudgetExhausted, match=r"12 tokens used \(maxTokensTotal=10\)"):
        tokens.admit()
    assert usage_tokens({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == 7
    assert usage_tokens({"usage": {"total_tokens": 9, "prompt_tokens": 3}}) == 9
    assert usage_tokens({}) == 0


@pytest.fixture
def stub(request):
    server = EndpointStub(**getattr(request, "param", {}))
    yield server
    server.close()


def _client(stub, waits, **kwargs):
    kwargs.setdefault("backoff_base_s", 0.05)
    client = CompletionClient(stub.base_url, "teacher", health_probe=False, **kwargs)

    async def record(seconds):
        waits.append(seconds)

    client.sleep = record  # the back-off waits, recorded instead of slept
    return client


async def _complete(stub, waits, errors, **kwargs):
    async with _client(stub, waits, on_error=errors.append, **kwargs) as client:
        return await client.complete(CompletionRequest(prompt="Q", n=2))


PAST = "Sun, 06 Dec 2026 13:00:00 GMT"


@pytest.mark.parametrize("stub", [{"script": [(429, {"Retry-After": "3"}), (503, {}), (500, {"Retry-After": PAST}),
                                              (502, {})]}], indirect=True)
def test_429_and_5xx_are_retried_with_retry_after_or_back_off(stub):
    waits, errors = [], []
    completion = asyncio.run(_complete(stub, waits, errors, api_key="sk-unit"))
    assert [choice.text for choice in completion.choices] == ["Q|0", "Q|1"]
    # 429 says 3 s; 503 has no header: back-off 0.05 * 2**1; 500's date is past: 0; 502: 0.05 * 2**3
    assert waits == [3.0, 0.1, 0.0, 0.4]
    assert errors == ["http_429", "http_5xx", "http_5xx", "http_5xx"]
    assert len(stub.bodies) == 5 and stub.health_probes == 0  # an endpoint has no /health: all count as retries
    assert stub.authorizations == ["Bearer sk-unit"] * 5


@pytest.mark.parametrize("stub", [{"script": [(429, {"Retry-After": "1"})] * 3}], indirect=True)
def test_retries_end_after_max_retries(stub):
    waits, errors = [], []
    with pytest.raises(ServerUnavailable, match=r"after 3 attempts .*max_retries=2.*HTTP 429"):
        asyncio.run(_complete(stub, waits, errors, max_retries=2))
    assert waits == [1.0, 1.0] and len(stub.bodies) == 3
    assert stub.authorizations == [None] * 3  # no key: no Authorization header


def test_retry_after_is_capped(stub):
    stub.script = [(429, {"Retry-After": "86400"})]
    waits = []
    asyncio.run(_complete(stub, waits, [], retry_after_cap_s=7.0))
    assert waits == [7.0]


def test_throttle_books_one_slot_per_request_at_the_rate():
    waits = []

    async def record(seconds):
        waits.append(seconds)

    throttle = Throttle(rate=RateLimiter(per_second=20.0), clock=lambda: 100.0, sleep=record)  # all at once

    async def six():
        for _ in range(6):
            await throttle.acquire()

    asyncio.run(six())
    assert waits == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25]) and throttle.budget.requests == 6


def test_requests_reach_the_server_no_faster_than_the_rate(stub):
    throttle = Throttle.of(requests_per_second=10.0, max_requests=None, max_tokens=None)

    async def many():
        async with _client(stub, [], throttle=throttle, max_concurrency=8) as client:
            await asyncio.gather(*(client.complete(CompletionRequest(prompt=f"q{i}")) for i in range(6)))

    started = time.monotonic()
    asyncio.run(many())
    # six starts 0.1 s apart: at least 0.5 s from the first to the last (0.1 s of slack for transit)
    assert len(stub.arrivals) == 6 and stub.arrivals[-1] - stub.arrivals[0] >= 0.4, stub.arrivals
    assert time.monotonic() - started >= 0.5


def test_caps_stop_requests_and_count_retries(stub):
    stub.script = [(500, {})]
    throttle = Throttle.of(None, max_requests=3, max_tokens=None)

    async def three():
        async with _client(stub, [], throttle=throttle) as client:
            await client.complete(CompletionRequest(prompt="a"))  # a 500, then a 200: two requests
            await client.complete(CompletionRequest(prompt="b"))
            await client.complete(CompletionRequest(prompt="c"))

    with pytest.raises(BudgetExhausted, match=r"3 requests sent \(maxRequests=3\)"):
        asyncio.run(three())
    assert len(stub.bodies) == 3
    assert throttle.budget.tokens == 2 * (EndpointStub.PROMPT_TOKENS + EndpointStub.TOKENS_PER_CHOICE)


def test_token_cap_stops_once_the_answers_used_it(stub):
    throttle = Throttle.of(None, max_requests=None, max_tokens=30)  # each answer: 10 prompt + 5 generated

    async def until_stopped():
        async with _client(stub, [], throttle=throttle) as client:
            for index in range(5):
                await client.complete(CompletionRequest(prompt=str(index)))

    with pytest.raises(BudgetExhausted, match=r"30 tokens used \(maxTokensTotal=30\)"):
        asyncio.run(until_stopped())
    assert len(stub.bodies) == 2
