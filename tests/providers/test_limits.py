"""The client-side rate limiter and the retry policy, on a fake clock."""

from __future__ import annotations

import pytest

from hflite.data.providers import REGISTRY, provider_class
from hflite.data.providers.base import HttpOptions, Limits, RateLimiter, Retryable, call_with_retries


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_limiter_keeps_under_the_per_minute_limit():
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_minute=5), clock, clock.sleep)
    for _ in range(12):
        limiter.acquire()
        clock.now += 1.0  # one call a second, faster than 5 a minute allows
    # calls 6 and 11 had to wait for the oldest call to leave the 60 s window
    assert len(clock.slept) == 2
    assert clock.slept[0] == pytest.approx(55.0)


def test_the_limiter_keeps_under_the_per_day_limit():
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_day=3), clock, clock.sleep)
    for _ in range(4):
        limiter.acquire()
    assert clock.slept == [pytest.approx(86_400.0)]


def test_a_vendor_s_retry_after_wins_over_the_backoff():
    clock = FakeClock()
    options = HttpOptions(max_tries=3, backoff_base_s=0.5, backoff_max_s=8.0, sleep=clock.sleep)
    answers = iter([Retryable("HTTP 429", retry_after=7.0), Retryable("HTTP 503"), None])

    def once() -> str:
        exc = next(answers)
        if exc is not None:
            raise exc
        return "ok"

    assert call_with_retries("v", options, once) == "ok"
    assert clock.slept[0] == 7.0  # Retry-After
    assert 0.5 <= clock.slept[1] <= 1.0  # exponential backoff with jitter, second attempt


def test_every_provider_declares_its_limits_and_what_it_supplies():
    for name in REGISTRY:
        cls = provider_class(name)
        assert isinstance(cls.limits, Limits) and (cls.limits.per_minute or cls.limits.per_day), name
        assert cls.supplies, name
