"""The shared client-side limiter every export request start passes through.

Mixpanel allows, per project, 3 queries per second, 60 per rolling hour and
100 at once; more gives 429. One :class:`RateLimiter` is shared by all worker
threads of a run and keeps the run under all three:

* at most ``floor(qps)`` starts in any sliding window of ``1.0 s + margin``
  (for ``qps < 1``: one start per ``1/qps + margin`` seconds),
* at most ``hourly`` starts in any sliding window of ``3600 s + hourly_margin``,
* at most ``concurrency`` requests between :meth:`RateLimiter.acquire` and
  :meth:`RateLimiter.release` (capped at 100),
* nobody starts before a server-imposed backoff ends (:meth:`RateLimiter.penalize`).

A start that never reached Mixpanel (the connection was refused, the TLS
handshake failed, the certificate was not trusted) is given back
(:meth:`RateLimiter.give_back`): it leaves both windows and the shared state.

Why the margins: Mixpanel counts *arrivals* at its side, and network jitter
can bring two of our starts closer together by the time they arrive. Keeping
sliding windows slightly longer than the server's also satisfies fixed
per-second buckets and token buckets, whichever the server really uses.

Bursts are allowed: three starts may go at the same instant; the fourth waits
until the first is ``1.0 s + margin`` old. The hour's starts are persisted
(:mod:`mpexport.pacing.hour`) so a run right after another one does not
spend the budget twice.

Runs of one project at the same time (a manual export while cron syncs) share
both windows through that state: a start is granted only under the state
file's lock, after counting every start other processes recorded, and is
recorded before the lock is let go. Mixpanel can answer a 429 with
``Retry-After`` up to an hour, so two runs that each keep to 3/s on their own
but not together can stall for that long. Without a state (``share_hour=False``)
pacing stays within the process. The concurrency cap is per process.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mpexport.events import WaitingForBudget
from mpexport.pacing.hour import HOUR, HourlyState, default_path
from mpexport.pacing.windows import (
    DEFAULT_CONCURRENCY,
    DEFAULT_HOURLY,
    DEFAULT_HOURLY_MARGIN,
    DEFAULT_MARGIN,
    DEFAULT_NOTICE_AFTER,
    DEFAULT_QPS,
    MAX_CONCURRENCY,
    REASON_HOURLY,
    REASON_PER_SECOND,
    REASON_SERVER,
    STOP_POLL,
    Clock,
    StartStore,
    SystemClock,
    budget_wait,
    earliest,
    per_second,
    validate,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_HOURLY",
    "DEFAULT_HOURLY_MARGIN",
    "DEFAULT_MARGIN",
    "DEFAULT_QPS",
    "HOUR",
    "MAX_CONCURRENCY",
    "REASON_HOURLY",
    "REASON_PER_SECOND",
    "REASON_SERVER",
    "Clock",
    "HourlyState",
    "RateLimiter",
    "StartStore",
    "SystemClock",
    "budget_wait",
    "default_path",
]


@dataclass(frozen=True)
class _Wait:
    """A start that must wait: until when (monotonic), what to tell, and whether to tell it."""

    until: float
    event: WaitingForBudget
    notify: bool


class RateLimiter:
    """A thread-safe limiter shared by all workers of a run.

    Use::

        if not limiter.acquire(stop):
            return                      # stopping
        try:
            ... make the request ...    # on 429: limiter.penalize(retry_after)
        finally:
            limiter.release()

    Waiting threads sleep until the moment the limits allow (no spinning) and
    then re-check, so a :meth:`penalize` or a start by another process seen
    meanwhile is honoured. Order among waiters is not strictly FIFO.
    """

    def __init__(
        self,
        qps: float = DEFAULT_QPS,
        hourly: int = DEFAULT_HOURLY,
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        margin: float = DEFAULT_MARGIN,
        hourly_margin: float = DEFAULT_HOURLY_MARGIN,
        clock: Clock | None = None,
        state: StartStore | None = None,
        on_wait: Callable[[WaitingForBudget], None] | None = None,
        notice_after: float = DEFAULT_NOTICE_AFTER,
    ) -> None:
        """Create a limiter; ``state`` brings in (and keeps) the hour's starts of earlier runs.

        ``concurrency`` above 100 (Mixpanel's limit) is lowered to 100.
        ``on_wait(event)`` is called from a waiting thread when a start must
        wait at least ``notice_after`` seconds, once per distinct wait (many
        workers waiting for the same moment give one call); the event's reason
        is ``REASON_HOURLY``, ``REASON_PER_SECOND`` or ``REASON_SERVER``, and
        an hourly wait says how many starts of the hour other runs made.
        """
        validate(qps, hourly, concurrency, margin, hourly_margin)
        self.qps = qps
        self.hourly = hourly
        self.concurrency = min(concurrency, MAX_CONCURRENCY)
        self._burst, self._second_window = per_second(qps, margin)
        self._hour_window = HOUR + hourly_margin
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._state = state
        self._on_wait = on_wait
        self._notice_after = notice_after
        self._cond = threading.Condition()
        # Monotonic times of starts (ours, earlier runs', other processes'),
        # sorted; pruned to the longest window.
        self._starts: list[float] = []
        # The starts of this limiter among them (same times), so that an hourly
        # wait can say how much of the hour other runs spent.
        self._own: list[float] = []
        self._in_flight = 0
        self._penalty_until = -math.inf
        # The deadline last reported to on_wait: waits for the same or an
        # earlier moment are not reported again.
        self._announced = -math.inf
        # Per thread, the start its acquire() took (monotonic, and the wall
        # time recorded in the state if any), until release(): give_back()
        # is told nothing else, and a worker's calls all come from its thread.
        self._taken = threading.local()
        if state is not None:
            self._absorb(state.load(self._clock.wall()))

    # -- public API --------------------------------------------------------

    def set_on_wait(self, on_wait: Callable[[WaitingForBudget], None] | None) -> None:
        """Set (or clear) the callback told about noticeable waits."""
        with self._cond:
            self._on_wait = on_wait

    def acquire(self, stop: threading.Event) -> bool:
        """Block until a request may start; False (nothing taken) if ``stop`` is set first.

        On True the caller owns a concurrency slot and must call :meth:`release`.
        """
        if not self._take_slot(stop):
            return False
        try:
            started = self._wait_for_start(stop)
        except BaseException:
            # The state store swallows I/O errors; anything else is a bug, but
            # the caller must not be left owning a slot it never got.
            self.release()
            raise
        if not started:
            self.release()
            return False
        return True

    def release(self) -> None:
        """The request finished (in any way): free its concurrency slot."""
        self._taken.start = None
        with self._cond:
            if self._in_flight <= 0:
                raise RuntimeError("release() without a matching acquire()")
            self._in_flight -= 1
            self._cond.notify()

    def give_back(self) -> None:
        """The request this thread started never reached Mixpanel: uncount its start.

        Call it between :meth:`acquire` and :meth:`release`, on the thread
        that acquired; once per start (later calls do nothing). The start
        leaves the per-second and the hourly windows and the shared state
        file. Threads already waiting notice the room at their next check.
        """
        taken: tuple[float, float | None] | None = getattr(self._taken, "start", None)
        self._taken.start = None
        if taken is None:
            return
        started, wall = taken
        with self._cond:
            index = bisect.bisect_left(self._starts, started)
            # Pruned meanwhile (only after the longest window): nothing to take back.
            if index < len(self._starts) and self._starts[index] == started:
                del self._starts[index]
            index = bisect.bisect_left(self._own, started)
            if index < len(self._own) and self._own[index] == started:
                del self._own[index]
        if wall is not None and self._state is not None:
            self._state.forget(wall, self._clock.wall())

    def penalize(self, seconds: float) -> None:
        """After a 429: no request starts before ``seconds`` from now (shared by all workers).

        Penalties do not shorten each other: the latest end wins. Threads
        already waiting notice it when they wake and wait again.
        """
        if not math.isfinite(seconds):
            raise ValueError(f"penalty must be finite, not {seconds!r}")
        if seconds <= 0:
            return
        with self._cond:
            self._penalty_until = max(self._penalty_until, self._clock.now() + seconds)

    def next_start_delay(self) -> float:
        """Seconds a start would wait for the rate limits now (concurrency not counted)."""
        with self._cond:
            now = self._clock.now()
            when, _reason = self._earliest_locked(now)
            return max(0.0, when - now)

    @property
    def hourly_used(self) -> int:
        """Starts counted against the hourly budget now, earlier runs' included."""
        with self._cond:
            now = self._clock.now()
            self._prune_locked(now)
            return len(self._starts) - bisect.bisect_right(self._starts, now - self._hour_window)

    @property
    def in_flight(self) -> int:
        """Requests acquired and not yet released."""
        with self._cond:
            return self._in_flight

    # -- internals ---------------------------------------------------------

    def _take_slot(self, stop: threading.Event) -> bool:
        with self._cond:
            while True:
                if stop.is_set():
                    return False
                if self._in_flight < self.concurrency:
                    self._in_flight += 1
                    return True
                self._cond.wait(STOP_POLL)

    def _wait_for_start(self, stop: threading.Event) -> bool:
        """Wait for the time limits, then record the start; False if stopped first."""
        while True:
            if stop.is_set():
                return False
            wait = self._try_start()
            if wait is None:
                return True
            if wait.notify and self._on_wait is not None:
                self._on_wait(wait.event)
            # The deadline only moves later while we sleep (new starts,
            # penalties), never earlier, so sleeping to it loses nothing; on
            # waking we re-check rather than trust it.
            if self._clock.sleep_until(wait.until, stop):
                return False

    def _try_start(self) -> _Wait | None:
        """Start now if the limits allow it (None), else say how long to wait."""
        with self._cond:
            now = self._clock.now()
            when, reason = self._earliest_locked(now)
            if when > now:
                return self._wait_locked(now, when, reason)
            if self._state is None:
                bisect.insort(self._starts, now)
                bisect.insort(self._own, now)
                self._taken.start = (now, None)
                return None
        # Allowed by what this process knows, but other runs of the project
        # may have started meanwhile: decide again under the store's lock.
        return self._claim(self._state)

    def _claim(self, state: StartStore) -> _Wait | None:
        """Start now if the starts of every run allow it (None), else say how long to wait.

        The decision runs under the store's lock, which every process of the
        project waits for, so it only counts and compares; the caller sleeps.
        """
        denied: _Wait | None = None

        def decide(foreign: Sequence[float]) -> float | None:
            nonlocal denied
            with self._cond:
                self._absorb_locked(foreign)
                now = self._clock.now()
                when, reason = self._earliest_locked(now)
                if when > now:
                    denied = self._wait_locked(now, when, reason)
                    return None
                bisect.insort(self._starts, now)
                bisect.insort(self._own, now)
                wall = self._clock.wall()
                self._taken.start = (now, wall)
                return wall

        state.claim(self._clock.wall(), decide)
        return denied

    def _wait_locked(self, now: float, when: float, reason: str) -> _Wait:
        # Many threads waiting for the same moment report it once.
        notify = (
            self._on_wait is not None
            and when - now >= self._notice_after
            and when > self._announced
        )
        if notify:
            self._announced = when
        event = WaitingForBudget(when - now, reason)
        if reason == REASON_HOURLY:
            # Pruned to the longest window, which may be the per-second one.
            since = now - self._hour_window
            used = len(self._starts) - bisect.bisect_right(self._starts, since)
            own = len(self._own) - bisect.bisect_right(self._own, since)
            event = WaitingForBudget(when - now, reason, used=used, limit=self.hourly,
                                     by_others=max(0, used - own),
                                     until=self._clock.wall() + (when - now))
        return _Wait(when, event, notify)

    def _prune_locked(self, now: float) -> None:
        keep_after = now - max(self._hour_window, self._second_window)
        del self._starts[: bisect.bisect_right(self._starts, keep_after)]
        del self._own[: bisect.bisect_right(self._own, keep_after)]

    def _earliest_locked(self, now: float) -> tuple[float, str]:
        self._prune_locked(now)
        return earliest(
            self._starts,
            self._burst,
            self._second_window,
            self.hourly,
            self._hour_window,
            self._penalty_until,
        )

    def _absorb(self, walls: Iterable[float]) -> None:
        """Count starts known by wall time (earlier runs, other processes) as monotonic."""
        with self._cond:
            self._absorb_locked(walls)

    def _absorb_locked(self, walls: Iterable[float]) -> None:
        now = self._clock.now()
        offset = now - self._clock.wall()
        for ts in walls:
            # Never in the future: _earliest assumes new starts come last.
            bisect.insort(self._starts, min(now, ts + offset))
        self._prune_locked(now)
