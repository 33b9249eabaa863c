"""Progress on stderr: tqdm bars when asked or on a TTY, notes about retries and waits."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Never, TextIO

from mpexport.events import (
    BytesReceived,
    ChunkDone,
    ChunkFailed,
    ChunkRetry,
    ChunkSplitInTwo,
    Notice,
    PlanReady,
    ProgressEvent,
    WaitingForBudget,
)

if TYPE_CHECKING:
    from tqdm import tqdm


def retry_note(what: str, attempt: int, reason: str, delay: float) -> str:
    """The note of a failed attempt at ``what`` (a chunk, a page) that is tried again."""
    return f"{what}: attempt {attempt} failed ({reason}); retrying in {delay:.1f}s"


def failed_note(what: str, attempts: int, reason: str) -> str:
    """The note of ``what`` (a chunk, a page) failing after its whole retry budget."""
    return f"{what} failed after {attempts} attempts: {reason}"


def describe(event: ProgressEvent) -> str | None:
    """The one-line note an event deserves on stderr, if any."""
    if isinstance(event, Notice):
        return f"mpexport: note: {event.text}"
    if isinstance(event, ChunkRetry):
        return retry_note(f"chunk {event.chunk.label()}", event.attempt, event.reason,
                          event.delay)
    if isinstance(event, ChunkFailed):
        failure = event.failure
        return failed_note(f"chunk {failure.chunk.label()}", failure.attempts, failure.reason)
    if isinstance(event, ChunkSplitInTwo):
        left, right = event.halves
        return (f"chunk {event.chunk.label()} keeps failing ({event.reason}); "
                f"fetching it as {left.label()} and {right.label()}")
    if isinstance(event, WaitingForBudget):
        from mpexport.dates import format_duration

        return f"waiting {format_duration(event.seconds)} for Mixpanel's {event.reason}"
    return None


class StderrProgress:
    """Progress on stderr in one of three modes, fed with a run's events via ``__call__``.

    ``bars``: tqdm bars, owned by the main thread. ``lines``: for cron logs
    and pipes, :meth:`status_line` every ``interval`` seconds from a timer
    thread. ``quiet``: nothing. Notes (retries, waits) print in the first
    two. Subclasses say which bars, which line, and what each event counts.
    """

    def __init__(
        self, stream: TextIO | None = None, mode: str = "bars", interval: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.mode = mode
        self.interval = interval
        self._bars: list[tqdm[Never]] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def status_line(self) -> str:
        """The lines mode's line."""
        raise NotImplementedError

    def _begin(self) -> bool:
        """Start the lines mode's timer (once); True when the mode shows bars."""
        if self.mode == "lines" and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="mpexport-progress",
                                            daemon=True)
            self._ticker.start()
        return self.mode == "bars"

    def _bar(self, **settings: Any) -> tqdm[Never]:
        """A tqdm bar on the stream, redrawn at most five times a second."""
        from tqdm import tqdm

        return tqdm(file=self.stream, dynamic_ncols=True, mininterval=0.2, **settings)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.status_line(), file=self.stream, flush=True)

    def _note(self, text: str | None) -> None:
        """Print ``text`` (an event's note, if it has one) above the bars, unless quiet."""
        if not text or self.mode == "quiet":
            return
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close_bars(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []

    def close(self) -> None:
        """Stop the timer and close the bars so the summary prints below them."""
        self._stop.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            # It wakes at once (it waits on _stop): no status line after the summary.
            ticker.join()
        self._close_bars()


class BarProgress(StderrProgress):
    """Progress of an export's chunks: bars for chunks (with ETA), events and bytes.

    The lines mode's line counts chunks and events and gives the rate.
    """

    def __init__(
        self, stream: TextIO | None = None, mode: str = "bars", interval: float = 5.0
    ) -> None:
        super().__init__(stream, mode, interval)
        self._total = 0
        self._done = 0
        self._events = 0
        self._bytes = 0

    def __call__(self, event: ProgressEvent) -> None:
        """Update the display (and print a note) for one event."""
        if isinstance(event, PlanReady):
            self._total = len(event.chunks)
            self._done = len(event.skipped)
            self._open(len(event.chunks), len(event.skipped))
        elif isinstance(event, BytesReceived):
            self._bytes += event.count
        elif isinstance(event, ChunkDone):
            self._done += 1
            self._events += event.completed.lines
        elif isinstance(event, ChunkFailed):
            self._done += 1
        elif isinstance(event, ChunkSplitInTwo):
            self._total += 1
        if self._bars:
            self._update(event)
        self._note(describe(event))

    def _update(self, event: ProgressEvent) -> None:
        chunks, events, received = self._bars
        if isinstance(event, BytesReceived):
            received.update(event.count)
        elif isinstance(event, ChunkDone):
            chunks.update(1)
            events.update(event.completed.lines)
        elif isinstance(event, ChunkFailed):
            chunks.update(1)
        elif isinstance(event, ChunkSplitInTwo):
            chunks.total = self._total
            chunks.refresh()

    def _open(self, total: int, skipped: int) -> None:
        if not self._begin():
            return
        self._bars = [
            self._bar(total=total, initial=skipped, desc="chunks", unit="chunk", position=0),
            # The exact count (the summary's), and a rate that says "events/s".
            self._bar(desc="events", unit=" events", unit_scale=True, position=1,
                      bar_format="{desc}: {n} [{elapsed}, {rate_fmt}]"),
            self._bar(desc="bytes ", unit="B", unit_scale=True, unit_divisor=1024, position=2),
        ]

    def status_line(self) -> str:
        """``mpexport: 12/40 chunks, 123456 events, 2.1 MB/s``: the lines mode's line."""
        elapsed = max(1e-9, time.monotonic() - self._started)
        return (f"mpexport: {self._done}/{self._total} chunks, {self._events} events, "
                f"{self._bytes / 1e6 / elapsed:.1f} MB/s, {elapsed:.0f}s")
