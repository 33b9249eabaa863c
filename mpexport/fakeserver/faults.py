"""Deciding which fault, if any, an admitted request gets."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterable, Sequence

from mpexport.fakeserver.config import FAULT_KINDS

QueryKey = tuple[tuple[str, str], ...]


def query_key(params: dict[str, str]) -> QueryKey:
    """The identity of a query: its full, order-independent parameter set."""
    return tuple(sorted(params.items()))


class FaultPlanner:
    """Scheduled, date-bound and random faults (see ``ServerConfig``).

    Only requests that pass authentication, validation and rate limiting reach
    the planner, so a 429 from the limiter does not use up a query's faulty
    attempts. ``fail_dates`` queries are not numbered in the schedule.
    """

    def __init__(
        self,
        faults: Sequence[str],
        fault_attempts: int,
        fail_dates: frozenset[dt.date],
        fault_rate: float,
        fault_seed: int,
    ) -> None:
        self.faults = tuple(faults)
        self.fault_attempts = fault_attempts
        self.fail_dates = fail_dates
        self.fault_rate = fault_rate
        self._rng = random.Random(fault_seed)
        self._lock = threading.Lock()
        self._numbers: dict[QueryKey, int] = {}
        self._attempts: dict[QueryKey, int] = {}

    def choose(self, params: dict[str, str], dates: Iterable[dt.date]) -> str | None:
        """Return the fault kind for this request, or None to serve it normally."""
        if self.fail_dates and any(day in self.fail_dates for day in dates):
            return "http500"
        key = query_key(params)
        with self._lock:
            number = self._numbers.setdefault(key, len(self._numbers))
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            if self.faults and attempt < self.fault_attempts:
                return self.faults[number % len(self.faults)]
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                return self._rng.choice(FAULT_KINDS)
        return None

    def attempts(self, params: dict[str, str]) -> int:
        """How many times this query has reached the planner."""
        with self._lock:
            return self._attempts.get(query_key(params), 0)
