"""Progress on stderr: tqdm bars when asked or on a TTY, retry notes always."""

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
)

if TYPE_CHECKING:
    from tqdm import tqdm


class BarProgress:
    """Three tqdm bars on stderr: chunks (with ETA), events and bytes.

    Owned by the main thread; fed with pipeline events through ``__call__``.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bars: list[tqdm[Never]] = []

    def __call__(self, event: ProgressEvent) -> None:
        """Update the bars (and print retry notes) for one event."""
        if isinstance(event, PlanReady):
            self._open(len(event.chunks), len(event.skipped))
        elif not self._bars:
            if isinstance(event, (ChunkRetry, ChunkFailed, ChunkSplitInTwo)):
                self._note(event)
            return
        elif isinstance(event, BytesReceived):
            self._bars[2].update(event.count)
        elif isinstance(event, ChunkDone):
            self._bars[0].update(1)
            self._bars[1].update(event.completed.lines)
        elif isinstance(event, ChunkFailed):
            self._bars[0].update(1)
            self._note(event)
        elif isinstance(event, ChunkSplitInTwo):
            self._bars[0].total = (self._bars[0].total or 0) + 1
            self._bars[0].refresh()
            self._note(event)
        else:
            self._note(event)

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

    def _note(self, event: ChunkRetry | ChunkFailed | ChunkSplitInTwo) -> None:
        if isinstance(event, ChunkSplitInTwo):
            left, right = event.halves
            text = (f"chunk {event.chunk.label()} keeps failing ({event.reason}); "
                    f"fetching it as {left.label()} and {right.label()}")
        elif isinstance(event, ChunkRetry):
            text = (f"chunk {event.chunk.label()}: attempt {event.attempt} failed "
                    f"({event.reason}); retrying in {event.delay:.1f}s")
        else:
            failure = event.failure
            text = (f"chunk {failure.chunk.label()} failed after {failure.attempts} "
                    f"attempts: {failure.reason}")
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
