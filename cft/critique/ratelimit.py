"""Async token-bucket limiter for an API's requests-per-minute and tokens-per-minute quotas.

Written by hand because the common packages (aiolimiter, limits) meter one quantity per
bucket and have no notion of a request costing a variable number of tokens against a second
quota at the same time; this is ~40 lines.
"""
from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`rate_per_minute` units refilled continuously; bursts up to `burst_s` seconds' worth.

    A short burst window (1 s by default) keeps us under providers that enforce a per-minute
    quota on sub-minute windows (OpenAI documents 60,000 RPM possibly being enforced as
    1,000 requests per second). A single acquisition larger than the capacity is clamped to
    the capacity, so one oversized request waits for a full bucket instead of forever.
    """

    def __init__(self, rate_per_minute: float, burst_s: float = 1.0):
        if rate_per_minute <= 0:
            raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self._level = self.capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        amount = min(amount, self.capacity)
        return max(0.0, (amount - self._level) / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self._level -= min(amount, self.capacity)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute, acquired together, first come first served.

    The lock makes waiters queue in arrival order, so a large request is not starved by a
    stream of small ones. Only one event loop may use an instance.
    """

    def __init__(self, requests_per_minute: float, tokens_per_minute: float, burst_s: float = 1.0):
        self.requests = TokenBucket(requests_per_minute, burst_s)
        self.tokens = TokenBucket(tokens_per_minute, burst_s)
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: float) -> None:
        async with self._lock:
            while True:
                wait = max(self.requests.wait_time(1), self.tokens.wait_time(tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.requests.take(1)
            self.tokens.take(tokens)
