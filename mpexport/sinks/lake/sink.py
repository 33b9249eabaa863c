"""The lake as the sink: ``--parquet DIR|URL`` without ``--db``.

Each chunk goes through the DuckDB sink's machinery into a scratch database
in a temp folder (deleted when the run ends), so deduplication, typing,
repairs and the memory budget are those of ``--db``. After each commit the
UTC days the chunk touched are written to the lake from the scratch table,
each day's file whole, then the lake's manifest records them
(:class:`~mpexport.sinks.parquet.ParquetCopy`).

The run holds the lake's lock (:mod:`mpexport.sinks.lake.lock`) from before
its first look at the lake to its end, so what it lists and reads back is
what it replaces: no other run writes in between.

The scratch table holds only this run's events, so before a day already in
the lake is written, its file is read back into the table (deduplicated on
Mixpanel's key): the new file is the old one plus what this run added, as
``--db`` would hold it. Days that the chunk is expected to touch are read
back before it loads, so the counts of new and duplicate events mean what
they mean with ``--db``; every other day is read back when it is written,
whatever the listing at the start said, so nothing the lake held is ever lost.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb.rows import key_match, sql_string
from mpexport.sinks.duckdb.schema import quote_ident
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.parquet import ParquetCopy, day_key, day_window, pending_days, utc_days

if TYPE_CHECKING:
    from mpexport.interrupt import InterruptGuard
    from mpexport.request import ExportRequest
    from mpexport.sinks.lake.lock import LakeLock
    from mpexport.sinks.lake.store import Store

SCRATCH_NAME = "lake.duckdb"
TABLE = "events"


class LakeCopy(ParquetCopy):
    """A Parquet copy whose table is a scratch one: days the lake holds are read back first."""

    failure_hint = ("the days written so far are in the lake; "
                    "rerun the same command to fetch the rest")
    in_use_note = ("the lake keeps the old file whole; rerun to write it "
                   "(with --refresh if the lake held that day before)")

    def __init__(self, location: str | Store, *, run_id: str, filters: str,
                 project_timezone: str | None, staging: Path,
                 lock: LakeLock | None = None) -> None:
        # The lock first: the listing and the manifest are read under it.
        self.lock = lock
        super().__init__(location, TABLE, run_id=run_id, filters=filters,
                         project_timezone=project_timezone, staging=staging)
        self.staging = staging
        self.seeded: set[dt.date] = set()

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
            todo &= self.held
        if todo:
            self._guarded("reading Parquet files from", lambda: self._seed(con, sorted(todo)))

    def _seed(self, con: Any, days: list[dt.date]) -> None:
        target = quote_ident(self.table)
        for day in days:
            path = self.staging / f"seed-{day.isoformat()}.parquet"
            try:
                if self.store.get_file(day_key(day), path):
                    window = day_window(day)
                    # Files of older versions hold properties as JSON, newer
                    # ones as text: the cast reads both.
                    con.execute(
                        f"INSERT INTO {target} SELECT p.event, p.time, p.distinct_id, "
                        "p.insert_id, p.mp_processing_time_ms, CAST(p.properties AS JSON) "
                        f"FROM read_parquet({sql_string(str(path))}) AS p "
                        f"ANTI JOIN (SELECT event, distinct_id, time, insert_id FROM {target} "
                        f"WHERE {window}) AS e ON {key_match('p', 'e')}"
                    )
            finally:
                path.unlink(missing_ok=True)
            self.seeded.add(day)

    def flush(self, con: Any, chunk: Any = None) -> None:
        # Every pending day is read back now, right before its file is
        # replaced, not from the listing: a row outside its chunk's days
        # (odd data) makes a day pending that was not read back before.
        days = self._guarded("reading the pending days of", lambda: pending_days(con, TABLE))
        self.check_lock()
        self.seed(con, days, listed_only=False)
        self.check_lock()
        super().flush(con, chunk)

    def record_sync_from(self, day: dt.date) -> None:
        """Store at once that a sync of this run's filters was asked to start at ``day``."""
        with self.manifest_lock:
            self.check_lock()
            self.changes.record_sync_from(self.filters, day)
            self.store_manifest()


