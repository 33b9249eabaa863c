"""Clean interruption: a run's stop request, from a signal or from the caller.

An :class:`InterruptGuard` belongs to one run. SIGINT/SIGTERM (and
Ctrl-Break on Windows, while :meth:`InterruptGuard.installed` is active) or
a library caller's ``cancel`` event only *record* a stop request; the run
polls for it at safe points (the pipeline's main loop every 0.2 s, between
whole lines on stdout, in the DuckDB sink's waits, in the lock wait) and
then raises :class:`~mpexport.errors.Interrupted` there. A handler that
raised wherever the main thread happened to be could cut a line in half or
leave a thread or a file behind.

On Windows, closing the console window, logging off or shutting down
(``CTRL_CLOSE_EVENT``, ``CTRL_LOGOFF_EVENT``, ``CTRL_SHUTDOWN_EVENT``) is no
signal Python handles: the default handler ends the process at once. While
installed, a console control handler (:meth:`InterruptGuard.console_event`)
asks the run to stop as the first signal does and holds Windows off for the
few seconds it allows (:data:`CONSOLE_GRACE_SECONDS`), so the run can end on
a whole line; if the stop does not finish in time, the undo actions run, as
for a second signal, before Windows ends the process.

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
import time
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

# The console control events Python leaves to the default handler (wincon.h);
# Ctrl-C (0) and Ctrl-Break (1) arrive as SIGINT and SIGBREAK.
CONSOLE_EVENTS: dict[int, str] = {
    2: "CTRL_CLOSE_EVENT", 5: "CTRL_LOGOFF_EVENT", 6: "CTRL_SHUTDOWN_EVENT"}
# Windows ends a process whose handler has not returned 5 s after a close
# (and, by default, after a logoff or shutdown): a margin below that.
CONSOLE_GRACE_SECONDS = 4.0

# Read at call time: tests put fakes in their place (no real waiting).
_linger: Callable[[float], object] = time.sleep
_clock: Callable[[], float] = time.monotonic

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
        # Set when the guarded command is over (its files settled): a console
        # handler waiting for the stop may then let the process end.
        self._finished = threading.Event()

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

    def console_event(self, event: int) -> bool:
        """Windows' console control handler: True when it handled ``event``.

        Windows calls it on a thread of its own, and ends the process as
        soon as it returns True (or after about 5 s). For a closed console, a
        logoff or a shutdown it records the stop request, then waits up to
        :data:`CONSOLE_GRACE_SECONDS`: for the command to finish its stop
        (whole lines, ``--output`` in place, the resume command), then for
        the rest of that time, so the process can still end by itself (the
        summary JSON, the exit code). If the stop is not done in time, the
        undo actions run first, as for a second signal. Ctrl-C and
        Ctrl-Break are not handled here (False): Python turns them into signals.
        """
        name = CONSOLE_EVENTS.get(event)
        if name is None:
            return False
        deadline = _clock() + CONSOLE_GRACE_SECONDS
        self.request_stop(name)
        _say(f"mpexport: {name}: stopping cleanly (Windows allows a few seconds)\n",
             self._fd, self._encoding)
        if self._finished.wait(max(0.0, deadline - _clock())):
            # Returning would end the process now: let it end by itself instead.
            _linger(max(0.0, deadline - _clock()))
            return True
        notes = self._undo_all()
        _say(f"mpexport: {name}: not stopped within {CONSOLE_GRACE_SECONDS:g} s"
             f"{''.join('; ' + n for n in notes)}\n", self._fd, self._encoding)
        return True

    @contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Install the signal handlers (and on Windows the console handler) for a command.

        Signal handlers are a no-op off the main thread (Python only lets
        the main thread set them); the previous handlers come back on exit.
        """
        self.pending = None
        self._finished.clear()
        previous = {}
        for signum in _SIGNAL_NAMES:
            try:
                previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main thread, or unsupported
                continue
        remove_console_handler = add_console_handler(self.console_event)
        try:
            yield self
        finally:
            remove_console_handler()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.settle()  # no handler of ours is left to run them
            self._finished.set()


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI
    import ctypes
    from ctypes import wintypes

    _HandlerRoutine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)

    def add_console_handler(handler: Callable[[int], bool]) -> Callable[[], None]:
        """Register ``handler`` with ``SetConsoleCtrlHandler``; return what removes it again.

        Handlers run last-registered first: this one sees each event before
        the C runtime's (which turns Ctrl-C and Ctrl-Break into signals).
        """
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.SetConsoleCtrlHandler.argtypes = [_HandlerRoutine, wintypes.BOOL]
        kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL

        def routine(event: int) -> bool:
            try:
                return handler(int(event))
            except BaseException:  # an exception cannot cross into Windows
                return False

        # Referenced by `remove` until it runs: Windows calls this pointer,
        # which must not be freed while registered.
        callback = _HandlerRoutine(routine)
        if not kernel32.SetConsoleCtrlHandler(callback, True):
            return lambda: None

        def remove() -> None:
            kernel32.SetConsoleCtrlHandler(callback, False)

        return remove

else:

    def add_console_handler(handler: Callable[[int], bool]) -> Callable[[], None]:
        """Windows only: elsewhere a closed terminal sends SIGHUP, which ends the run."""
        return lambda: None


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
