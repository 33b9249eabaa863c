"""Progress on stderr: tqdm bars when asked or on a TTY, notes about retries and waits."""

from __future__ import annotations

import datetime as dt
import functools
import math
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
    from collections.abc import MutableMapping

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
        return waiting_note(event)
    return None


def waiting_note(event: WaitingForBudget) -> str:
    """The note of a wait for the rate limits; for the hourly budget, who spent it and until when.

    Earlier runs share the hour, so a run can wait long before its first
    query: the note says so, and names the setting for a proxy or a test
    server whose limits are not Mixpanel's.
    """
    from mpexport.dates import format_duration

    text = f"waiting {format_duration(event.seconds)} for Mixpanel's {event.reason}"
    if event.used is None or event.until is None:
        return text
    others = (f"{event.by_others} by other runs of this project on this machine"
              if event.by_others else "all by this run")
    return (f"{text}: {event.used} of the {event.limit} queries allowed per hour were started "
            f"in the last hour, {others}; the next can start at {clock_time(event.until)} "
            "(for a proxy or a test server with other limits, set --hourly-limit or "
            "MPEXPORT_HOURLY_LIMIT)")


def clock_time(wall: float) -> str:
    """``14:32:05``: the local time of day of a wall-clock time (a wait ends within the hour)."""
    return dt.datetime.fromtimestamp(wall).strftime("%H:%M:%S")


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

    def _bar(self, tqdm_class: type[tqdm[Never]] | None = None, **settings: Any) -> tqdm[Never]:
        """A tqdm bar (of ``tqdm_class``) on the stream, redrawn at most five times a second."""
        from tqdm import tqdm

        make = tqdm_class or tqdm
        return make(file=self.stream, dynamic_ncols=True, mininterval=0.2, **settings)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.status_line(), file=self.stream, flush=True)

    def _note(self, text: str | None) -> None:
        """Print ``text`` (an event's note, if it has one) above the bars, unless quiet."""
        if not text or self.mode == "quiet":
            return
        self.write(text)

    def write(self, text: str) -> None:
        """Print the line ``text`` above the bars (or alone without them), in every mode.

        Log lines come here from any thread (``-v``'s requests from the
        workers): a plain print would land in the middle of a bar.
        """
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
        self._waits = _Waits()
        self.hourly_wait: WaitingForBudget | None = None
        """The last wait for the hourly budget, for the advice of a run stopped in it."""

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
        elif isinstance(event, WaitingForBudget) and event.until is not None:
            self.hourly_wait = event
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
        elif isinstance(event, WaitingForBudget):
            # No chunk ends while the starts wait: the ETA counts the wait.
            self._waits.ready_at = max(self._waits.ready_at, time.monotonic() + event.seconds)
            chunks.refresh()

    def _open(self, total: int, skipped: int) -> None:
        if not self._begin():
            return
        # The bytes are those received, compressed: the summary counts the
        # NDJSON written, which is several times more. Both in decimal units.
        self._bars = [
            self._bar(total=total, initial=skipped, desc="chunks", unit="chunk", position=0,
                      bar_format=_CHUNKS_FORMAT, tqdm_class=_waiting_bar_class(),
                      waits=self._waits),
            # The exact count (the summary's), and a rate that says "events/s".
            self._bar(desc="events", unit=" events", unit_scale=True, position=1,
                      bar_format="{desc}: {n} [{elapsed}, {rate_fmt}]"),
            self._bar(desc="received (compressed)", unit="B", unit_scale=True, position=2),
        ]

    def status_line(self) -> str:
        """``mpexport: 12/40 chunks, 123456 events, 2.1 MB/s received``: the lines mode's line."""
        elapsed = max(1e-9, time.monotonic() - self._started)
        return (f"mpexport: {self._done}/{self._total} chunks, {self._events} events, "
                f"{self._bytes / 1e6 / elapsed:.1f} MB/s received, {elapsed:.0f}s")


# tqdm's default layout, with the ETA of the waiting bar below in place of its own.
_CHUNKS_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{eta}, {rate_fmt}{postfix}]"


class _Waits:
    """Until when (monotonic) starts wait for a rate limit: told by events, read by a bar."""

    def __init__(self) -> None:
        self.ready_at = -math.inf


@functools.cache
def _waiting_bar_class() -> type[tqdm[Never]]:
    """A tqdm bar whose ETA adds a wait for the rate limits (made once, tqdm imported late)."""
    from tqdm import tqdm

    class WaitingBar(tqdm):  # type: ignore[type-arg]
        """A bar with ``{eta}``: the time left at its rate, after the wait its ``waits`` tell."""

        def __init__(self, *args: Any, waits: _Waits, **settings: Any) -> None:
            self.waits = waits  # first: tqdm draws the bar as it starts
            super().__init__(*args, **settings)

        @property
        def format_dict(self) -> MutableMapping[str, Any]:
            """tqdm's fields, with ``eta`` (tqdm's documented way to add one)."""
            fields = super().format_dict
            done, total, rate = fields["n"], fields["total"], fields["rate"]
            if rate is None and fields["elapsed"]:
                rate = (done - fields["initial"]) / fields["elapsed"]
            # Rounded up: a wait of 57m30.9s is not over in 57m30s.
            left = self.waits.ready_at - time.monotonic()
            wait = math.ceil(left) if left > 0 else 0
            if total and rate:
                fields["eta"] = self.format_interval(wait + (total - done) / rate)
            elif wait:
                fields["eta"] = self.format_interval(wait) + "+"  # the rest unknown yet
            else:
                fields["eta"] = "?"
            return fields

    return WaitingBar
