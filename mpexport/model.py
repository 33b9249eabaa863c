"""Value types shared by the planner, the workers and the sinks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

F = TypeVar("F")  # what a failed unit of work is: a chunk's or a page's failure


@dataclass(kw_only=True)
class RunOutcome(Generic[F]):
    """What every run reports, events or profiles: failures, traffic, time, notes, a plan."""

    failed: list[F] = field(default_factory=list)
    bytes: int = 0  # received by this run
    seconds: float = 0.0
    interrupted: bool = False
    # Things the user should know about how the options were read.
    notes: list[str] = field(default_factory=list)
    # A dry run's plan (what would be asked); empty otherwise.
    plan: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed after its retries and the run was not stopped."""
        return not self.failed and not self.interrupted


@dataclass(frozen=True, order=True)
class Chunk:
    """One query's worth of days: ``from_date`` to ``to_date``, both inclusive.

    ``index`` is the chunk's position in date order; sinks emit in that order.
    """

    index: int
    from_date: dt.date
    to_date: dt.date

    @property
    def days(self) -> int:
        """Number of calendar days the chunk covers."""
        return (self.to_date - self.from_date).days + 1

    def label(self) -> str:
        """Human-readable range, e.g. ``2024-01-01..2024-01-07``."""
        if self.from_date == self.to_date:
            return self.from_date.isoformat()
        return f"{self.from_date.isoformat()}..{self.to_date.isoformat()}"


@dataclass(frozen=True)
class QueryFilters:
    """The filters that, with the dates, define what a query returns."""

    events: tuple[str, ...] = ()
    where: str | None = None
    limit: int | None = None

    def fingerprint(self) -> str:
        """A stable text key for these filters (manifest rows compare on it)."""
        import json

        return json.dumps(
            {"events": sorted(self.events), "where": self.where, "limit": self.limit},
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass
class CompletedChunk:
    """A chunk whose body arrived whole and passed verification.

    ``path`` is a spool file holding the decompressed body exactly as the
    server sent it (NDJSON, one event per line). The consumer deletes it.
    """

    chunk: Chunk
    path: Path
    lines: int
    bytes: int
    sha256: str
    attempts: int
    seconds: float
    # Frees the pipeline's spool slot; called once the file is gone.
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def discard(self) -> None:
        """Delete the spool file and give its slot back (safe to call twice)."""
        self.path.unlink(missing_ok=True)
        release, self.release = self.release, None
        if release is not None:
            release()


@dataclass
class ChunkFailure:
    """A chunk that still failed after its retry budget."""

    chunk: Chunk
    reason: str
    attempts: int


@dataclass
class LoadStats:
    """What a database sink stored, summed over the chunks it committed.

    Here, not in the DuckDB sink, because results and errors carry it up to
    the front, which must not import a sink to name it.
    """

    chunks: int = 0
    rows_inserted: int = 0
    duplicates_skipped: int = 0
    rows_replaced: int = 0
    # Stored events that a newer copy of the same Mixpanel key replaced (a
    # correction re-sent through /import, processed later): the copy
    # Mixpanel shows. Not in rows_inserted: the events were there before.
    updated: int = 0
    bytes: int = 0
    late_rows: int = 0  # inserted into days that were already loaded before this run
    # Events DuckDB's parser refused (cut UTF-8, lone surrogates), stored
    # with U+FFFD in their place; stdout keeps them byte-exact.
    repaired: int = 0
    parquet_days: int = 0  # UTC days whose Parquet file this run wrote (or removed)


@dataclass
class ExportResult(RunOutcome[ChunkFailure]):
    """What an export did: the library's return value and the CLI's summary.

    ``ok`` when every planned chunk arrived whole; a dry run's ``plan`` is
    one line per chunk, then totals.
    """

    chunks_total: int
    completed: list[CompletedChunk] = field(default_factory=list)
    skipped: list[Chunk] = field(default_factory=list)
    events: int = 0
    # The range the run covered (a sync's, from what its database held).
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    # With a database: what the loader did (a LoadStats), else None.
    load: LoadStats | None = None
