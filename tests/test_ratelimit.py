"""The shared rate limiter and its persisted hourly budget.

Almost everything runs on fake clocks whose sleeps advance time instantly, so
hours of simulated traffic take milliseconds. The tests about real
interruption (stop while waiting) and real concurrency use the system clock;
they wait for what the other threads did (events, conditions), never for a
while, and assert no durations.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpexport.environment import state_dir
from mpexport.events import WaitingForBudget
from mpexport.pacing.hour import (
    DEFAULT_RETENTION,
    HourlyState,
    default_path,
)
from mpexport.pacing.limiter import (
    DEFAULT_MARGIN,
    MAX_CONCURRENCY,
    REASON_HOURLY,
    REASON_PER_SECOND,
    REASON_SERVER,
    RateLimiter,
    SystemClock,
    budget_wait,
)

HOST = "https://data.mixpanel.com"
PROJECT = 12345
WALL_BASE = 1_719_000_000.0  # a realistic time.time() for persisted-state tests
EPS = 1e-6


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path) -> Iterator[Path]:
    """The state folder the tests' budget files go to (a run's Environment.state_dir)."""
    yield tmp_path / "state"


# -- fakes -----------------------------------------------------------------


class FakeClock:
    """Thread-safe; sleeping jumps time to the deadline at once."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 0.0) -> None:
        self._t = start
        self._offset = wall_offset
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def wall(self) -> float:
        with self._lock:
            return self._t + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds

    def advance_to(self, t: float) -> None:
        with self._lock:
            self._t = max(self._t, t)

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        self.advance_to(deadline)
        return stop.is_set()


class ManualClock:
    """Sleepers block until the test moves time forward (or stop is set)."""

    def __init__(self) -> None:
        self._t = 0.0
        self._cond = threading.Condition()
        self._deadlines: list[float] = []  # one per thread inside sleep_until

    def now(self) -> float:
        with self._cond:
            return self._t

    def wall(self) -> float:
        return self.now()

    def advance_to(self, t: float) -> None:
        with self._cond:
            self._t = t
            self._cond.notify_all()

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        with self._cond:
            self._deadlines.append(deadline)
            self._cond.notify_all()
            try:
                while self._t < deadline and not stop.is_set():
                    # Short real timeout only because stop cannot notify us.
                    self._cond.wait(0.005)
            finally:
                self._deadlines.remove(deadline)
                self._cond.notify_all()
        return stop.is_set()

    def wait_for_sleepers(self, n: int, until: float | None = None) -> None:
        """Wait until exactly ``n`` threads sleep towards a moment still ahead.

        A thread whose deadline has passed but that has not woken yet does
        not count, so after ``advance_to`` this waits for the threads that
        went back to sleep, not for stragglers of the earlier sleep. With
        ``until``, only sleepers towards that moment count.
        """

        def asleep() -> int:
            return sum(
                1 for d in self._deadlines
                if d > self._t and (until is None or d == pytest.approx(until))
            )

        with self._cond:
            assert self._cond.wait_for(lambda: asleep() == n, timeout=60), self._deadlines


class MemoryStore:
    """A StartStore that remembers every recorded start (the limiter's commit times)."""

    def __init__(self, initial: Sequence[float] = ()) -> None:
        self.starts: list[float] = list(initial)
        self._lock = threading.Lock()

    def load(self, now: float | None = None) -> list[float]:
        return list(self.starts)

    def claim(self, now: float, decide: Callable[[Sequence[float]], float | None]) -> float | None:
        with self._lock:
            ts = decide([])
            if ts is not None:
                self.starts.append(ts)
            return ts


def assert_within_limits(
    starts: Sequence[float], burst: int, second_window: float, hourly: int, hour_window: float
) -> None:
    """No window of either length holds more starts than allowed."""
    s = sorted(starts)
    for i in range(len(s) - burst):
        assert s[i + burst] - s[i] >= second_window - EPS, (i, s[i], s[i + burst])
    for i in range(len(s) - hourly):
        assert s[i + hourly] - s[i] >= hour_window - EPS, (i, s[i], s[i + hourly])


def assert_calls(calls: Sequence[tuple[float, str]], expected: Sequence[tuple[float, str]]) -> None:
    """on_wait calls equal ``expected`` (seconds compared approximately)."""
    assert [r for _, r in calls] == [r for _, r in expected]
    for (seconds, _), (want, _) in zip(calls, expected, strict=True):
        assert abs(seconds - want) < EPS, (seconds, want)


