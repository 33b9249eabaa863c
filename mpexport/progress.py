"""Progress on stderr: tqdm bars when asked or on a TTY, notes about retries and waits."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Never, TextIO

from mpexport.events import (
    BytesReceived,
    ChunkDone,
    ChunkFailed,
    ChunkRetry,
    ChunkSplitInTwo,
    PlanReady,
    ProgressEvent,
    WaitingForBudget,
)

if TYPE_CHECKING:
    from tqdm import tqdm


def describe(event: ProgressEvent) -> str | None:
    """The one-line note an event deserves on stderr, if any."""
    if isinstance(event, ChunkRetry):
        return (f"chunk {event.chunk.label()}: attempt {event.attempt} failed "
                f"({event.reason}); retrying in {event.delay:.1f}s")
    if isinstance(event, ChunkFailed):
        failure = event.failure
        return (f"chunk {failure.chunk.label()} failed after {failure.attempts} "
                f"attempts: {failure.reason}")
    if isinstance(event, ChunkSplitInTwo):
        left, right = event.halves
        return (f"chunk {event.chunk.label()} keeps failing ({event.reason}); "
                f"fetching it as {left.label()} and {right.label()}")
    if isinstance(event, WaitingForBudget):
        from mpexport.api import format_duration

        return f"waiting {format_duration(event.seconds)} for Mixpanel's {event.reason}"
    return None


class BarProgress:
    """Three tqdm bars on stderr: chunks (with ETA), events and bytes.

    Owned by the main thread; fed with pipeline events through ``__call__``.
    Notes (retries, splits, waits) print above the bars, or alone without them.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bars: list[tqdm[Never]] = []

    def __call__(self, event: ProgressEvent) -> None:
        """Update the bars (and print a note) for one event."""
        if isinstance(event, PlanReady):
            self._open(len(event.chunks), len(event.skipped))
        elif self._bars:
            self._update(event)
        note = describe(event)
        if note:
            self._note(note)

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
            chunks.total = (chunks.total or 0) + 1
            chunks.refresh()

    def _open(self, total: int, skipped: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        stream = self.stream
        self._bars = [
            tqdm(total=total, initial=skipped, desc="chunks", unit="chunk", position=0,
                 file=stream, dynamic_ncols=True, mininterval=0.2),
            tqdm(desc="events", unit="ev", unit_scale=True, position=1,
                 file=stream, dynamic_ncols=True, mininterval=0.2),
            tqdm(desc="bytes ", unit="B", unit_scale=True, unit_divisor=1024, position=2,
                 file=stream, dynamic_ncols=True, mininterval=0.2),
        ]

    def _note(self, text: str) -> None:
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bars so the summary prints below them."""
        for bar in self._bars:
            bar.close()
        self._bars = []
