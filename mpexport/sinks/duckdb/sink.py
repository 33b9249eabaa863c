"""The DuckDB sink: one loader thread, one transaction per chunk, exactly-once rows.

The main thread (the pipeline) calls :class:`DuckDBSink`'s methods; a single
loader thread owns the only DuckDB connection and commits chunks one at a
time from a bounded queue, so a slow disk pushes back on the downloads
instead of piling spool files up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from mpexport.dates import day_range
from mpexport.errors import DatabaseLockedError, LoaderError, MpexportError, UsageError
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, QueryFilters
from mpexport.sinks.duckdb.budget import LoaderBudget, spill_directory
from mpexport.sinks.duckdb.load import DEFAULT_BATCH_ROWS, RefusedLines, RowReader, load_chunk
from mpexport.sinks.duckdb.schema import (
    check_db_path,
    check_table_name,
    create_schema,
    read_day_volumes,
    read_manifest,
)
from mpexport.sinks.parquet import flush_pending

_POLL_SECONDS = 0.1


class _Stopped(Exception):
    """Raised inside the loader when abort() asked it to stop."""


def _no_stop() -> None:
    """The default ``check_stop``: nothing ever asks the run to stop."""


@dataclass
class LoadStats:
    """What the sink stored, summed over the chunks it committed."""

    chunks: int = 0
    rows_inserted: int = 0
    duplicates_skipped: int = 0
    rows_replaced: int = 0
    bytes: int = 0
    late_rows: int = 0  # inserted into days that were already loaded before this run
    # Events DuckDB's parser refused (cut UTF-8, lone surrogates), stored
    # with U+FFFD in their place; stdout keeps them byte-exact.
    repaired: int = 0


class DuckDBSink:
    """Loads verified chunks into a DuckDB table, deduplicated on Mixpanel's key.

    Construction validates the arguments, opens the database on the loader
    thread and waits until it is ready, so a bad path or table name fails
    before anything is fetched. ``stats`` holds the totals after ``close()``;
    ``failed_chunks`` lists chunks whose data DuckDB refused (not loaded, no
    manifest row, so a rerun fetches them again). ``check_stop`` is called
    while ``accept`` and ``close`` wait for the loader and raises to stop
    the run (a run's :meth:`~mpexport.interrupt.InterruptGuard.raise_if_requested`).
    The loader thread has ended when ``close()`` or ``abort()`` returns.
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
        parquet_dir: Path | None = None,
        queue_size: int = 4,
        time_in_ms: bool = False,
        memory_limit: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        project_timezone: str | None = None,
        check_stop: Callable[[], None] | None = None,
    ) -> None:
        check_table_name(table)
        db_path = Path(db_path)
        check_db_path(db_path)
        if parquet_dir is not None:
            parquet_dir = Path(parquet_dir)
            if parquet_dir.exists() and not parquet_dir.is_dir():
                raise UsageError(
                    f"the Parquet output is not a directory: {parquet_dir}",
                    "give a directory path (it is created if missing)",
                )
            if not parquet_dir.exists() and not parquet_dir.parent.is_dir():
                raise UsageError(
                    f"the parent directory of the Parquet output does not exist: "
                    f"{parquet_dir.parent}",
                    "create it first",
                )
        if queue_size < 1:
            raise UsageError("queue_size must be at least 1")
        self.db_path = db_path
        self.table = table
        self.filters = filters
        self.run_id = run_id
        self.replace = replace
        self.refresh = refresh
        self.parquet_dir = parquet_dir
        self.batch_rows = batch_rows
        self._check_stop_request = check_stop or _no_stop
        self.stats = LoadStats()
        self.failed_chunks: list[ChunkFailure] = []
        # UTC days whose chunks this run committed (for a resume after a failure).
        self.loaded_days: set[dt.date] = set()
        self._fingerprint = filters.fingerprint()
        # Left to itself DuckDB caches up to 80% of RAM and fails a load that
        # needs more than its limit; the budget bounds it and sets threads and
        # spilling so that a smaller budget is slower, never a failure.
        self.budget = LoaderBudget.from_text(memory_limit)
        self._config = self.budget.duckdb_config(db_path)
        self._reader = RowReader(self.budget, time_in_ms, project_timezone)
        self._queue: queue.Queue[CompletedChunk | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()  # guards _covered between loader and main thread
        self._covered: dict[str, set[dt.date]] = {}
        self._covered_at_open: frozenset[dt.date] = frozenset()
        # Events per day seen by earlier runs (from the manifest), for planning.
        self.day_volumes: dict[dt.date, int] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._con: Any = None
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="mpexport-loader", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join()
            raise error

    # ----------------------------------------------------------- main thread

    def covered_days(self, filters: QueryFilters | None = None) -> set[dt.date]:
        """UTC days already loaded into this table with ``filters`` (default: the sink's)."""
        key = (filters or self.filters).fingerprint()
        with self._lock:
            return set(self._covered.get(key, ()))

    def already_done(self, chunk: Chunk) -> bool:
        """True when every day of the chunk was loaded with the same filters (and no refresh)."""
        if self.refresh:
            return False
        with self._lock:
            covered = self._covered.get(self._fingerprint, set())
            return all(day in covered for day in day_range(chunk.from_date, chunk.to_date))

    def accept(self, completed: CompletedChunk) -> None:
        """Queue a chunk for loading; blocks while the queue is full (backpressure)."""
        self._raise_pending()
        if self._finished:
            completed.discard()
            raise RuntimeError("DuckDBSink.accept() after close() or abort()")
        while True:
            try:
                self._queue.put(completed, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    completed.discard()
                    self._raise_pending()
                    raise LoaderError("the DuckDB loader stopped unexpectedly") from None
                # Stop signals only record a request: a long wait looks for it.
                try:
                    self._check_stop_request()
                except BaseException:
                    completed.discard()
                    raise

    def chunk_failed(self, chunk: Chunk) -> None:
        """Nothing to do: the database does not wait for chunks in order."""

    def close(self) -> None:
        """Load everything queued, stop the loader, close the database; re-raise its error."""
        if self._finished:
            self._raise_pending()
            return
        try:
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    self._check_stop_request()
            while self._thread.is_alive():
                self._thread.join(_POLL_SECONDS)
                if self._thread.is_alive():
                    self._check_stop_request()
        except BaseException:
            # A stop while waiting for the last chunks: stop without a partial chunk.
            self.abort()
            raise
        self._finished = True
        self._drop_queued()
        self._raise_pending()

    def abort(self) -> None:
        """Stop fast: roll back the chunk in progress, delete queued spool files, close."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        self._drop_queued()
        con = self._con
        if con is not None:
            with contextlib.suppress(Exception):
                con.interrupt()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake a loader waiting on an empty queue
        # Joined, not left behind: the caller releases the file's lock next,
        # and a library caller may open the same file again at once. An
        # interrupted statement returns within milliseconds; a COMMIT already
        # writing is not cut (a second Ctrl-C still exits at once).
        self._thread.join()
        self._drop_queued()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.discard()

    # ---------------------------------------------------------- loader thread

    def _run(self) -> None:
        try:
            con = self._open()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._con = con
        self._ready.set()
        try:
            self._loop(con)
        except _Stopped:
            pass
        except BaseException as exc:
            if not self._stop.is_set():
                self._error = exc
        finally:
            self._con = None
            with contextlib.suppress(Exception):
                con.close()
            self._drop_queued()
            # DuckDB removes its spill files on close; the folder is ours to tidy.
            with contextlib.suppress(OSError):
                spill_directory(self.db_path).rmdir()

    def _open(self) -> Any:
        try:
            con = duckdb.connect(str(self.db_path), config=self._config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise DatabaseLockedError(
                    f"the database {self.db_path} is in use by another process",
                    "wait for the other run to finish",
                ) from exc
            raise UsageError(f"cannot open the database {self.db_path}: {exc}") from exc
        except duckdb.Error as exc:
            raise UsageError(f"cannot open the database {self.db_path}: {exc}") from exc
        try:
            # Day boundaries (CAST(time AS DATE), Parquet partitions) are UTC days.
            con.execute("SET TimeZone = 'UTC'")
            con.execute("BEGIN TRANSACTION")
            create_schema(con, self.table)
            con.execute("COMMIT")
            covered = read_manifest(con, self.table)
            volumes = read_day_volumes(con, self.table)
            with self._lock:
                self._covered = covered
                self._covered_at_open = frozenset(covered.get(self._fingerprint, ()))
                self.day_volumes = volumes
            if self.parquet_dir is not None:
                flush_pending(con, self.table, self.parquet_dir)
        except BaseException:
            con.close()
            raise
        return con

    def _loop(self, con: Any) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self._stop.is_set():
                    raise _Stopped()
                self._load(con, item)
            finally:
                item.discard()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _load(self, con: Any, completed: CompletedChunk) -> None:
        try:
            done = load_chunk(
                con,
                completed,
                table=self.table,
                filters=self._fingerprint,
                run_id=self.run_id,
                replace=self.replace,
                reader=self._reader,
                batch_rows=self.batch_rows,
                track_days=self.parquet_dir is not None,
                check_stop=self._check_stop,
            )
        except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.DataError,
                RefusedLines) as exc:
            if self._stop.is_set():
                raise _Stopped() from exc
            # The spool holds something DuckDB's reader refuses even after
            # repair: this chunk is lost for this run, the others can load.
            reason = f"DuckDB could not load the data: {exc}".splitlines()[0]
            self.failed_chunks.append(ChunkFailure(completed.chunk, reason, completed.attempts))
            return
        except duckdb.InterruptException as exc:
            raise _Stopped() from exc
        except (_Stopped, MpexportError):
            raise
        except Exception as exc:
            if self._stop.is_set():
                raise _Stopped() from exc
            raise LoaderError(
                f"loading {completed.chunk.label()} into {self.db_path} failed: {exc}",
                "nothing of this chunk was stored; rerun the same command to resume",
            ) from exc
        self.stats.chunks += 1
        chunk = completed.chunk
        if all(d in self._covered_at_open for d in day_range(chunk.from_date, chunk.to_date)):
            # Every day of this chunk was loaded before: what it adds arrived late.
            self.stats.late_rows += done.inserted
        self.stats.rows_inserted += done.inserted
        self.stats.duplicates_skipped += done.duplicates
        self.stats.repaired += done.repaired
        self.stats.rows_replaced += done.replaced
        self.stats.bytes += completed.bytes
        with self._lock:
            days = self._covered.setdefault(self._fingerprint, set())
            days.update(day_range(chunk.from_date, chunk.to_date))
            self.loaded_days.update(day_range(chunk.from_date, chunk.to_date))
        if self.parquet_dir is not None:
            try:
                self.parquet_dir.mkdir(parents=True, exist_ok=True)
                flush_pending(con, self.table, self.parquet_dir)
            except (OSError, duckdb.Error) as exc:
                # The chunk is committed; its days stay recorded as pending,
                # so the next start rewrites them.
                raise LoaderError(
                    f"writing Parquet files to {self.parquet_dir} failed: {exc}",
                    "the database is complete; rerun to rewrite the Parquet files",
                ) from exc