def run_in_thread(target: object) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def body() -> None:
        result.append(target())  # type: ignore[operator]

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


# -- per-second, hourly, concurrency ---------------------------------------


def test_bursts_of_qps_then_spaced_by_window_plus_margin() -> None:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(qps=3, hourly=1000, clock=clock, margin=0.1)
    stop = threading.Event()
    starts = []
    for _ in range(7):
        assert limiter.acquire(stop)
        starts.append(clock.now())
        limiter.release()
    assert starts == pytest.approx([0, 0, 0, 1.1, 1.1, 1.1, 2.2])


def test_fractional_qps_below_one_spaces_single_starts() -> None:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(qps=0.5, hourly=1000, clock=clock, margin=0.1)
    stop = threading.Event()
    starts = []
    for _ in range(3):
        assert limiter.acquire(stop)
        starts.append(clock.now())
        limiter.release()
    assert starts == pytest.approx([0, 2.1, 4.2])


def test_hourly_limit_holds_over_simulated_hours() -> None:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(qps=3, hourly=60, clock=clock, margin=0.1, hourly_margin=10)
    stop = threading.Event()
    starts = []
    for _ in range(300):
        assert limiter.acquire(stop)
        starts.append(clock.now())
        limiter.release()
    assert_within_limits(starts, 3, 1.1, 60, 3610)
    # ...and not more careful than needed: the 61st start goes as soon as the
    # first one leaves the (margined) hour.
    assert starts[60] == pytest.approx(starts[0] + 3610)
    assert starts[-1] < 5 * 3610
    assert limiter.hourly_used == 60


def test_many_threads_never_exceed_any_limit() -> None:
    clock = FakeClock()
    store = MemoryStore()
    limiter = RateLimiter(qps=3, hourly=25, concurrency=4, clock=clock, state=store)
    stop = threading.Event()
    lock = threading.Lock()
    in_flight = 0
    peak = 0

    def worker() -> None:
        nonlocal in_flight, peak
        for _ in range(40):
            assert limiter.acquire(stop)
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0)  # let other threads interleave while we "hold" the slot
            with lock:
                in_flight -= 1
            limiter.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert len(store.starts) == 320
    assert_within_limits(store.starts, 3, 1.1, 25, 3610)
    assert peak <= 4
    assert limiter.in_flight == 0


def test_concurrency_is_respected_with_real_threads() -> None:
    # 6 threads x 5 requests through a limit of 2. Each request holds its slot
    # until the test lets one go; between two releases the test waits until
    # the limiter has let every request it can start: exactly 2 (until fewer
    # are left). A limiter that let a third start would raise the peak.
    limiter = RateLimiter(qps=10_000, hourly=1_000_000, concurrency=2)
    stop = threading.Event()
    cond = threading.Condition()
    in_flight = peak = finished = 0
    go = threading.Semaphore(0)
    total = 6 * 5

    def worker() -> None:
        nonlocal in_flight, peak, finished
        for _ in range(5):
            assert limiter.acquire(stop)
            with cond:
                in_flight += 1
                peak = max(peak, in_flight)
                cond.notify_all()
            assert go.acquire(timeout=60)
            with cond:
                in_flight -= 1
                finished += 1
                limiter.release()
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    def settled(done: int) -> bool:
        return finished == done and in_flight == min(2, total - done)

    for done in range(total):
        with cond:
            assert cond.wait_for(functools.partial(settled, done), timeout=60), (
                done, finished, in_flight,
            )
            assert limiter.in_flight == in_flight
        go.release()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert peak == 2
    assert limiter.in_flight == 0


def test_concurrency_is_capped_at_mixpanels_limit() -> None:
    assert RateLimiter(concurrency=500).concurrency == MAX_CONCURRENCY


