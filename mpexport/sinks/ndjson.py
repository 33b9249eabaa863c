"""Ordered NDJSON output: whole chunks, in date order, as the exact bytes received."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport.errors import OutputClosed, OutputFileError, reader_gone
from mpexport.model import Chunk, CompletedChunk

if TYPE_CHECKING:
    from mpexport.interrupt import InterruptGuard

COPY_BUFFER = 1024 * 1024
# After a stop request, the chunk being written gets this long to finish, so
# that the output usually ends on a chunk boundary and a resume is exact.
FINISH_GRACE_SECONDS = 1.0


def _output_error(error: OSError) -> Exception:
    """A failed write: the reader went away (`| head`, quiet) or the output failed (exit 1)."""
    if reader_gone(error):
        return OutputClosed()
    return OutputFileError(f"could not write the output: {error.strerror or error}",
                           "check free space and permissions, then run again")


class NdjsonSink:
    """Writes chunks to a binary stream in chunk order.

    A chunk that is ready before its predecessors waits on disk (its spool
    file); a failed chunk is skipped so later ones are not held forever.
    ``written`` lists the chunks written whole, in order.
    """

    def __init__(
        self, stream: BinaryIO, first_day: dt.date, guard: InterruptGuard | None = None
    ) -> None:
        """``first_day`` is where the range starts: output begins with its chunk."""
        self._stream = stream
        self._guard = guard
        # Keyed by first day, not by plan index: a chunk halved mid-run comes
        # back as two chunks, and date order is what stdout promises.
        self._next = first_day
        self._ready: dict[dt.date, tuple[Chunk, CompletedChunk | None]] = {}
        self.written: list[Chunk] = []
        self.cut: Chunk | None = None  # a chunk only partly written when a stop came
        self.whole_bytes = 0  # bytes of the chunks written whole, for cutting a file back

    def already_done(self, chunk: Chunk) -> bool:
        """Stdout keeps nothing between runs: every chunk is fetched."""
        return False

    def accept(self, completed: CompletedChunk) -> None:
        """Queue the chunk and write every chunk that is now next in order."""
        self._ready[completed.chunk.from_date] = (completed.chunk, completed)
        self._drain()

    def chunk_failed(self, chunk: Chunk) -> None:
        """Skip the failed chunk's slot in the order."""
        self._ready[chunk.from_date] = (chunk, None)
        self._drain()

    def _drain(self) -> None:
        # A stop request never interrupts a write (signals only record it):
        # the copy loop polls for it between whole lines.
        while self._next in self._ready:
            chunk, completed = self._ready.pop(self._next)
            self._next = chunk.to_date + dt.timedelta(days=1)
            if completed is None:
                continue
            try:
                whole, size = self._copy_whole_lines(completed.path)
                self._stream.flush()
            except OSError as exc:
                raise _output_error(exc) from None
            finally:
                completed.discard()
            if whole:
                self.whole_bytes += size
            else:
                self.cut = chunk
                assert self._guard is not None
                self._guard.raise_if_requested()
            self.written.append(chunk)
            if self._guard is not None:
                # Stop at this chunk boundary rather than start the next one.
                self._guard.raise_if_requested()

    def _copy_whole_lines(self, path: Path) -> tuple[bool, int]:
        """Copy a spool file; (False, …) if a stop request cut it (on a line end), and bytes."""
        # Blocks are written up to their last newline, so that stopping
        # between blocks leaves stdout ending on a whole line.
        carry = b""
        written = 0
        deadline: float | None = None
        with path.open("rb") as spool:
            while block := spool.read(COPY_BUFFER):
                if self._guard is not None and self._guard.stop_requested():
                    now = time.monotonic()
                    deadline = deadline or now + FINISH_GRACE_SECONDS
                    if now >= deadline:
                        return False, written
                data = carry + block if carry else block
                end = data.rfind(b"\n") + 1
                if end:
                    self._stream.write(data[:end] if end < len(data) else data)
                    written += end
                carry = data[end:]
        if carry:  # verified bodies end with a newline; never drop bytes silently
            self._stream.write(carry)
            written += len(carry)
        return True, written

    def close(self) -> None:
        """Flush the stream."""
        try:
            self._stream.flush()
        except OSError as exc:
            raise _output_error(exc) from None

    def abort(self) -> None:
        """Delete held spool files; what was written stays whole lines."""
        for _chunk, completed in self._ready.values():
            if completed is not None:
                completed.discard()
        self._ready.clear()
        try:
            self._stream.flush()
        except ValueError:
            pass  # already closed
        except OSError as error:
            if not reader_gone(error):  # `| head` is no reason to hide the stop's cause
                raise
