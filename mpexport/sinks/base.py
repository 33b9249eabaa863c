"""The interface between the pipeline and its consumers (stdout, DuckDB)."""

from __future__ import annotations

from typing import Protocol

from mpexport.model import Chunk, CompletedChunk


class Sink(Protocol):
    """A consumer of verified chunks. All methods run on the main thread."""

    def already_done(self, chunk: Chunk) -> bool:
        """True when the chunk need not be fetched (it is stored already)."""
        ...

    def accept(self, completed: CompletedChunk) -> None:
        """Take a verified chunk; the sink owns (and deletes) its spool file."""
        ...

    def chunk_failed(self, chunk: Chunk) -> None:
        """A chunk will never arrive: stop waiting for it."""
        ...

    def close(self) -> None:
        """Finish: flush what is held, release resources."""
        ...

    def abort(self) -> None:
        """Stop without finishing: drop what is held, leave stored data whole."""
        ...