@pytest.mark.parametrize(
    "kwargs",
    [{"qps": 0}, {"qps": float("nan")}, {"hourly": 0}, {"concurrency": 0}, {"margin": -1}],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        RateLimiter().release()


# -- penalize, stop, on_wait -----------------------------------------------


def test_penalize_delays_every_start() -> None:
    clock = FakeClock(start=0.0)
    calls: list[tuple[float, str]] = []
    limiter = RateLimiter(clock=clock, margin=0.1,
                          on_wait=lambda w: calls.append((w.seconds, w.reason)))
    stop = threading.Event()
    limiter.penalize(30)
    limiter.penalize(5)  # a shorter penalty does not shorten the longer one
    assert limiter.next_start_delay() == pytest.approx(30)
    for _ in range(3):
        assert limiter.acquire(stop)
        assert clock.now() == pytest.approx(30)
        limiter.release()
    assert_calls(calls, [(30, REASON_SERVER)])
    assert limiter.next_start_delay() == pytest.approx(1.1)
    with pytest.raises(ValueError):
        limiter.penalize(float("inf"))


def test_penalty_reaches_threads_already_waiting() -> None:
    clock = ManualClock()
    limiter = RateLimiter(qps=1, margin=0, hourly=100, clock=clock)
    stop = threading.Event()
    assert limiter.acquire(stop)
    thread, result = run_in_thread(lambda: limiter.acquire(stop))
    clock.wait_for_sleepers(1, until=1.0)  # waiting for the per-second window
    limiter.penalize(30)
    clock.advance_to(1.0)
    clock.wait_for_sleepers(1, until=30.0)  # woke, saw the penalty, sleeps again
    assert result == []
    clock.advance_to(30.0)
    thread.join(timeout=5)
    assert result == [True]


class SignallingClock(SystemClock):
    """The real clock, telling the test when a thread starts sleeping on it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Event()

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        self.sleeping.set()
        return super().sleep_until(deadline, stop)


class WatchedEvent(threading.Event):
    """A stop event that counts how often one thread looked at it."""

    def __init__(self) -> None:
        super().__init__()
        self.watcher: int | None = None
        self.looks = threading.Semaphore(0)

    def is_set(self) -> bool:
        if threading.get_ident() == self.watcher:
            self.looks.release()
        return super().is_set()


def test_stop_interrupts_a_budget_wait_promptly() -> None:
    clock = SignallingClock()
    limiter = RateLimiter(hourly=1, clock=clock)  # the second start would wait an hour
    stop = threading.Event()
    assert limiter.acquire(stop)
    thread, result = run_in_thread(lambda: limiter.acquire(stop))
    assert clock.sleeping.wait(60), "the second start never waited"
    stop.set()
    # It was asleep for an hour: ending within the guard proves stop woke it.
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result == [False]
    assert limiter.in_flight == 1  # the stopped waiter gave its slot back


def test_stop_interrupts_a_concurrency_wait_promptly() -> None:
    limiter = RateLimiter(concurrency=1)
    stop = WatchedEvent()
    assert limiter.acquire(stop)

    def second() -> bool:
        stop.watcher = threading.get_ident()
        return limiter.acquire(stop)

    thread, result = run_in_thread(second)
    # Looked at stop, found no slot, waited, and looked again: it is waiting
    # for a slot that the first holder never gives back.
    for _ in range(2):
        assert stop.looks.acquire(timeout=60), "the second start never waited for a slot"
    assert result == []
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result == [False]
    assert limiter.in_flight == 1


def test_acquire_after_stop_takes_nothing() -> None:
    limiter = RateLimiter()
    stop = threading.Event()
    stop.set()
    assert limiter.acquire(stop) is False
    assert limiter.in_flight == 0
    assert limiter.hourly_used == 0


def test_on_wait_is_called_once_for_many_waiters() -> None:
    clock = ManualClock()
    calls: list[tuple[float, str]] = []
    limiter = RateLimiter(
        hourly=1, hourly_margin=10, margin=0.1, clock=clock,
        on_wait=lambda w: calls.append((w.seconds, w.reason)),
    )
    stop = threading.Event()
    assert limiter.acquire(stop)
    limiter.release()
    waiters = [run_in_thread(lambda: limiter.acquire(stop)) for _ in range(5)]
    clock.wait_for_sleepers(5)
    assert_calls(calls, [(3610, REASON_HOURLY)])
    # One of them starts when the hour is over; the rest wait for a new
    # moment, which is a new wait and reported once more.
    clock.advance_to(3610.0)
    # Four went back to sleep, until the next hour; each reported (or not)
    # before it slept, so the calls are final now.
    clock.wait_for_sleepers(4, until=7220.0)
    assert_calls(calls, [(3610, REASON_HOURLY)] * 2)
    stop.set()
    for thread, _ in waiters:
        thread.join(timeout=5)
    assert sorted(r[0] for _, r in waiters) == [False, False, False, False, True]  # type: ignore[type-var]


def test_short_per_second_waits_are_not_reported() -> None:
    clock = FakeClock()
    calls: list[tuple[float, str]] = []
    limiter = RateLimiter(clock=clock, margin=0.1,
                          on_wait=lambda w: calls.append((w.seconds, w.reason)))
    stop = threading.Event()
    for _ in range(10):
        assert limiter.acquire(stop)
        limiter.release()
    assert calls == []
    slow = RateLimiter(qps=0.2, margin=0.1, clock=clock,
                       on_wait=lambda w: calls.append((w.seconds, w.reason)))
    for _ in range(2):
        assert slow.acquire(stop)
        slow.release()
    assert_calls(calls, [(5.1, REASON_PER_SECOND)])


def test_an_hourly_wait_says_what_other_runs_spent() -> None:
    """The hourly wait names the hour's starts, those of other runs, and when it ends."""
    clock = FakeClock(start=5000.0, wall_offset=WALL_BASE)
    # Earlier runs started 3 queries, the oldest 600 s ago; this run starts 2.
    earlier = [WALL_BASE + 4400.0, WALL_BASE + 4500.0, WALL_BASE + 4600.0]
    events: list[WaitingForBudget] = []
    limiter = RateLimiter(hourly=5, margin=0.1, hourly_margin=10.0, clock=clock,
                          state=MemoryStore(earlier), on_wait=events.append)
    stop = threading.Event()
    for _ in range(2):
        assert limiter.acquire(stop)
        limiter.release()
    assert events == []
    assert limiter.acquire(stop)  # the sixth start waits for the oldest to leave the hour
    limiter.release()
    assert events == [WaitingForBudget(3010.0, REASON_HOURLY, used=5, limit=5, by_others=3,
                                       until=WALL_BASE + 4400.0 + 3610.0)]


def test_system_clock_sleep_until() -> None:
    clock = SystemClock()
    stop = threading.Event()
    assert clock.sleep_until(clock.now() - 1, stop) is False
    assert clock.sleep_until(clock.now() + 0.01, stop) is False
    stop.set()
    assert clock.sleep_until(float("inf"), stop) is True
    before = time.time()
    wall = clock.wall()
    assert before <= wall <= time.time()


# -- persisted hourly state ------------------------------------------------


def test_state_carries_the_hour_into_the_next_run(_state_dir: Path) -> None:
    stop = threading.Event()
    first_clock = FakeClock(start=50.0, wall_offset=WALL_BASE)
    first = RateLimiter(hourly=3, clock=first_clock,
                        state=HourlyState.for_project(HOST, PROJECT, _state_dir))
    for _ in range(3):
        assert first.acquire(stop)
        first.release()
    # A new process: another monotonic origin, the wall clock 100 s later.
    second_clock = FakeClock(start=7.0, wall_offset=WALL_BASE + 50.0 + 100.0 - 7.0)
    second = RateLimiter(hourly=3, clock=second_clock,
                         state=HourlyState.for_project(HOST, PROJECT, _state_dir))
    assert second.hourly_used == 3
    assert second.next_start_delay() == pytest.approx(3610 - 100, abs=1e-3)
    assert second.acquire(stop)
    assert second_clock.wall() == pytest.approx(WALL_BASE + 50 + 3610, abs=1e-3)
    # Another project has its own budget.
    other = RateLimiter(hourly=3, clock=second_clock,
                        state=HourlyState.for_project(HOST, 999, _state_dir))
    assert other.hourly_used == 0


def test_entries_older_than_the_hour_expire(_state_dir: Path) -> None:
    path = default_path(HOST, PROJECT, _state_dir)
    path.parent.mkdir(parents=True)
    now = WALL_BASE
    old, recent = now - 2 * 3600, now - 600
    path.write_text(json.dumps({"version": 1, "starts": [old, recent, now + 86_400]}))
    state = HourlyState(path)
    assert state.load(now) == [recent]  # far-future entries (clock set back) are dropped too
    clock = FakeClock(start=0.0, wall_offset=now)
    limiter = RateLimiter(hourly=2, clock=clock, state=state)
    assert limiter.hourly_used == 1
    clock.advance(3000 + 10)  # the recent entry is now 3610 s old: out of the margined hour
    assert limiter.hourly_used == 0
    clock.advance(DEFAULT_RETENTION - 3610 + 1)
    state.record(clock.wall())
    on_disk = json.loads(path.read_text())["starts"]
    assert on_disk == [clock.wall()]  # entries past the retention are pruned on write


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffnot json",
        b"",
        b"[1, 2, 3]",
        b'{"version": 99, "starts": [1.0]}',
        b'{"version": 1, "starts": "soon"}',
        b'{"version": 1, "starts": [true, "x", null, 1e999, {"a": 1}]}',
        b'{"version": 1, "starts": [1719000000.0',
    ],
)
def test_corrupt_state_is_ignored_and_replaced(content: bytes, _state_dir: Path) -> None:
    path = default_path(HOST, PROJECT, _state_dir)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    clock = FakeClock(start=0.0, wall_offset=WALL_BASE)
    limiter = RateLimiter(clock=clock, state=HourlyState(path))
    assert limiter.hourly_used == 0
    assert limiter.acquire(threading.Event())
    assert json.loads(path.read_text())["starts"] == [WALL_BASE]


