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
reports. A second signal exits at once, but first runs the undo actions
registered with the guard (:meth:`InterruptGuard.add_undo`): an ``--append``
file cut back to its size before the run, a new ``--output`` file's temp file
removed. Without them, an exit at once would leave lines that running the same
command again adds twice, or a temp file nobody removes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TextIO

from mpexport.errors import ExitCode, Interrupted

_SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if sys.platform == "win32":  # pragma: no cover - Windows only
    # Ctrl-Break arrives as SIGBREAK; Ctrl-C as SIGINT (Python maps the
    # console control events to these signals on the main thread).
    _SIGNAL_NAMES[signal.SIGBREAK] = "SIGBREAK"

CANCELLED = "cancel"
"""The ``signal_name`` of :class:`Interrupted` when the caller's ``cancel`` event stopped it."""

Undo = Callable[[], str | None]
"""An undo action for a second signal: bounded, local, and it may return a note for stderr.

It runs inside the signal handler on the main thread, wherever that thread
was (even inside a buffered write), so it must not use Python's buffered
streams, wait for another thread or touch the network: plain ``os`` calls on
one file only. The note says what the file holds now.
"""


STDERR_FD = 2


def _descriptor(stream: TextIO | None) -> int:
    """The descriptor under ``stream``; stderr's (2) when it has none of its own.

    A stream that is not a file (a test's capture, a host's wrapper) has no
    descriptor: the notes then go where stderr always went, to descriptor 2.
    """
    try:
        return stream.fileno() if stream is not None else STDERR_FD
    except (AttributeError, OSError, ValueError):
        return STDERR_FD


def _say(text: str, fd: int, encoding: str) -> None:
    """Write ``text`` to descriptor ``fd`` from a signal handler: no buffered stream.

    The stream's ``write`` could be the very call the handler interrupted (a
    reentrant call into a buffered stream raises). Failures are ignored: a
    message is never worth a traceback at exit.
    """
    with suppress(OSError, LookupError):
        os.write(fd, text.encode(encoding, "backslashreplace"))


class InterruptGuard:
    """One run's stop request: recorded by signals or a ``cancel`` event, polled by the run.

    ``cancel`` is the library caller's way to stop a run from another thread
    (or from a progress callback): once it is set, the run stops at its next
    safe point and raises :class:`Interrupted` with ``signal_name ==
    CANCELLED``. Create a new guard for every run: a stop request never
    outlives the run it stopped.
    """

    def __init__(self, cancel: threading.Event | None = None,
                 stderr: TextIO | None = None) -> None:
        """A guard stopped by ``cancel``; its signal handlers tell ``stderr`` (the environment's).

        Only the descriptor under ``stderr`` and its encoding are used, once
        a handler runs (see :func:`_say`).
        """
        self.pending: str | None = None
        self._fd = _descriptor(stderr)
        self._encoding = getattr(stderr, "encoding", None) or "utf-8"
        self._cancel = cancel
        self._undos: dict[int, Undo] = {}
        self._next_key = 0

    def add_undo(self, undo: Undo) -> int:
        """Register what a second signal must put back before the exit; returns its key.

        Only a run whose handlers are :meth:`installed` ever runs them. The
        owner removes it (:meth:`discard_undo`) once its file is settled;
        after a stop the CLI drops them all once the resume command is out
        (:meth:`settle`), since the file then matches that command.
        """
        key = self._next_key
        self._next_key += 1
        self._undos[key] = undo
        return key

    def discard_undo(self, key: int) -> None:
        """Forget an undo action: what it would put back is settled."""
        self._undos.pop(key, None)

    def settle(self) -> None:
        """Forget every undo action: what the files hold now is what the user was told."""
        self._undos.clear()

    def _undo_all(self) -> list[str]:
        """Run every undo action (each on its own, errors swallowed); return their notes."""
        notes = []
        for undo in list(self._undos.values()):
            try:
                note = undo()
            except BaseException:  # the exit must come; one failure stops no other undo
                continue
            if note:
                notes.append(note)
        self._undos.clear()
        return notes

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
            # The second signal: the user means it. Exit at once, after only
            # the undo actions (a few system calls each), so that files are
            # as the user can rerun from: no thread is joined, nothing waited for.
            notes = self._undo_all()
            # Only now the message, which alone could wait (on a stderr pipe
            # nobody reads): the files are already right.
            _say(f"mpexport: {name} again: quit at once{''.join('; ' + n for n in notes)}\n",
                 self._fd, self._encoding)
            code = ExitCode.TERMINATED if name == "SIGTERM" else ExitCode.INTERRUPTED
            os._exit(int(code))
        # Only record it: the main loop polls every 0.2 s and stops at a safe
        # point, with every thread joined and every spool file gone.
        self.pending = name
        _say(f"mpexport: {name}: stopping cleanly; a second {name} quits at once\n",
             self._fd, self._encoding)

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
            self.settle()  # no handler of ours is left to run them


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
