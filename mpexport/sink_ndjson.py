"""Ordered NDJSON output: whole chunks, in date order, as the exact bytes received."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from mpexport.errors import OutputClosed
from mpexport.model import Chunk, CompletedChunk

COPY_BUFFER = 1024 * 1024


class NdjsonSink:
    """Writes chunks to a binary stream in chunk order.

    A chunk that is ready before its predecessors waits on disk (its spool
    file); a failed chunk is skipped so later ones are not held forever.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._next = 0
        self._ready: dict[int, Path | None] = {}

    def already_done(self, chunk: Chunk) -> bool:
        """Stdout keeps nothing between runs: every chunk is fetched."""
        return False

    def accept(self, completed: CompletedChunk) -> None:
        """Queue the chunk and write every chunk that is now next in order."""
        self._ready[completed.chunk.index] = completed.path
        self._drain()

    def chunk_failed(self, chunk: Chunk) -> None:
        """Skip the failed chunk's slot in the order."""
        self._ready[chunk.index] = None
        self._drain()

    def _drain(self) -> None:
        while self._next in self._ready:
            path = self._ready.pop(self._next)
            self._next += 1
            if path is None:
                continue
            try:
                with path.open("rb") as spool:
                    shutil.copyfileobj(spool, self._stream, COPY_BUFFER)
                self._stream.flush()
            except BrokenPipeError:
                raise OutputClosed() from None
            finally:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Flush the stream."""
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None

    def abort(self) -> None:
        """Delete held spool files; what was written stays whole chunks."""
        for path in self._ready.values():
            if path is not None:
                path.unlink(missing_ok=True)
        self._ready.clear()