def test_unwritable_state_does_not_break_the_limiter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = HourlyState(blocker / "sub" / "state.json")  # parent is a file: mkdir fails
    limiter = RateLimiter(clock=FakeClock(), state=state)
    stop = threading.Event()
    for _ in range(3):
        assert limiter.acquire(stop)
        limiter.release()
    assert limiter.hourly_used == 3
    assert len([r for r in caplog.records if "not persisted" in r.message]) == 1


def test_state_file_names_host_and_project_and_nothing_secret(_state_dir: Path) -> None:
    path = default_path(HOST + "/", PROJECT, _state_dir)
    assert path == default_path(HOST, str(PROJECT), _state_dir)
    assert path != default_path("https://data-eu.mixpanel.com", PROJECT, _state_dir)
    assert path.parent == _state_dir
    assert path.name.startswith("ratelimit-") and path.suffix == ".json"
    assert len(path.stem) == len("ratelimit-") + 16
    HourlyState.for_project(HOST, PROJECT, _state_dir).record(WALL_BASE)
    data = json.loads(path.read_text())
    assert set(data) == {"version", "host", "project", "starts"}
    assert data["host"] == HOST and data["project"] == str(PROJECT)
    assert data["starts"] == [WALL_BASE]
    text = path.read_text().lower()
    for marker in ("secret", "password", "username", "authorization", "token"):
        assert marker not in text


