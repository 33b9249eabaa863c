"""The DuckDB sink: one loader thread, one transaction per chunk, exactly-once rows.

The main thread (the pipeline) calls :class:`DuckDBSink`'s methods; a single
loader thread owns the only DuckDB connection and commits chunks one at a
time from a bounded queue, so a slow disk pushes back on the downloads
instead of piling spool files up. The thread, its queue and the main
thread's (interruptible) waits are :mod:`mpexport.sinks.duckdb.loader`'s;
what opening and loading do is here.

What is published of the committed days (a Parquet copy, the lake) is a
:class:`~mpexport.sinks.duckdb.publish.DayWriter` handed in by whoever pairs
the two (:mod:`mpexport.sinks.lake.sink`): the loader knows only that interface.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from mpexport.dates import day_range
from mpexport.errors import AccessDeniedError, LoaderError, MpexportError, UsageError
from mpexport.filelock import DENIED, HELD, writer_refused
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, LoadStats, QueryFilters
from mpexport.sinks.duckdb.budget import LoaderBudget, attach_database, spill_directory
from mpexport.sinks.duckdb.load import ChunkLoad, load_chunk, spill_disk_full
from mpexport.sinks.duckdb.loader import LoaderThread, Stopped
from mpexport.sinks.duckdb.lock import HELD_WORDS, open_elsewhere_error
from mpexport.sinks.duckdb.publish import DayWriter, HeldDays
from mpexport.sinks.duckdb.rows import RefusedLines, RowReader
from mpexport.sinks.duckdb.schema import (
    MANIFEST_TABLE,
    PARQUET_PENDING_TABLE,
    SYNC_TABLE,
    check_columns,
    check_db_path,
    check_table_name,
    create_schema,
    existing_tables,
    read_day_volumes,
    read_manifest,
    read_sync_from,
    write_sync_from,
)

# Verified chunks waiting for the loader (each one a spool file on disk).
# Read when a sink is created: tests raise it to queue a whole run at once.
QUEUE_SIZE = 4


def _no_stop() -> None:
    """The default ``check_stop``: nothing ever asks the run to stop."""


class DuckDBSink:
    """Loads verified chunks into a DuckDB table, deduplicated on Mixpanel's key.

    Construction validates the arguments, opens the database on the loader
    thread and waits until it is ready, so a bad path or table name fails
    before anything is fetched. ``stats`` holds the totals after ``close()``;
    ``failed_chunks`` lists chunks whose data DuckDB refused (not loaded, no
    manifest row, so a rerun fetches them again); ``parquet_deferred`` the
    Parquet files left for the next run because another program had them
    open. ``days`` publishes the days of each commit (and, once opened,
    those an earlier run left pending). ``held`` is given when the database
    is a scratch one (the lake alone): what is held, for skipping and
    planning, is then its record, and a chunk counts as loaded only once
    ``days`` wrote it. ``check_stop`` is called while the sink waits for
    its loader (opening, ``accept``, ``close``) and raises to stop the run
    (a run's :meth:`~mpexport.interrupt.InterruptGuard.raise_if_requested`).
    The loader thread has ended when ``close()`` or ``abort()`` returns,
    and when the constructor raises.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        table: str = "events",
        filters: QueryFilters,
        run_id: str,
        replace: bool = False,
        refresh: bool = False,
        days: DayWriter | None = None,
        held: HeldDays | None = None,
        memory_limit: str | None = None,
        cpus: int | None = None,
        project_timezone: str | None = None,
        check_stop: Callable[[], None] | None = None,
    ) -> None:
        check_table_name(table)
        db_path = Path(db_path)
        # The caller holds the file's lock by now (database.locked_database), so
        # a file held by another program is an error here, not a skip.
        check_db_path(db_path, locked=True)
        self._days = days
        self._held = held
        self.db_path = db_path
        self.table = table
        self.filters = filters
        self.run_id = run_id
        self.replace = replace
        self.refresh = refresh
        self.stats = LoadStats()
        self.failed_chunks: list[ChunkFailure] = []
        # UTC days whose chunks this run committed (for a resume after a failure).
        self.loaded_days: set[dt.date] = set()
        self._fingerprint = filters.fingerprint()
        # Left to itself DuckDB caches up to 80% of RAM and fails a load that
        # needs more than its limit; the budget bounds it and sets threads and
        # spilling so that a smaller budget is slower, never a failure.
        self.budget = LoaderBudget.from_text(memory_limit, cpus)
        self._config = self.budget.duckdb_config(db_path)
        self._reader = RowReader(self.budget, project_timezone=project_timezone)
        self._lock = threading.Lock()  # guards _covered between loader and main thread
        self._covered: dict[str, set[dt.date]] = {}
        self._covered_at_open: frozenset[dt.date] = frozenset()
        self._sync_from: dt.date | None = None
        # Events per day seen by earlier runs (from the manifest), for planning.
        self.day_volumes: dict[dt.date, int] = {}
        # The tables are created by the first write (a user's file), so a run
        # that stores nothing leaves the file byte for byte as it was.
        self._schema_ready = False
        # Something of this run was committed: a chunk, or a sync's range.
        self.committed = False
        self._loader = LoaderThread(
            open_connection=self._open, load=self._load, closed=self._closed,
            check_stop=check_stop or _no_stop, queue_size=QUEUE_SIZE,
        )
        self._loader.start()

    @property
    def parquet_deferred(self) -> list[Path]:
        """Parquet files that were in use and stay pending for the next run."""
        return list(self._days.deferred) if self._days is not None else []

    # ----------------------------------------------------------- main thread

    def covered_days(self, filters: QueryFilters | None = None) -> set[dt.date]:
        """UTC days already loaded into this table with ``filters`` (default: the sink's)."""
        key = (filters or self.filters).fingerprint()
        with self._lock:
            return set(self._covered.get(key, ()))

    def sync_from(self) -> dt.date | None:
        """The recorded first day of this table's sync range with the sink's filters."""
        with self._lock:
            return self._sync_from

    def record_sync_from(self, day: dt.date) -> None:
        """Record ``day`` as the first day of the sync range, committed before this returns."""
        def record(con: Any) -> None:
            self._ensure_schema(con)
            write_sync_from(con, self.table, self._fingerprint, day)
            self.committed = True

        try:
            self._loader.call(record)
        except duckdb.Error as exc:
            raise LoaderError(
                f"recording where this sync starts in {self.db_path} failed: {exc}",
                "nothing was fetched; fix the cause, then rerun the same command") from exc
        with self._lock:
            self._sync_from = day

    def already_done(self, chunk: Chunk) -> bool:
        """True when every day of the chunk was loaded with the same filters (and no refresh)."""
        if self.refresh:
            return False
        with self._lock:
            covered = self._covered.get(self._fingerprint, set())
            return all(day in covered for day in day_range(chunk.from_date, chunk.to_date))

    def accept(self, completed: CompletedChunk) -> None:
        """Queue a chunk for loading; blocks while the queue is full (backpressure)."""
        self._loader.put(completed)

    def chunk_failed(self, chunk: Chunk) -> None:
        """Nothing to do: the database does not wait for chunks in order."""

    def close(self) -> None:
        """Load everything queued, stop the loader, close the database; re-raise its error."""
        self._loader.close()

    def abort(self) -> None:
        """Stop fast: roll back the chunk in progress, delete queued spool files, close."""
        self._loader.abort()

    # ---------------------------------------------------------- loader thread

    def _closed(self) -> None:
        # DuckDB removes its spill files on close; the folder is ours to tidy.
        with contextlib.suppress(OSError):
            spill_directory(self.db_path).rmdir()

    def _connect(self) -> Any:
        try:
            return attach_database(self.db_path, self._config)
        except (duckdb.IOException, OSError) as exc:
            text = str(exc).lower()
            # Probed only now that DuckDB failed: this process has no
            # connection to the file, so the probe cannot drop a lock of ours.
            # Denied first: the holders DuckDB lists may only be reading a
            # read-only file, and no wait would help.
            refused = writer_refused(self.db_path)
            if refused == DENIED:
                raise AccessDeniedError(self.db_path) from exc
            if any(words in text for words in HELD_WORDS) or refused == HELD:
                raise open_elsewhere_error(self.db_path) from exc
            raise UsageError(f"cannot open the database {self.db_path}: {exc}") from exc
        except duckdb.Error as exc:
            raise UsageError(f"cannot open the database {self.db_path}: {exc}") from exc

    def _out_of_memory(self, completed: CompletedChunk,
                       exc: duckdb.OutOfMemoryException) -> LoaderError:
        """The error for a chunk DuckDB could not load within its memory or its spill disk."""
        said = str(exc).splitlines()[0]
        where = f"loading {completed.chunk.label()} into {self.db_path}"
        if spill_disk_full(exc):
            return LoaderError(
                f"{where} ran out of disk space for spilling to "
                f"{spill_directory(self.db_path)} ({said})",
                "nothing of this chunk was stored; free space on that disk, "
                "then rerun the same command",
            )
        # Even staged in two steps a vector of 2048 parsed rows is held at
        # once, so the smallest budget that loads grows with the events' width.
        return LoaderError(
            f"{where} ran out of the {self.budget.text} memory budget: these events are "
            f"too wide for it ({said})",
            "nothing of this chunk was stored; rerun with a larger --memory-limit "
            "(measured: 256MB loads events of 12 KB on average, 512MB 30 KB, 1GB 100 KB)",
        )

    def _ensure_schema(self, con: Any) -> None:
        """Create the tables (or add what an older file lacks) before this run's first write."""
        if self._schema_ready:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            create_schema(con, self.table)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        self._schema_ready = True

    def _open(self) -> Any:
        con = self._connect()
        try:
            # Day boundaries (CAST(time AS DATE), Parquet partitions) are UTC days.
            con.execute("SET TimeZone = 'UTC'")
            held = self._held
            if held is not None:
                # A scratch database (the lake alone), new for each run: its
                # days are the lake's, and the file goes with the run anyway.
                self._ensure_schema(con)
            check_columns(con, self.table)  # a table of other columns: refused before a fetch
            present = existing_tables(con)
            if (self._days is not None and not self._loader.stopping
                    and PARQUET_PENDING_TABLE in present):
                # Days an earlier run committed but did not write (a crash,
                # a file in use) are written before anything else.
                self._days.flush(con)
                self.stats.parquet_days = len(self._days.written)
            known = MANIFEST_TABLE in present
            covered = (held.covered() if held is not None
                       else read_manifest(con, self.table) if known else {})
            volumes = (held.day_volumes() if held is not None
                       else read_day_volumes(con, self.table) if known else {})
            sync_from = (read_sync_from(con, self.table, self._fingerprint)
                         if SYNC_TABLE in present else None)
            with self._lock:
                self._sync_from = sync_from
                self._covered = covered
                self._covered_at_open = frozenset(covered.get(self._fingerprint, ()))
                self.day_volumes = volumes
        except BaseException:
            con.close()
            raise
        return con

    def _load(self, con: Any, completed: CompletedChunk) -> None:
        self._ensure_schema(con)
        if self._days is not None and not self._loader.stopping:
            self._days.prepare(con, completed.chunk)
        try:
            done = load_chunk(
                con,
                completed,
                table=self.table,
                filters=self._fingerprint,
                run_id=self.run_id,
                replace=self.replace,
                reader=self._reader,
                track_days=self._days is not None,
                check_stop=self._loader.check_stopping,
            )
        except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.DataError,
                RefusedLines) as exc:
            if self._loader.stopping:
                raise Stopped() from exc
            # The spool holds something DuckDB's reader refuses even after
            # repair: this chunk is lost for this run, the others can load.
            reason = f"DuckDB could not load the data: {exc}".splitlines()[0]
            self.failed_chunks.append(ChunkFailure(completed.chunk, reason, completed.attempts))
            return
        except duckdb.InterruptException as exc:
            raise Stopped() from exc
        except (Stopped, MpexportError):
            raise
        except duckdb.OutOfMemoryException as exc:
            if self._loader.stopping:
                raise Stopped() from exc
            raise self._out_of_memory(completed, exc) from exc
        except Exception as exc:
            if self._loader.stopping:
                raise Stopped() from exc
            raise LoaderError(
                f"loading {completed.chunk.label()} into {self.db_path} failed: {exc}",
                "nothing of this chunk was stored; rerun the same command to resume",
            ) from exc
        self._count(completed, done)
        if self._days is not None:
            self._publish(con, self._days, completed.chunk)

    def _count(self, completed: CompletedChunk, done: ChunkLoad) -> None:
        """Add a committed chunk to the statistics and to the days held."""
        self.stats.chunks += 1
        self.committed = True
        chunk = completed.chunk
        if all(d in self._covered_at_open for d in day_range(chunk.from_date, chunk.to_date)):
            # Every day of this chunk was loaded before: what it adds arrived late.
            self.stats.late_rows += done.inserted
        self.stats.rows_inserted += done.inserted
        self.stats.duplicates_skipped += done.duplicates
        self.stats.repaired += done.repaired
        self.stats.rows_replaced += done.replaced
        self.stats.updated += done.updated
        self.stats.bytes += completed.bytes
        with self._lock:
            days = self._covered.setdefault(self._fingerprint, set())
            days.update(day_range(chunk.from_date, chunk.to_date))
            self.loaded_days.update(day_range(chunk.from_date, chunk.to_date))

    def _publish(self, con: Any, days: DayWriter, chunk: Chunk) -> None:
        """Write the committed chunk's days; days not written stay pending for a later flush."""
        try:
            days.flush(con, chunk)
        except BaseException:
            if self._held is not None:
                # Committed to a scratch table only, not to the lake that
                # keeps the rows: a resume must fetch it again.
                self.stats.chunks -= 1
                with self._lock:
                    self.loaded_days.difference_update(
                        day_range(chunk.from_date, chunk.to_date))
            raise
        self.stats.parquet_days = len(days.written)
