"""Clean interruption: SIGINT/SIGTERM (and Ctrl-Break on Windows) become
:class:`~mpexport.errors.Interrupted` on the main thread, but never in the
middle of writing a line to stdout.

The first signal asks the run to stop: the pipeline abandons downloads,
deletes spool files, commits nothing partial and reports. A second signal
exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from mpexport.errors import ExitCode, Interrupted

_SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if sys.platform == "win32":  # pragma: no cover - Windows only
    # Ctrl-Break arrives as SIGBREAK; Ctrl-C as SIGINT (Python maps the
    # console control events to these signals on the main thread).
    _SIGNAL_NAMES[signal.SIGBREAK] = "SIGBREAK"


class InterruptGuard:
    """Turns stop signals into :class:`Interrupted` at safe points."""

    def __init__(self) -> None:
        self.pending: str | None = None
        self._shielded = 0

    def stop_requested(self) -> bool:
        """True once a stop signal arrived (polled by long writes)."""
        return self.pending is not None

    def raise_if_requested(self) -> None:
        """Raise :class:`Interrupted` if a stop signal arrived."""
        if self.pending is not None:
            raise Interrupted(self.pending)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A section that a signal must not cut: it polls ``stop_requested``."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = _SIGNAL_NAMES.get(signum, "SIGINT")
        if self.pending is not None:
            # The second signal: the user means it. Leave without cleanup.
            code = ExitCode.TERMINATED if name == "SIGTERM" else ExitCode.INTERRUPTED
            os._exit(int(code))
        self.pending = name
        if not self._shielded:
            raise Interrupted(name)

    @contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Install the handlers for the duration of a command."""
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


GUARD = InterruptGuard()