def test_default_state_dir_is_platformdirs() -> None:
    import platformdirs

    assert state_dir({}) == platformdirs.user_state_path("mpexport", appauthor=False)


def test_two_runs_at_once_learn_of_each_others_starts(_state_dir: Path) -> None:
    clock = FakeClock(start=0.0, wall_offset=WALL_BASE)
    a = RateLimiter(hourly=3, clock=clock,
                    state=HourlyState.for_project(HOST, PROJECT, _state_dir))
    b = RateLimiter(hourly=3, clock=clock,
                    state=HourlyState.for_project(HOST, PROJECT, _state_dir))
    stop = threading.Event()
    assert a.acquire(stop)
    clock.advance(5)
    assert b.acquire(stop)
    assert b.hourly_used == 2  # its own start plus the one `a` wrote meanwhile
    clock.advance(5)
    assert a.acquire(stop)
    assert a.hourly_used == 3
    on_disk = json.loads(default_path(HOST, PROJECT, _state_dir).read_text())["starts"]
    assert on_disk == [WALL_BASE, WALL_BASE + 5, WALL_BASE + 10]


def test_threads_recording_at_once_lose_nothing(_state_dir: Path) -> None:
    path = default_path(HOST, PROJECT, _state_dir)

    def writer(k: int) -> None:
        state = HourlyState(path)  # one instance per thread, like separate processes
        for i in range(25):
            state.record(WALL_BASE + k + i / 100)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(HourlyState(path).load(WALL_BASE + 60)) == 200


def _record_many(path: str, base: float) -> None:
    state = HourlyState(Path(path))
    for i in range(40):
        state.record(base + i / 1000)


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork for speed")
def test_processes_recording_at_once_lose_nothing(_state_dir: Path) -> None:
    path = default_path(HOST, PROJECT, _state_dir)
    path.parent.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(path), WALL_BASE + k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=20)
        assert p.exitcode == 0
    assert len(HourlyState(path).load(WALL_BASE + 60)) == 120


# -- planning helper -------------------------------------------------------


def test_budget_wait_examples() -> None:
    assert budget_wait(0, 3, 60, [], 0.0) == 0
    assert budget_wait(3, 3, 60, [], 0.0) == 0
    assert budget_wait(4, 3, 60, [], 0.0) == pytest.approx(1.0 + DEFAULT_MARGIN)
    assert budget_wait(61, 3, 60, [], 0.0) == pytest.approx(3610)
    now = WALL_BASE
    used = [now - 3000 + i for i in range(60)]  # a full hour's budget, spent 50 min ago
    assert budget_wait(1, 3, 60, used, now) == pytest.approx(610)
    assert budget_wait(1, 3, 60, [now - 7200] * 60, now) == 0  # long expired
    # 365 daily chunks: a little over six hours of waiting.
    assert 6 * 3600 < budget_wait(365, 3, 60, [], now) < 6.2 * 3600


