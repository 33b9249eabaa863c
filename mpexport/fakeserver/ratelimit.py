"""Mixpanel-style per-project rate limits: per second, per hour, concurrent."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the 429 body's ``error`` text."""

    error: str


class RateLimiter:
    """Admit or refuse arriving requests.

    Windows are sliding and count *admitted* arrivals only: a refused request
    uses no budget. That is the kinder reading of the real service (which does
    not document it) and it keeps the guarantee simple for tests: in any 1.0 s
    window at most ``qps_limit`` requests were admitted, in any 3600 s window at
    most ``hourly_limit``. Concurrency counts admitted requests not yet released.
    """

    def __init__(
        self,
        project_id: int,
        clock: Callable[[], float],
        qps_limit: float | None = None,
        hourly_limit: int | None = None,
        concurrency_limit: int | None = None,
        kind: str = "export",
    ) -> None:
        self.project_id = project_id
        # Names the requests in the concurrency refusal ("export", "engage").
        self.kind = kind
        self.clock = clock
        self.qps_limit = qps_limit
        self.hourly_limit = hourly_limit
        self.concurrency_limit = concurrency_limit
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()
        self._running = 0
        self._peak = 0

    @property
    def running(self) -> int:
        """Requests admitted and not yet released."""
        with self._lock:
            return self._running

    @property
    def peak(self) -> int:
        """The most requests ever admitted and not yet released at one moment."""
        with self._lock:
            return self._peak

    def try_acquire(self) -> Refusal | None:
        """Admit a request (returns None; call ``release`` later) or refuse it."""
        with self._lock:
            now = self.clock()
            while self._arrivals and self._arrivals[0] <= now - 3600.0:
                self._arrivals.popleft()
            last_second = 0
            for t in reversed(self._arrivals):
                if t <= now - 1.0:
                    break
                last_second += 1
            if self.concurrency_limit is not None and self._running >= self.concurrency_limit:
                return Refusal(f"too many {self.kind} requests in progress for this project")
            over_qps = self.qps_limit is not None and last_second + 1 > self.qps_limit
            over_hour = self.hourly_limit is not None and len(self._arrivals) >= self.hourly_limit
            if over_qps or over_hour:
                return Refusal(
                    f"Query rate limit exceeded for project_id: {self.project_id}. "
                    f"{self._running}/{self.concurrency_limit or '-'} queries running "
                    f"concurrently, {last_second + 1}/{self.qps_limit or '-'} queries in "
                    f"the last second and {len(self._arrivals) + 1}/{self.hourly_limit or '-'} "
                    "queries in the last hour."
                )
            self._arrivals.append(now)
            self._running += 1
            self._peak = max(self._peak, self._running)
            return None

    def release(self) -> None:
        """Mark one admitted request as finished."""
        with self._lock:
            self._running -= 1
