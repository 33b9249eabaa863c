"""Clean interruption: a run's stop request, from a signal or from the caller.

An :class:`InterruptGuard` belongs to one run. SIGINT/SIGTERM (and
Ctrl-Break on Windows, while :meth:`InterruptGuard.installed` is active) or
a library caller's ``cancel`` event only *record* a stop request; the run
polls for it at safe points (the pipeline's main loop every 0.2 s, between
whole lines on stdout, in the DuckDB sink's waits, in the lock wait) and
then raises :class:`~mpexport.errors.Interrupted` there. A handler that
raised wherever the main thread happened to be could cut a line in half or
leave a thread or a file behind.

The first signal asks the run to stop: the pipeline abandons downloads,
joins its workers, deletes spool files, commits nothing partial and
reports. A second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from mpexport.errors import ExitCode, Interrupted

_SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if sys.platform == "win32":  # pragma: no cover - Windows only
    # Ctrl-Break arrives as SIGBREAK; Ctrl-C as SIGINT (Python maps the
    # console control events to these signals on the main thread).
    _SIGNAL_NAMES[signal.SIGBREAK] = "SIGBREAK"

CANCELLED = "cancel"
"""The ``signal_name`` of :class:`Interrupted` when the caller's ``cancel`` event stopped it."""


class InterruptGuard:
    """One run's stop request: recorded by signals or a ``cancel`` event, polled by the run.

    ``cancel`` is the library caller's way to stop a run from another thread
    (or from a progress callback): once it is set, the run stops at its next
    safe point and raises :class:`Interrupted` with ``signal_name ==
    CANCELLED``. Create a new guard for every run: a stop request never
    outlives the run it stopped.
    """

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self.pending: str | None = None
        self._cancel = cancel

    def request_stop(self, reason: str = "SIGINT") -> None:
        """Record a stop request (the first reason wins); the run raises at its next poll."""
        if self.pending is None:
            self.pending = reason

    def stop_requested(self) -> bool:
        """True once a stop was requested (polled by long waits and writes)."""
        if self.pending is None and self._cancel is not None and self._cancel.is_set():
            self.pending = CANCELLED
        return self.pending is not None

    def raise_if_requested(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested."""
        if self.stop_requested():
            assert self.pending is not None
            raise Interrupted(self.pending)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = _SIGNAL_NAMES.get(signum, "SIGINT")
        if self.pending is not None:
            # The second signal: the user means it. Leave without cleanup.
            code = ExitCode.TERMINATED if name == "SIGTERM" else ExitCode.INTERRUPTED
            os._exit(int(code))
        # Only record it: the main loop polls every 0.2 s and stops at a safe
        # point, with every thread joined and every spool file gone.
        self.pending = name

    @contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Install the signal handlers for the duration of a command.

        A no-op off the main thread (Python only lets the main thread set
        handlers); the previous handlers come back on exit.
        """
        self.pending = None
        previous = {}
        for signum in _SIGNAL_NAMES:
            try:
                previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main thread, or unsupported
                continue
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


WAIT_SLICE_SECONDS = 0.1


def join_in_slices(threads: list[threading.Thread], deadline: float) -> None:
    """Join ``threads`` until ``deadline`` (``time.monotonic()``), in short slices.

    On Windows a long timed join cannot be interrupted (Python 3.11): a
    second Ctrl-C would wait for it. Between slices, signal handlers run.
    """
    import time

    for thread in threads:
        if thread.ident is None:
            continue  # never started
        while thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            thread.join(min(WAIT_SLICE_SECONDS, left))