@given(
    n=st.integers(0, 150),
    qps=st.sampled_from([0.5, 1, 3]),
    hourly=st.integers(1, 40),
    ages=st.lists(st.floats(0, 4000), max_size=40),
)
@settings(max_examples=40, deadline=None)
def test_budget_wait_matches_the_limiter(
    n: int, qps: float, hourly: int, ages: list[float]
) -> None:
    now = WALL_BASE
    used = [now - a for a in ages]
    clock = FakeClock(start=0.0, wall_offset=now)
    limiter = RateLimiter(qps, hourly, clock=clock, state=MemoryStore(used))
    stop = threading.Event()
    for _ in range(n):
        assert limiter.acquire(stop)
        limiter.release()
    assert budget_wait(n, qps, hourly, used, now) == pytest.approx(clock.now(), abs=1e-3)


# -- property: any traffic pattern stays within all limits -----------------


@given(
    qps=st.sampled_from([0.5, 1, 2, 3, 3.5]),
    hourly=st.integers(1, 8),
    concurrency=st.integers(1, 4),
    margin=st.sampled_from([0.0, 0.1, 0.3]),
    hourly_margin=st.sampled_from([0.0, 10.0]),
    ops=st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(0, 2), st.floats(0, 1500)),  # gap before request
            st.floats(0, 30),  # request duration
            st.one_of(st.none(), st.floats(0.5, 120)),  # a 429 penalty before it
        ),
        max_size=50,
    ),
)
@settings(max_examples=150, deadline=None)
def test_random_traffic_stays_within_all_limits(
    qps: float,
    hourly: int,
    concurrency: int,
    margin: float,
    hourly_margin: float,
    ops: list[tuple[float, float, float | None]],
) -> None:
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(
        qps, hourly, concurrency, margin=margin, hourly_margin=hourly_margin, clock=clock
    )
    burst = int(qps) if qps >= 1 else 1
    second_window = (1.0 if qps >= 1 else 1 / qps) + margin
    hour_window = 3600 + hourly_margin
    stop = threading.Event()
    starts: list[float] = []
    running: list[float] = []  # end times of requests in flight
    penalty_until = 0.0
    for gap, duration, penalty in ops:
        clock.advance(gap)
        # Requests that ended by now release; if all slots are busy the
        # caller (a worker) would block until one ends: model that directly.
        running.sort()
        while running and (running[0] <= clock.now() or limiter.in_flight >= concurrency):
            clock.advance_to(running.pop(0))
            limiter.release()
        assert limiter.in_flight < concurrency
        if penalty is not None:
            limiter.penalize(penalty)
            penalty_until = max(penalty_until, clock.now() + penalty)
        requested = clock.now()
        assert limiter.acquire(stop)
        start = clock.now()
        assert start >= penalty_until - EPS
        # Liveness: when no limit binds, the start is not delayed.
        recent = [s for s in starts if s + second_window > requested]
        in_hour = [s for s in starts if s + hour_window > requested]
        if requested >= penalty_until and len(recent) < burst and len(in_hour) < hourly:
            assert start == requested
        starts.append(start)
        running.append(start + duration)
        assert limiter.in_flight <= concurrency
    assert_within_limits(starts, burst, second_window, hourly, hour_window)


# -- runs of one project at once share the per-second window -----------------


class SharedTime:
    """One machine's time, seen by several fake processes (:class:`ProcessClock`)."""

    def __init__(self) -> None:
        self.t = 0.0


class ProcessClock:
    """A process's clocks over :class:`SharedTime`: its own monotonic origin, the shared wall.

    Single-threaded use only. Sleeping moves the machine's time forward.
    """

    def __init__(self, shared: SharedTime, origin: float) -> None:
        self._shared = shared
        self._origin = origin

    def now(self) -> float:
        return self._shared.t + self._origin

    def wall(self) -> float:
        return self._shared.t + WALL_BASE

    def sleep_until(self, deadline: float, stop: threading.Event) -> bool:
        target = deadline - self._origin
        self._shared.t = max(self._shared.t, target)
        # Rounding of t + origin must not leave now() a hair short of the
        # deadline, or the limiter would sleep towards it for ever.
        while self.now() < deadline:
            self._shared.t = math.nextafter(self._shared.t, math.inf)
        return stop.is_set()


