"""The worker pool: run units of work on a few threads, report to the main thread.

Events' chunks and profiles' pages both go through this pool; only the unit
of work differs. Workers are threads, each with its own ``requests.Session``.
They take units from a queue filled before they start, run ``work(worker,
unit)`` and talk to the main thread through one queue of messages; the main
thread alone handles the messages (hands results to a sink, reports
progress), so neither a sink nor a progress callback needs locking.

A run owns its threads: on every way out (success, failure, a stop request,
an exception from a callback) the caller closes the pool, which sets the
stop flag, cuts the workers' connections so that reads blocked on a slow
server return at once (:mod:`mpexport.mixpanel.http_cut`), joins the workers
and discards the results that came too late. A library caller that runs
export after export in one process is left with no thread of an earlier run.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from mpexport.events import BytesReceived, WaitingForBudget
from mpexport.interrupt import InterruptGuard, join_in_slices
from mpexport.mixpanel.transport import RequestGate, Stopped, new_session

if TYPE_CHECKING:
    import requests

    from mpexport.mixpanel.http_cut import ConnectionCutter

log = logging.getLogger("mpexport")

# How often the main thread looks for a stop request while it waits for workers.
POLL_SECONDS = 0.2
# After the cut, the only waits a worker cannot leave at once are a connection
# being set up (bounded by the connect timeout) and a spool write; this much
# on top of the connect timeout bounds how long a stopping run waits for them.
JOIN_MARGIN_SECONDS = 5.0

U = TypeVar("U")  # a unit of work: a chunk, a page number
M = TypeVar("M")  # what the work reports to the main thread


class PacedGate(RequestGate, Protocol):
    """A request gate that tells when starts must wait (the rate limiter)."""

    def set_on_wait(self, on_wait: Callable[[WaitingForBudget], None] | None) -> None:
        """Set (or clear) the callback told about noticeable waits."""
        ...


@dataclass(frozen=True)
class Worker(Generic[U, M]):
    """What one worker thread lends each unit it runs."""

    session: requests.Session
    rng: random.Random  # backoff jitter
    stop: threading.Event
    gate: RequestGate | None
    post: Callable[[M], None]  # a message to the main thread
    on_bytes: Callable[[int], None]
    on_retry: Callable[[U, int, str, float], None]


@dataclass(frozen=True)
class _Crashed:
    error: BaseException


class UnitQueue(Generic[U]):
    """The units of one run, taken in order; whole before the workers start."""

    def __init__(self, units: Sequence[U]) -> None:
        self.count = len(units)
        self._queue: queue.SimpleQueue[U] = queue.SimpleQueue()
        for unit in units:
            self._queue.put(unit)

    def take(self, stop: threading.Event) -> U | None:
        """The next unit; None when none is left or the run stops."""
        if stop.is_set():
            return None
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


class WorkerPool(Generic[U, M]):
    """One run of units of work on a few threads, each with its own requests session.

    ``work(worker, unit)`` runs a unit on a worker thread and reports through
    ``worker.post``; a :class:`~mpexport.mixpanel.transport.Stopped` it raises
    ends the thread quietly, anything else ends the run (it is raised on the
    main thread). ``retry`` makes the message for a failed attempt (the
    unit, attempt, reason, delay); ``discard`` deletes what a message left
    on disk when it arrives after the end. ``ca_file`` is the CA bundle the
    sessions verify with (the run's ``FetchSettings.ca_file``).
    """

    def __init__(
        self,
        work: Callable[[Worker[U, M], U], None],
        *,
        name: str,
        workers: int,
        guard: InterruptGuard,
        connect_timeout: float,
        ca_file: str | None = None,
        retry: Callable[[U, int, str, float], M],
        discard: Callable[[M | BytesReceived | WaitingForBudget], None],
        gate: PacedGate | None = None,
    ) -> None:
        self.stop = threading.Event()
        self._work = work
        self._name = name
        self._workers = workers
        self._guard = guard
        self._connect_timeout = connect_timeout
        self._ca_file = ca_file
        self._retry = retry
        self._discard = discard
        self._gate = gate
        self._messages: queue.Queue[M | BytesReceived | WaitingForBudget | _Crashed] = (
            queue.Queue())
        self._threads: list[threading.Thread] = []
        self._cutter: ConnectionCutter | None = None

    def run(self, units: UnitQueue[U],
            handle: Callable[[M | BytesReceived | WaitingForBudget], int]) -> None:
        """Run every unit; ``handle`` each message on this thread until all results are in.

        ``handle`` returns the change in results still awaited: -1 for a
        unit's result, +1 when a unit becomes two (a chunk split in halves),
        0 for progress. Raises what a worker crashed with (a fatal API error,
        an expired session, a bug) and :class:`~mpexport.errors.Interrupted`
        on a stop request; the caller closes the pool on every way out.
        """
        if not units.count:
            return
        # Imported once here: ten workers importing requests at the same
        # moment queue on the import lock before their first request.
        from mpexport.mixpanel.http_cut import ConnectionCutter

        self._cutter = ConnectionCutter()
        post = self._messages.put
        if self._gate is not None:
            # Waits are reported from the waiting worker, through the queue.
            self._gate.set_on_wait(post)
        for number in range(max(1, min(self._workers, units.count))):
            # Daemon only as a last resort (a worker still connecting when the
            # join bound runs out must not keep the interpreter alive).
            thread = threading.Thread(target=self._worker, args=(units,),
                                      name=f"{self._name}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()
        awaited = units.count
        while awaited:
            # Signals only record a stop request: this poll is where it takes effect.
            self._guard.raise_if_requested()
            try:
                message = self._messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(message, _Crashed):
                raise message.error
            awaited += handle(message)

    def signal(self) -> None:
        """Ask the workers to stop and end their blocked reads; does not wait."""
        self.stop.set()
        if self._cutter is not None:
            self._cutter.cut()

    def close(self) -> None:
        """Stop and join the workers, then discard what they reported too late."""
        self.signal()
        if self._gate is not None:
            self._gate.set_on_wait(None)
        deadline = time.monotonic() + self._connect_timeout + JOIN_MARGIN_SECONDS
        join_in_slices(self._threads, deadline)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            # Only a connection still being set up can hold a worker this long
            # (DNS has no timeout). It writes no spool file once stopped.
            log.warning("workers still connecting after the run stopped: %s", ", ".join(alive))
        while True:
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return
            if not isinstance(message, _Crashed):
                self._discard(message)

    def _worker(self, units: UnitQueue[U]) -> None:
        session = new_session(self._cutter, self._ca_file)
        post = self._messages.put

        def on_bytes(count: int) -> None:
            post(BytesReceived(count))

        def on_retry(unit: U, attempt: int, reason: str, delay: float) -> None:
            post(self._retry(unit, attempt, reason, delay))

        worker: Worker[U, M] = Worker(session, random.Random(), self.stop, self._gate, post,
                                      on_bytes, on_retry)
        try:
            while (unit := units.take(self.stop)) is not None:
                self._work(worker, unit)
        except Stopped:
            return
        except BaseException as exc:  # a fatal API error, an expired session or a bug
            post(_Crashed(exc))
        finally:
            session.close()
