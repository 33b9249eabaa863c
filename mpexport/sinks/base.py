"""The interface between the pipeline and its consumers (stdout, DuckDB, the lake)."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from mpexport.model import Chunk, ChunkFailure, CompletedChunk, LoadStats


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


class DatabaseSink(Sink, Protocol):
    """A sink that stores what it takes and knows what it holds (``--db``, the lake).

    What a run reads of it: the days to skip and to plan by, a sync's range,
    and at the end what was stored and what was refused.
    """

    @property
    def refresh(self) -> bool:
        """True when stored days are read again rather than skipped."""
        ...

    @property
    def day_volumes(self) -> dict[dt.date, int]:
        """Events per stored day (from earlier runs), for planning."""
        ...

    @property
    def stats(self) -> LoadStats:
        """What was stored, summed over the chunks committed."""
        ...

    @property
    def failed_chunks(self) -> list[ChunkFailure]:
        """Chunks fetched whole but refused by the loader (not stored)."""
        ...

    @property
    def loaded_days(self) -> set[dt.date]:
        """The days this run stored (for the resume after a failure)."""
        ...

    def covered_days(self) -> set[dt.date]:
        """The days stored whole with the run's filters."""
        ...

    def sync_from(self) -> dt.date | None:
        """The recorded first day of the sync's range (None: never recorded)."""
        ...

    def record_sync_from(self, day: dt.date) -> None:
        """Record ``day`` as the first day of the sync's range, before anything is fetched."""
        ...