def windows_of(qps: float, margin: float, hourly_margin: float) -> tuple[int, float, float]:
    """(burst, second window, hour window) as the limiter derives them."""
    burst = int(qps) if qps >= 1 else 1
    return burst, (1.0 if qps >= 1 else 1 / qps) + margin, 3600 + hourly_margin


def assert_within(starts: Sequence[float], limit: int, window: float, tol: float) -> None:
    """No ``window`` holds more than ``limit`` of ``starts`` (up to ``tol`` of rounding)."""
    s = sorted(starts)
    for i in range(len(s) - limit):
        assert s[i + limit] - s[i] >= window - tol, (i, s[i], s[i + limit])


def test_a_second_run_waits_for_the_first_runs_burst(_state_dir: Path) -> None:
    shared = SharedTime()
    clocks = [ProcessClock(shared, 100.0), ProcessClock(shared, 7.0)]
    # Both exist before either starts anything: loading the file told them nothing.
    a, b = (RateLimiter(qps=3, hourly=100, margin=0.25, clock=c,
                        state=HourlyState.for_project(HOST, PROJECT, _state_dir)) for c in clocks)
    stop = threading.Event()
    for _ in range(3):
        assert a.acquire(stop)
    assert shared.t == 0
    assert b.next_start_delay() == 0  # b alone does not know...
    assert b.acquire(stop)  # ...but its start is decided with the file's starts
    assert shared.t == pytest.approx(1.25)
    # a's next start knows of b's: two more fit this window, not three.
    assert a.acquire(stop) and a.acquire(stop)
    assert shared.t == pytest.approx(1.25)
    assert a.acquire(stop)
    assert shared.t == pytest.approx(2.5)
    # a knows every start; b has not looked at the file since its own.
    assert (a.hourly_used, b.hourly_used) == (7, 4)


def test_without_state_each_process_paces_alone(_state_dir: Path) -> None:
    # share_hour=False: no state, so two runs know nothing of each other.
    shared = SharedTime()
    a, b = (RateLimiter(qps=3, hourly=100, clock=ProcessClock(shared, 0.0)) for _ in range(2))
    stop = threading.Event()
    for limiter in (a, b, a, b, a, b):
        assert limiter.acquire(stop)
    assert shared.t == 0
    assert not default_path(HOST, PROJECT, _state_dir).parent.exists()


@given(
    qps=st.sampled_from([0.5, 1, 3, 3.5]),
    hourly=st.integers(1, 8),
    margin=st.sampled_from([0.0, 0.25]),
    hourly_margin=st.sampled_from([0.0, 10.0]),
    processes=st.integers(2, 3),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2),  # which process starts a request
            st.one_of(st.just(0.0), st.floats(0, 2), st.floats(0, 1500)),  # gap before it
            st.one_of(st.none(), st.floats(0.5, 60)),  # a 429 penalty (that process only)
        ),
        max_size=40,
    ),
)
@settings(max_examples=100, deadline=None)
def test_processes_sharing_a_state_file_stay_within_the_limits_together(
    tmp_path_factory: pytest.TempPathFactory,
    qps: float,
    hourly: int,
    margin: float,
    hourly_margin: float,
    processes: int,
    ops: list[tuple[int, float, float | None]],
) -> None:
    """Any interleaving of starts by processes of one project: the union keeps the limits.

    Each process has its own monotonic origin and its own state instance on
    the one file, and only learns of the others through that file. A start
    is also not delayed when no limit binds the union (nor its own penalty).
    """
    path = tmp_path_factory.mktemp("shared") / "ratelimit.json"
    shared = SharedTime()
    limiters = [
        RateLimiter(qps, hourly, margin=margin, hourly_margin=hourly_margin,
                    clock=ProcessClock(shared, 1000.0 * k + 0.1), state=HourlyState(path))
        for k in range(processes)
    ]
    burst, second_window, hour_window = windows_of(qps, margin, hourly_margin)
    penalty_until = [0.0] * processes
    stop = threading.Event()
    tol = 1e-6
    starts: list[float] = []
    for which, gap, penalty in ops:
        k = which % processes
        shared.t += gap
        if penalty is not None:
            limiters[k].penalize(penalty)
            penalty_until[k] = max(penalty_until[k], shared.t + penalty)
        requested = shared.t
        assert limiters[k].acquire(stop)
        limiters[k].release()
        start = shared.t
        assert start >= penalty_until[k] - tol
        # Not more careful than needed (near a window's end rounding may add a hair).
        recent = [s for s in starts if s + second_window > requested - tol]
        in_hour = [s for s in starts if s + hour_window > requested - tol]
        if requested >= penalty_until[k] and len(recent) < burst and len(in_hour) < hourly:
            assert start <= requested + tol
        starts.append(start)
    assert_within(starts, burst, second_window, 1e-5)
    assert_within(starts, hourly, hour_window, 1e-5)


