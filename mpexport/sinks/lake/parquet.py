"""The day writer: a table's UTC days as Parquet files, ``date=YYYY-MM-DD/data.parquet``.

A day's file always holds every stored row of that UTC day, rewritten whole
after each chunk that touched the day, so reruns and overlapping loads stay
exact. The files go to a folder or an object store (:mod:`~mpexport.sinks.lake.store`),
each one replaced whole, so readers see the old file or the new one, never a
part. After the files, the lake's manifest (:mod:`~mpexport.sinks.lake.manifest`)
records the days they hold.

The DuckDB loader calls :class:`ParquetCopy` after each commit through its
:class:`~mpexport.sinks.duckdb.publish.DayWriter` interface and knows nothing
else of it: ``--db`` with ``--parquet`` pairs the user's database with a copy,
the lake alone a scratch database with :class:`~mpexport.sinks.lake.sink.LakeCopy`.

Every column reads with its natural type in any engine: ``properties`` is
written as a UTF-8 string (Parquet's JSON annotation made polars read it as
binary) and ``time`` as a UTC timestamp.

On Windows a file that a reader (Power BI, a DuckDB shell) has open cannot
be replaced or deleted: after a few short retries such a day stays recorded
as pending, its old file untouched, and the next run that opens the database
writes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from mpexport.dates import day_range
from mpexport.errors import LoaderError
from mpexport.model import Chunk
from mpexport.sinks.duckdb.rows import sql_string
from mpexport.sinks.duckdb.schema import PARQUET_PENDING_TABLE, quote_ident
from mpexport.sinks.lake.manifest import LakeManifest, read_manifest, update_manifest
from mpexport.sinks.lake.objects import startup_error
from mpexport.sinks.lake.store import FileInUse, LocalStore, Store, open_store

FILE_NAME = "data.parquet"
# What each file holds, in this order; properties as text (see the module's docstring).
COLUMNS = ("event, time, distinct_id, insert_id, mp_processing_time_ms, "
           "CAST(properties AS VARCHAR) AS properties")

_DAY_KEY = re.compile(r"date=(\d{4}-\d{2}-\d{2})/" + re.escape(FILE_NAME))

log = logging.getLogger("mpexport.parquet")

__all__ = ["FILE_NAME", "FileInUse", "Flushed", "ParquetCopy", "day_key", "day_of_key",
           "flush_pending",
           "guarded", "utc_days", "write_day"]


def day_key(day: dt.date) -> str:
    """The key of one UTC day's file in the dataset."""
    return f"date={day.isoformat()}/{FILE_NAME}"


def day_of_key(key: str) -> dt.date | None:
    """The UTC day of a day file's key (:func:`day_key`'s inverse); None for any other key."""
    found = _DAY_KEY.fullmatch(key)
    if found is None:
        return None
    try:
        return dt.date.fromisoformat(found[1])
    except ValueError:  # date=2024-02-30: not a file of ours
        return None


def day_window(day: dt.date) -> str:
    """A predicate on ``time`` selecting one UTC day (constants: row groups are pruned)."""
    start, stop = (int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()) * 10**6
                   for d in (day, day + dt.timedelta(days=1)))
    return (f"time >= make_timestamptz({start}::BIGINT) "
            f"AND time < make_timestamptz({stop}::BIGINT)")


def utc_days(chunk: Chunk, project_timezone: str | None = None) -> set[dt.date]:
    """The UTC days a chunk's events fall on (its project days, read in the project's zone)."""
    if project_timezone is None:
        return set(day_range(chunk.from_date, chunk.to_date))
    zone = ZoneInfo(project_timezone)
    first, after = (dt.datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(dt.UTC)
                    for d in (chunk.from_date, chunk.to_date + dt.timedelta(days=1)))
    return set(day_range(first.date(), (after - dt.timedelta(microseconds=1)).date()))


