"""The pairs that feed Parquet: a DuckDB loader and a day writer, composed.

The loader (:class:`~mpexport.sinks.duckdb.sink.DuckDBSink`) loads each
chunk into a DuckDB database; a day writer publishes the UTC days it
committed. ``--db`` with ``--parquet`` pairs the user's database with a
:class:`~mpexport.sinks.lake.parquet.ParquetCopy` (:func:`database_sink`).
``--parquet`` alone is the lake: a scratch database in a temp folder
(deleted when the run ends), so deduplication, typing, repairs and the
memory budget are those of ``--db``, paired with a :class:`LakeCopy`
(:class:`LakeSink`). Each day's file is written whole, then the lake's
manifest records it.

The scratch table holds only this run's events, so before a day already in
the lake is written, its file is read back into the table (deduplicated on
Mixpanel's key, the later processed copy kept, :func:`seed_day`): the new
file is the old one plus what this run added or updated, as ``--db`` would
hold it. Days that the chunk is expected to touch are read
back before it loads, so the counts of new and duplicate events mean what
they mean with ``--db``; every other day is read back when it is written,
whatever the listing at the start said, so nothing the lake held is ever lost.

The run holds the lake's lock (:mod:`mpexport.sinks.lake.lock`) from before
its first look at the lake to its end, so what it lists and reads back is
what it replaces: no other run writes in between. The lock is taken by the
run (:func:`mpexport.database.open_lake`); the copy checks it still holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.model import Chunk, ChunkFailure, CompletedChunk, LoadStats, QueryFilters
from mpexport.sinks.duckdb.rows import key_match, newer, sql_string
from mpexport.sinks.duckdb.schema import check_db_path, check_table_name, quote_ident
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.lake.parquet import (
    ParquetCopy,
    day_key,
    day_window,
    guarded,
    pending_days,
    utc_days,
)

if TYPE_CHECKING:
    from mpexport.sinks.lake.lock import LakeLock
    from mpexport.sinks.lake.store import Store

SCRATCH_NAME = "lake.duckdb"
TABLE = "events"


def database_sink(db_path: Path, *, parquet_dir: Path | str | Store | None = None,
                  table: str = TABLE, filters: QueryFilters, run_id: str,
                  project_timezone: str | None = None,
                  lake_check: Callable[[], None] | None = None, **kwargs: Any) -> DuckDBSink:
    """The sink of ``--db``: the user's database and, with ``parquet_dir``, its Parquet copy.

    ``parquet_dir`` is a folder or an object store (opened by the run with its
    environment, staging beside the database); ``lake_check`` (the lake
    lock's) runs before each write to it; the other arguments are
    :class:`DuckDBSink`'s.
    """
    days = None
    if parquet_dir is not None:
        db_path = Path(db_path)
        # The database's own checks first: a bad table name or path fails
        # before the lake is listed, as it would without a copy.
        check_table_name(table)
        check_db_path(db_path, locked=True)
        days = ParquetCopy(parquet_dir, table, run_id=run_id, filters=filters.fingerprint(),
                           project_timezone=project_timezone, staging=db_path.parent,
                           before_write=lake_check)
    return DuckDBSink(db_path, table=table, filters=filters, run_id=run_id,
                      project_timezone=project_timezone, days=days, **kwargs)


def seed_day(con: Any, path: Path, window: str) -> None:
    """Read a lake's day file into the scratch table, in one transaction.

    The file is what is stored, the table's rows of the day (a chunk of this
    run that reached the day before it was read back) are new: as in the
    loader, a table row stays only when it is newer than the file's copy
    of its key (:func:`~mpexport.sinks.duckdb.rows.newer`), so the day
    written back holds the copy Mixpanel shows, as ``--db`` would.
    """
    target = quote_ident(TABLE)
    # Files of older versions hold properties as JSON, newer ones as text:
    # the cast reads both.
    held = (f"(SELECT event, time, distinct_id, insert_id, mp_processing_time_ms, "
            f"CAST(properties AS JSON) AS properties FROM read_parquet({sql_string(str(path))}))")
    keys = "event, distinct_id, time, insert_id"
    con.execute("BEGIN TRANSACTION")
    try:
        (present,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
        if present:  # usually none: the day is read back before a chunk loads it
            con.execute(
                f"DELETE FROM {target} WHERE rowid IN (SELECT t.rowid FROM (SELECT rowid, "
                f"{keys}, mp_processing_time_ms FROM {target} WHERE {window}) AS t "
                f"JOIN {held} AS p ON {key_match('p', 't')} WHERE NOT {newer('t', 'p')})"
            )
        con.execute(
            f"INSERT INTO {target} SELECT p.* FROM {held} AS p "
            f"ANTI JOIN (SELECT {keys} FROM {target} WHERE {window}) AS e "
            f"ON {key_match('p', 'e')}"
        )
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise


class LakeCopy:
    """The lake's day writer over a scratch table: days the lake holds are read back first.

    Its manifest is also the record of what the lake holds (the
    :class:`~mpexport.sinks.duckdb.publish.HeldDays` of the loader) and of
    where a sync's range begins.
    """

    def __init__(self, location: str | Store, *, run_id: str, filters: str,
                 project_timezone: str | None, staging: Path,
                 lock: LakeLock | None = None) -> None:
        self.lock = lock
        self.copy = ParquetCopy(
            location, TABLE, run_id=run_id, filters=filters,
            project_timezone=project_timezone, staging=staging,
            failure_hint=("the days written so far are in the lake; "
                          "rerun the same command to fetch the rest"),
            in_use_note=("the lake keeps the old file whole; rerun to write it "
                         "(with --refresh if the lake held that day before)"),
            before_write=self.check_lock,
        )
        self.staging = staging
        self.seeded: set[dt.date] = set()

    @property
    def written(self) -> set[dt.date]:
        """The days whose file this run wrote (or removed)."""
        return self.copy.written

    @property
    def deferred(self) -> list[Path]:
        """Files that were in use and stay pending for the next run."""
        return self.copy.deferred

    def covered(self) -> dict[str, set[dt.date]]:
        """Days the lake holds whole, per filters fingerprint (its manifest's)."""
        return self.copy.manifest.covered()

    def day_volumes(self) -> dict[dt.date, int]:
        """Events per day the lake holds, for planning."""
        return self.copy.manifest.day_volumes()

    def check_lock(self) -> None:
        """Raise LoaderError if this run no longer holds the lake's lock."""
        if self.lock is not None:
            self.lock.check()

    def seed(self, con: Any, days: Iterable[dt.date], *, listed_only: bool = True) -> None:
        """Read the lake's files of ``days`` into the table, once per day and run.

        With ``listed_only``, only days the listing at the start found; else
        every day is asked for (a missing file is one cheap request).
        """
        todo = set(days) - self.seeded
        if listed_only:
            todo &= self.copy.held
        if todo:
            self._guarded("reading Parquet files from", lambda: self._seed(con, sorted(todo)))

    def _seed(self, con: Any, days: list[dt.date]) -> None:
        for day in days:
            path = self.staging / f"seed-{day.isoformat()}.parquet"
            try:
                if self.copy.store.get_file(day_key(day), path):
                    seed_day(con, path, day_window(day))
            finally:
                path.unlink(missing_ok=True)
            self.seeded.add(day)

    def prepare(self, con: Any, chunk: Chunk) -> None:
        """Read back the held days the chunk's events fall on, so its counts mean ``--db``'s."""
        self.seed(con, utc_days(chunk, self.copy.project_timezone))

    def flush(self, con: Any, chunk: Chunk | None = None) -> None:
        """Read back every pending day, then write the days and the manifest (under the lock)."""
        # Every pending day is read back now, right before its file is
        # replaced, not from the listing: a row outside its chunk's days
        # (odd data) makes a day pending that was not read back before.
        days = self._guarded("reading the pending days of", lambda: pending_days(con, TABLE))
        self.check_lock()
        self.seed(con, days, listed_only=False)
        self.copy.flush(con, chunk)  # checks the lock before each write

    def _guarded(self, what: str, action: Callable[[], Any]) -> Any:
        return guarded(what, self.copy.store.url, self.copy.failure_hint, action)

    def sync_from(self) -> dt.date | None:
        """The first day a sync of this run's filters was asked to cover, from the manifest."""
        with self.copy.manifest_lock:
            return self.copy.manifest.sync_from.get(self.copy.filters)

    def record_sync_from(self, day: dt.date) -> None:
        """Store at once that a sync of this run's filters was asked to start at ``day``."""
        with self.copy.manifest_lock:
            self.copy.changes.record_sync_from(self.copy.filters, day)
            # Not a warning like other manifest writes: without this record a
            # first sync cut short would lose its first days for good.
            self.copy.store_manifest(required=True)


class LakeSink:
    """The lake as a sink: a loader over a scratch database, paired with a :class:`LakeCopy`.

    What is held, for skipping and for a sync's range, is the lake's
    manifest's; a chunk counts as stored once its days are in the lake.
    """

    def __init__(self, lake: LakeCopy, scratch: Path, **kwargs: Any) -> None:
        self.lake = lake
        self.loader = DuckDBSink(scratch / SCRATCH_NAME, table=TABLE, days=lake, held=lake,
                                 **kwargs)

    # What a run reads of its database (sinks.base.DatabaseSink): the loader's.
    @property
    def refresh(self) -> bool:
        """True when held days are read again rather than skipped."""
        return self.loader.refresh

    @property
    def day_volumes(self) -> dict[dt.date, int]:
        """Events per day the lake holds, for planning."""
        return self.loader.day_volumes

    @property
    def stats(self) -> LoadStats:
        """What was stored, summed over the chunks whose days reached the lake."""
        return self.loader.stats

    @property
    def failed_chunks(self) -> list[ChunkFailure]:
        """Chunks DuckDB refused to read (not stored)."""
        return self.loader.failed_chunks

    @property
    def loaded_days(self) -> set[dt.date]:
        """The days this run stored in the lake."""
        return self.loader.loaded_days

    def covered_days(self) -> set[dt.date]:
        """The days the lake holds whole with this run's filters."""
        return self.loader.covered_days()

    def already_done(self, chunk: Chunk) -> bool:
        """True when the lake holds every day of the chunk (and no refresh)."""
        return self.loader.already_done(chunk)

    def accept(self, completed: CompletedChunk) -> None:
        """Queue a chunk for loading; blocks while the queue is full."""
        self.loader.accept(completed)

    def chunk_failed(self, chunk: Chunk) -> None:
        """Nothing to do: days are written as their chunks commit, in any order."""
        self.loader.chunk_failed(chunk)

    def close(self) -> None:
        """Load and write everything queued, then stop; re-raise the loader's error."""
        self.loader.close()

    def abort(self) -> None:
        """Stop fast: what is in the lake stays whole, the rest is fetched again."""
        self.loader.abort()

    def sync_from(self) -> dt.date | None:
        """The first day a sync of this run's filters was asked to cover, from the manifest."""
        return self.lake.sync_from()

    def record_sync_from(self, day: dt.date) -> None:
        """Record in the lake's manifest, at once, that a sync of these filters starts at ``day``.

        Written under the lake's lock when called, not at the run's end, so
        it survives a run that is killed afterwards.
        """
        self.lake.record_sync_from(day)