class LoggedState(HourlyState):
    """An :class:`HourlyState` that also notes every start it granted (the file keeps an hour)."""

    def __init__(self, path: Path, granted: list[float]) -> None:
        super().__init__(path)
        self.granted = granted

    def claim(
        self, now: float, decide: Callable[[Sequence[float]], float | None]
    ) -> float | None:
        ts = super().claim(now, decide)
        if ts is not None:
            self.granted.append(ts)  # list.append is atomic
        return ts


def test_threads_of_two_processes_never_exceed_the_limits_together(_state_dir: Path) -> None:
    # One fake clock for all (wall == monotonic, so no rounding), 2 "processes"
    # of 4 threads each. A sleeping thread's deadline never lies past a start
    # being granted (it was computed from fewer starts), so a sleeper moving
    # the clock cannot shift a grant's recorded time.
    clock = FakeClock(start=WALL_BASE)
    path = default_path(HOST, PROJECT, _state_dir)
    granted: list[float] = []
    limiters = [
        RateLimiter(qps=3, hourly=25, concurrency=4, margin=0.25, clock=clock,
                    state=LoggedState(path, granted))
        for _ in range(2)
    ]
    stop = threading.Event()

    def worker(limiter: RateLimiter) -> None:
        for _ in range(20):
            assert limiter.acquire(stop)
            time.sleep(0)  # let the other threads interleave while we hold the slot
            limiter.release()

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert len(granted) == 160
    assert_within_limits(granted, 3, 1.25, 25, 3610)
    assert [lim.in_flight for lim in limiters] == [0, 0]


def test_an_unlockable_state_file_falls_back_to_pacing_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    shared = SharedTime()
    limiter = RateLimiter(qps=3, hourly=100, margin=0.25, clock=ProcessClock(shared, 0.0),
                          state=HourlyState(blocker / "state.json"))
    stop = threading.Event()
    for _ in range(4):
        assert limiter.acquire(stop)
        limiter.release()
    assert shared.t == pytest.approx(1.25)  # still paced, in-process
    assert len([r for r in caplog.records if "not persisted" in r.message]) == 1


# -- giving back a start that never reached the server ---------------------------------


def test_a_start_given_back_counts_in_no_window(_state_dir: Path) -> None:
    clock = FakeClock(start=0.0, wall_offset=WALL_BASE)
    path = default_path(HOST, PROJECT, _state_dir)
    limiter = RateLimiter(qps=1, hourly=2, clock=clock, state=HourlyState(path))
    stop = threading.Event()
    assert limiter.acquire(stop)
    assert json.loads(path.read_text())["starts"] == [WALL_BASE]
    limiter.give_back()  # the connection was refused: Mixpanel never saw it
    limiter.release()
    assert limiter.hourly_used == 0
    assert limiter.next_start_delay() == 0.0  # nor in the per-second window
    assert json.loads(path.read_text())["starts"] == []
    # Only the start this thread took, and only once.
    assert limiter.acquire(stop)
    limiter.release()
    limiter.give_back()
    assert limiter.hourly_used == 1


def test_giving_back_keeps_what_other_runs_recorded(_state_dir: Path) -> None:
    clock = FakeClock(start=0.0, wall_offset=WALL_BASE)
    path = default_path(HOST, PROJECT, _state_dir)
    limiter = RateLimiter(clock=clock, state=HourlyState(path))
    stop = threading.Event()
    assert limiter.acquire(stop)
    HourlyState(path).record(WALL_BASE + 0.5)  # another process, meanwhile
    limiter.give_back()
    limiter.release()
    assert json.loads(path.read_text())["starts"] == [WALL_BASE + 0.5]


def test_giving_back_without_a_state_file() -> None:
    limiter = RateLimiter(hourly=1, clock=FakeClock())
    stop = threading.Event()
    assert limiter.acquire(stop)
    limiter.give_back()
    limiter.release()
    assert limiter.hourly_used == 0


def test_a_start_whose_state_could_not_be_written_is_given_back_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    limiter = RateLimiter(clock=FakeClock(), state=HourlyState(blocker / "sub" / "state.json"))
    assert limiter.acquire(threading.Event())
    limiter.give_back()
    limiter.release()
    assert limiter.hourly_used == 0
    assert len([r for r in caplog.records if "not persisted" in r.message]) == 1
