"""The rules of the rate limits as pure functions: sliding windows, waits, clocks.

:class:`~mpexport.pacing.limiter.RateLimiter` applies them to live starts;
:func:`budget_wait` applies the same rules to a plan, for ``--dry-run``'s ETA.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from mpexport.options import DEFAULT_HOURLY_LIMIT, DEFAULT_QPS_LIMIT, DEFAULT_WORKERS, MAX_WORKERS
from mpexport.pacing.hour import HOUR

DEFAULT_QPS = DEFAULT_QPS_LIMIT
DEFAULT_HOURLY = DEFAULT_HOURLY_LIMIT
DEFAULT_CONCURRENCY = DEFAULT_WORKERS
MAX_CONCURRENCY = MAX_WORKERS
# Mixpanel counts arrivals; on a loaded machine or network a request can
# arrive a few hundred ms after we start it, squeezing the gap between two
# bursts. 0.1 s let 429s through on a busy 2-core machine; 0.25 s did not.
DEFAULT_MARGIN = 0.25
# Arrival can lag a start by up to a connection setup (the connect timeout is
# 10 s), and persisted wall-clock times can be nudged by NTP between runs.
# 10 s of an hour costs 0.3% of the throughput, so be generous.
DEFAULT_HOURLY_MARGIN = 10.0
# Per-second waits are at most ~1.1 s with the defaults and are routine; only
# longer waits are worth telling the user about.
DEFAULT_NOTICE_AFTER = 2.0
# How often a thread waiting for a free concurrency slot re-checks ``stop``.
# That wait is woken by release() at once; the poll only bounds how late a
# stop is noticed, because a Condition cannot also wait on the caller's Event.
STOP_POLL = 0.1

REASON_HOURLY = "hourly budget"
REASON_PER_SECOND = "per-second limit"
REASON_SERVER = "rate-limited by server"


class Clock(Protocol):
    """Time as the limiter sees it; injectable so tests never sleep."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the epoch (``time.time()``), for persisted state."""
        ...

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        """Wait until ``now() >= deadline`` or ``stop`` is set; True if ``stop`` is set."""
        ...


class SystemClock:
    """The real clocks (``time.monotonic`` and ``time.time`` unless given); waits on the stop event.

    A run passes its environment's clocks
    (:class:`~mpexport.environment.Environment`), so the one that built the
    run decides what time it is.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def now(self) -> float:
        """Monotonic seconds."""
        return self._monotonic()

    def wall(self) -> float:
        """Wall-clock seconds since the epoch."""
        return self._wall()

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        """Wait on ``stop`` (so Ctrl-C handlers that set it end the wait at once)."""
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            return stop.is_set()
        return stop.wait(min(remaining, threading.TIMEOUT_MAX))


class StartStore(Protocol):
    """Where the starts of all runs of a project meet.

    :class:`~mpexport.pacing.hour.HourlyState` is one: a file per project.
    """

    def load(self, now: float | None = None) -> list[float]:
        """Wall-clock timestamps of the starts in the last hour."""
        ...

    def claim(self, now: float, decide: Callable[[Sequence[float]], float | None]) -> float | None:
        """Call ``decide(foreign starts)`` while no other run can start; persist what it grants.

        ``decide`` gets the wall times other processes recorded since the
        store last looked and returns the wall time of the start it grants
        (recorded, and returned) or None.
        """
        ...

    def forget(self, ts: float, now: float) -> None:
        """Take back the start recorded at wall time ``ts`` (it never reached the server)."""
        ...


def per_second(qps: float, margin: float) -> tuple[int, float]:
    """(starts allowed, window length) implementing ``qps`` plus the margin.

    A fractional rate above 1 is rounded down (2.5/s → 2 per second): the
    sliding-window count must be an integer, and rounding down stays safe.
    """
    if qps >= 1:
        return math.floor(qps), 1.0 + margin
    return 1, 1.0 / qps + margin


def earliest(
    starts: Sequence[float],
    burst: int,
    second_window: float,
    hourly: int,
    hour_window: float,
    not_before: float,
) -> tuple[float, str]:
    """The earliest time one more start is allowed after the sorted ``starts``, and why.

    Only valid for a start not earlier than every element of ``starts``, which
    holds because starts are only ever added at the current time: then the
    new start's windows are the ones ending at it, and the binding start is
    the ``limit``-th most recent one.
    """
    when, reason = not_before, REASON_SERVER
    if len(starts) >= hourly:
        candidate = starts[-hourly] + hour_window
        if candidate > when:
            when, reason = candidate, REASON_HOURLY
    if len(starts) >= burst:
        candidate = starts[-burst] + second_window
        if candidate > when:
            when, reason = candidate, REASON_PER_SECOND
    return when, reason


def budget_wait(
    starts_needed: int,
    qps: float,
    hourly: int,
    used_in_last_hour: Iterable[float],
    now: float,
    *,
    margin: float = DEFAULT_MARGIN,
    hourly_margin: float = DEFAULT_HOURLY_MARGIN,
) -> float:
    """Seconds until the last of ``starts_needed`` more starts may begin, by the rate limits.

    ``used_in_last_hour`` are timestamps of earlier starts on the same clock as
    ``now`` (typically ``HourlyState.load()`` and ``time.time()``). The result
    is a lower bound for a dry run's ETA: it assumes every start goes as soon as
    the limits allow and ignores concurrency and request durations. It uses
    the same rules as :class:`RateLimiter`, so the estimate matches what the
    limiter will do.
    """
    if starts_needed <= 0:
        return 0.0
    validate(qps, hourly, 1, margin, hourly_margin)
    burst, second_window = per_second(qps, margin)
    hour_window = HOUR + hourly_margin
    # Timestamps "in the future" (clock skew) count as starts made just now.
    starts = sorted(min(t, now) for t in used_in_last_hour if t > now - hour_window)
    last = now
    for _ in range(starts_needed):
        last, _reason = earliest(starts, burst, second_window, hourly, hour_window, now)
        starts.append(last)
    return last - now


def validate(
    qps: float, hourly: int, concurrency: int, margin: float, hourly_margin: float
) -> None:
    if not (qps > 0 and math.isfinite(qps)):
        raise ValueError(f"qps must be a positive number, not {qps!r}")
    if hourly < 1:
        raise ValueError(f"hourly must be at least 1, not {hourly!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
    if not (margin >= 0 and hourly_margin >= 0):
        raise ValueError("margins must not be negative")
