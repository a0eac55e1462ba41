"""Rate limits of the admin (per replica, in memory: a limit is a bound on one process's work, and the
numbers are small enough that N replicas multiplying them changes nothing an attacker could use).

* :class:`FailureGuard`: failed sign-ins and failed API authentications per client address (as the
  trusted proxy forwarded it); over the limit within the window, the address is refused with 429 until
  its oldest failure leaves the window, before any token is even looked at. A 256-bit token cannot be
  guessed, so this protects the store and the logs more than the tokens.
* :class:`RequestRate`: API requests per token (aiolimiter's leaky bucket); a request over the rate is
  refused at once with 429 and ``Retry-After`` (an API client retries; the UI is not limited).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

#: Addresses (or tokens) remembered at most; the least recently seen is forgotten first.
MAX_KEYS = 10_000


class FailureGuard:
    def __init__(
        self, limit: int, *, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = self.clock()
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        if len(failures) < self.limit:
            return None
        return max(1, math.ceil(self.window - (now - failures[0])))

    def failed(self, address: str) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=self.limit)
        failures.append(self.clock())
        self._failures[address] = failures
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)


class RequestRate:
    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def admit(self, key: str) -> bool:
        """Whether one more request of ``key`` fits its rate now (then it is counted)."""
        limiter = self._limiters.pop(key, None) or AsyncLimiter(max(1.0, self.per_second), 1.0)
        self._limiters[key] = limiter
        while len(self._limiters) > MAX_KEYS:
            self._limiters.popitem(last=False)
        if not limiter.has_capacity():
            return False
        await limiter.acquire()
        return True