class LakeSink(DuckDBSink):
    """A DuckDB sink over a scratch file whose days go to the lake after each commit.

    What is held, for skipping and for a sync's range, is the lake's manifest's.
    """

    def __init__(self, lake: LakeCopy, scratch: Path, **kwargs: Any) -> None:
        self.lake = lake
        super().__init__(scratch / SCRATCH_NAME, table=TABLE, parquet=lake, **kwargs)

    def sync_from(self) -> dt.date | None:
        """The first day a sync of this run's filters was asked to cover, from the manifest."""
        with self.lake.manifest_lock:
            return self.lake.manifest.sync_from.get(self._fingerprint)

    def record_sync_from(self, day: dt.date) -> None:
        """Record in the lake's manifest, at once, that a sync of these filters starts at ``day``.

        Written under the lake's lock when called, not at the run's end, so
        it survives a run that is killed afterwards.
        """
        self.lake.record_sync_from(day)

    def _open(self) -> Any:
        con = super()._open()
        covered = self.lake.manifest.covered()
        with self._lock:
            self._covered = covered
            self._covered_at_open = frozenset(covered.get(self._fingerprint, ()))
            self.day_volumes = self.lake.manifest.day_volumes()
        return con

    def _load(self, con: Any, completed: CompletedChunk) -> None:
        chunk = completed.chunk
        if not self._loader.stopping:
            self.lake.seed(con, utc_days(chunk, self.lake.project_timezone))
        before = self.stats.chunks
        try:
            super()._load(con, completed)
        except BaseException:
            if self.stats.chunks > before:
                # Committed to the scratch table, not written to the lake:
                # a resume must fetch it again.
                self.stats.chunks -= 1
                with self._lock:
                    self.loaded_days.difference_update(
                        chunk.from_date + dt.timedelta(days=n) for n in range(chunk.days))
            raise


@contextmanager
def open_lake(
    location: str,
    request: ExportRequest,
    *,
    run_id: str | None = None,
    replace: bool = False,
    refresh: bool = False,
    memory_limit: str | None = None,
    guard: InterruptGuard | None = None,
    spool_dir: Path | None = None,
    wait_lock: float = 0.0,
) -> Iterator[LakeSink]:
    """Take the lake's lock, open the lake and its scratch database; undo all on the way out.

    One writer per lake: another run's lock raises
    :class:`~mpexport.errors.DatabaseLockedError` (after ``wait_lock``
    seconds). Fails before anything is fetched when the lake cannot be
    reached or read. The loader thread has ended, the lock is released and
    the scratch folder is gone when the block is left.
    """
    from mpexport.database import check_replace
    from mpexport.sinks.lake.lock import lake_lock
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.store import open_store
    from mpexport.spool import spool_folder

    check_replace(request, replace)
    run_id = run_id or uuid.uuid4().hex
    check_stop: Callable[[], None] | None = guard.raise_if_requested if guard else None
    # A spool folder: locked while the run lives, removed by a later run if
    # this one is killed.
    with spool_folder(spool_dir) as scratch:
        store = open_store(location, staging=scratch)
        # The lock is the run's first request: a missing bucket or wrong
        # credentials are reported as at any other start.
        with lake_lock(store, wait_lock, check_stop,
                       on_error=lambda exc: startup_error(exc, store.url)) as lock:
            lake = LakeCopy(store, run_id=run_id, filters=request.filters.fingerprint(),
                            project_timezone=request.project_timezone, staging=scratch,
                            lock=lock)
            sink = LakeSink(lake, scratch, filters=request.filters, run_id=run_id,
                            replace=replace, refresh=refresh or replace,
                            project_timezone=request.project_timezone,
                            memory_limit=memory_limit, check_stop=check_stop)
            try:
                if check_stop is not None:
                    check_stop()
                yield sink
            finally:
                sink.abort()  # a no-op once the run closed it