def write_day(con: Any, table: str, store: Store | Path, day: dt.date,
              sleep: Callable[[float], None] = time.sleep,
              before_write: Callable[[], None] | None = None) -> int:
    """Rewrite one day's Parquet file from the table; return its row count.

    A day left without rows loses its file (and a local folder when empty).
    Raises :class:`FileInUse`, the old file untouched and no new one left
    behind, when another program keeps a local file open through the retries.
    ``before_write`` runs right before the store is changed (after the COPY,
    which can take minutes) and raises to leave it as it is.
    """
    check = before_write or (lambda: None)
    store = open_store(store, sleep=sleep)
    target = quote_ident(table)
    window = day_window(day)
    key = day_key(day)
    (rows,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if not rows:
        check()
        store.delete(key)
        return 0
    temp = store.staging_path(key)
    try:
        con.execute(
            f"COPY (SELECT {COLUMNS} FROM {target} WHERE {window} ORDER BY time) "
            f"TO {sql_string(str(temp))} (FORMAT parquet, COMPRESSION zstd)"
        )
        check()  # a laptop asleep during the COPY may have lost the lake by now
        store.put_file(key, temp)
    finally:
        # A scanner may hold the new file for a moment on Windows; a temp
        # left behind is harmless (no glob of *.parquet matches it), a
        # failure here would stop the loader over the secondary copy.
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
    return int(rows)


@dataclass
class Flushed:
    """What :func:`flush_pending` did: days written (with their rows), days left in use."""

    written: list[dt.date] = field(default_factory=list)
    in_use: dict[dt.date, Path] = field(default_factory=dict)
    rows: dict[dt.date, int] = field(default_factory=dict)


def pending_days(con: Any, table: str) -> list[dt.date]:
    """The days recorded as pending for ``table``, in order."""
    return [
        day
        for (day,) in con.execute(
            f"SELECT DISTINCT day FROM {PARQUET_PENDING_TABLE} WHERE table_name = ? ORDER BY day",
            [table],
        ).fetchall()
    ]


def flush_pending(con: Any, table: str, store: Store | Path, *,
                  skip: frozenset[dt.date] = frozenset(),
                  sleep: Callable[[float], None] = time.sleep,
                  before_write: Callable[[], None] | None = None) -> Flushed:
    """Write every day recorded as pending for ``table``, then clear the records of those written.

    Called after each chunk's commit and once at start-up, which repairs days
    whose write was cut off by a crash. A day whose file is in use, and the
    days in ``skip``, stay pending for the next flush (the next run's start).
    ``before_write`` runs before each day's write and raises to stop them
    (a lake whose lock this run lost).
    """
    store = open_store(store, sleep=sleep)
    done = Flushed()
    for day in pending_days(con, table):
        if day in skip:
            continue
        if before_write is not None:
            before_write()
        try:
            done.rows[day] = write_day(con, table, store, day, before_write=before_write)
        except FileInUse as exc:
            done.in_use[day] = exc.path
            continue
        done.written.append(day)
    if done.written:
        con.executemany(
            f"DELETE FROM {PARQUET_PENDING_TABLE} WHERE table_name = ? AND day = ?",
            [[table, day] for day in done.written],
        )
    return done


# What a failure and a file in use mean beside a database (the lake alone says its own).
FAILURE_HINT = "the database is complete; rerun to rewrite the Parquet files"
IN_USE_NOTE = "the database is complete and the next run writes this file"


def guarded(what: str, url: str, hint: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; its OS or DuckDB error becomes a LoaderError naming ``what`` and ``url``."""
    try:
        return action()
    except (OSError, duckdb.Error) as exc:
        raise LoaderError(f"{what} {url} failed: {exc}", hint) from exc


class ParquetCopy:
    """The Parquet copy of one table, kept by the loader thread after each commit.

    ``location`` is a folder or a store (a URL is opened by the run, with its
    environment, see :func:`~mpexport.sinks.lake.store.open_store`); ``staging``
    the local folder where files for an object store are written before their upload.
    ``deferred`` lists the files that were in use and stay pending for the
    next run; each is reported once, as one warning line. ``written`` holds
    the days written by this run. ``run_id``, ``filters`` (a fingerprint) and
    ``project_timezone`` are the run's, for the lake's manifest.
    ``failure_hint`` and ``in_use_note`` end the messages of a failed write
    and of a file in use: what the user has, and what a rerun does.
    ``before_write`` (a lake lock's check) runs before every file and
    manifest write, and raises once the lake is no longer this run's to write.
    """

    def __init__(self, location: str | Path | Store, table: str, *, run_id: str = "",
                 filters: str = "", project_timezone: str | None = None,
                 staging: Path | None = None, failure_hint: str = FAILURE_HINT,
                 in_use_note: str = IN_USE_NOTE,
                 before_write: Callable[[], None] | None = None) -> None:
        self.failure_hint = failure_hint
        self.before_write = before_write
        self.in_use_note = in_use_note
        self.store = open_store(location, staging=staging)
        self.table = table
        self.run_id = run_id
        self.filters = filters
        self.project_timezone = project_timezone
        self.deferred: list[Path] = []
        self.written: set[dt.date] = set()
        # Days found in use are not tried again this run: each attempt costs
        # a whole day's COPY plus the retries, and the holder is still there.
        self._skip: set[dt.date] = set()
        # This run's own records: each manifest write merges them into the
        # stored manifest, so the entries of other runs are never dropped.
        self.changes = LakeManifest()
        # The loader thread writes the manifest after each chunk, the main
        # thread when a sync records its range.
        self.manifest_lock = threading.Lock()
        try:
            # The first requests, before anything is fetched: a missing bucket
            # or wrong credentials stop the run now, with the fix named.
            self.held = self._held_files()
            self.manifest = read_manifest(self.store)
        except OSError as exc:
            # An object store masks the environment's secrets (a folder has none).
            raise startup_error(exc, self.store.url, getattr(self.store, "masked", None)) from None

    def _held_files(self) -> set[dt.date]:
        """The days that have a file in the dataset (listed, so also checked it is reachable)."""
        return {day for key in self.store.list_keys() if (day := day_of_key(key)) is not None}

    def prepare(self, con: Any, chunk: Chunk) -> None:
        """Nothing to do before a chunk loads: the table holds every stored row already."""

    def flush(self, con: Any, chunk: Chunk | None = None) -> None:
        """Write the pending days, then record them (and ``chunk``'s days) in the manifest.

        Raises LoaderError if that fails other than on a file in use.
        """
        if isinstance(self.store, LocalStore):
            self.store.root.mkdir(parents=True, exist_ok=True)
        # Committed chunks stay committed and their days stay recorded as
        # pending, so the next start rewrites them.
        done = self._guarded("writing Parquet files to", lambda: flush_pending(
            con, self.table, self.store, skip=frozenset(self._skip),
            before_write=self.before_write))
        for day, path in done.in_use.items():
            self._skip.add(day)
            self.deferred.append(path)
            log.warning("warning: %s is in use by another program and was not replaced; %s",
                        path, self.in_use_note)
        now = dt.datetime.now(dt.UTC)
        with self.manifest_lock:
            for day, rows in done.rows.items():
                self.changes.wrote(day, rows, self.run_id, now)
            self.written.update(done.written)
            # A chunk counts as held only once every file its events fall on is written.
            if chunk is not None and not utc_days(chunk, self.project_timezone) & self._skip:
                self.changes.cover(day_range(chunk.from_date, chunk.to_date), self.filters,
                                   self.run_id, now)
            if self.changes.changed:
                self.store_manifest()

    def store_manifest(self, *, required: bool = False) -> None:
        """Merge this run's records into the stored manifest (caller holds ``manifest_lock``).

        Raises LoaderError if that fails; a manifest another program has open
        (Windows) only warns unless ``required``.
        """
        if self.before_write is not None:
            self.before_write()
        try:
            self.manifest = self._guarded("writing the manifest of",
                                          lambda: update_manifest(self.store, self.changes))
        except FileInUse as exc:
            if required:
                raise LoaderError(f"{exc}: the lake's manifest could not be updated",
                                  "close the program that has it open, then rerun the "
                                  "same command; nothing was fetched") from exc
            # Only this run's record is lost: the next run fetches these days again.
            log.warning("warning: %s is in use by another program and was not updated",
                        exc.path)

    def _guarded(self, what: str, action: Callable[[], Any]) -> Any:
        return guarded(what, self.store.url, self.failure_hint, action)
