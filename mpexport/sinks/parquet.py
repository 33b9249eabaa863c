"""Hive-partitioned Parquet copy of the events table: ``date=YYYY-MM-DD/data.parquet``.

A day's file always holds every stored row of that UTC day, rewritten whole
after each chunk that touched the day, so reruns and overlapping loads stay
exact. Each file is written beside its final name and moved over it with
``os.replace``, so readers see the old file or the new one, never a part.

The copy is secondary to the database. On Windows a file that a reader
(Power BI, a DuckDB shell) has open cannot be replaced or deleted: after a
few short retries such a day stays recorded as pending, its old file
untouched, and the next run that opens the database writes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from mpexport.atomic import temp_sibling
from mpexport.errors import LoaderError, UsageError
from mpexport.filelock import held_by_another_process
from mpexport.sinks.duckdb.rows import sql_string
from mpexport.sinks.duckdb.schema import PARQUET_PENDING_TABLE, quote_ident

FILE_NAME = "data.parquet"
# Pauses between attempts at replacing a file that is in use: a reader that
# only glanced at it (a preview, a virus scan) is gone within a second.
BACKOFF_SECONDS = (0.05, 0.1, 0.2, 0.4)

log = logging.getLogger("mpexport.parquet")


class FileInUse(Exception):
    """A day's file could not be replaced or deleted: another program has it open."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is in use by another program")
        self.path = path


def day_dir(parquet_dir: Path, day: dt.date) -> Path:
    """The partition directory of one UTC day."""
    return parquet_dir / f"date={day.isoformat()}"


def check_parquet_dir(parquet_dir: Path) -> None:
    """Raise UsageError unless ``parquet_dir`` is a directory or can be created as one."""
    if parquet_dir.exists() and not parquet_dir.is_dir():
        raise UsageError(
            f"the Parquet output is not a directory: {parquet_dir}",
            "give a directory path (it is created if missing)",
        )
    if not parquet_dir.exists() and not parquet_dir.parent.is_dir():
        raise UsageError(
            f"the parent directory of the Parquet output does not exist: {parquet_dir.parent}",
            "create it first",
        )


def _day_start_us(day: dt.date) -> int:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp()) * 1_000_000


def _patiently(action: Callable[[], None], path: Path, sleep: Callable[[float], None]) -> None:
    """Run ``action`` (a replace or delete of ``path``), retrying while the file is in use."""
    for pause in (*BACKOFF_SECONDS, None):
        try:
            action()
            return
        except OSError as exc:
            if not held_by_another_process(exc):
                raise
            if pause is None:
                raise FileInUse(path) from exc
        sleep(pause)


def write_day(con: Any, table: str, parquet_dir: Path, day: dt.date,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Rewrite one day's Parquet file from the table; return its row count.

    A day left without rows loses its file (and its directory when empty).
    Raises :class:`FileInUse`, the old file untouched and no new one left
    behind, when another program keeps the file open through the retries.
    """
    start = _day_start_us(day)
    stop = _day_start_us(day + dt.timedelta(days=1))
    window = (
        f"time >= make_timestamptz({start}::BIGINT) AND time < make_timestamptz({stop}::BIGINT)"
    )
    target = quote_ident(table)
    folder = day_dir(parquet_dir, day)
    final = folder / FILE_NAME
    (rows,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if not rows:
        _patiently(lambda: final.unlink(missing_ok=True), final, sleep)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    # The temp name does not end in .parquet, so a glob like */*.parquet
    # never picks up a half-written file left by a crash.
    temp = temp_sibling(final)
    try:
        con.execute(
            f"COPY (SELECT event, time, distinct_id, insert_id, mp_processing_time_ms, properties "
            f"FROM {target} WHERE {window} ORDER BY time) "
            f"TO {sql_string(str(temp))} (FORMAT parquet, COMPRESSION zstd)"
        )
        _patiently(lambda: os.replace(temp, final), final, sleep)
    finally:
        # A scanner may hold the new file for a moment on Windows; a temp
        # left behind is harmless (no glob of *.parquet matches it), a
        # failure here would stop the loader over the secondary copy.
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
    return int(rows)


@dataclass
class Flushed:
    """What :func:`flush_pending` did: days written, and files left pending because in use."""

    written: list[dt.date] = field(default_factory=list)
    in_use: dict[dt.date, Path] = field(default_factory=dict)


def flush_pending(con: Any, table: str, parquet_dir: Path, *,
                  skip: frozenset[dt.date] = frozenset(),
                  sleep: Callable[[float], None] = time.sleep) -> Flushed:
    """Write every day recorded as pending for ``table``, then clear the records of those written.

    Called after each chunk's commit and once at start-up, which repairs days
    whose write was cut off by a crash. A day whose file is in use, and the
    days in ``skip``, stay pending for the next flush (the next run's start).
    """
    days = [
        day
        for (day,) in con.execute(
            f"SELECT DISTINCT day FROM {PARQUET_PENDING_TABLE} WHERE table_name = ? ORDER BY day",
            [table],
        ).fetchall()
    ]
    done = Flushed()
    for day in days:
        if day in skip:
            continue
        try:
            write_day(con, table, parquet_dir, day, sleep)
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


class ParquetCopy:
    """The Parquet copy of one table, kept by the loader thread after each commit.

    ``deferred`` lists the files that were in use and stay pending for the
    next run; each is reported once, as one warning line.
    """

    def __init__(self, parquet_dir: Path, table: str) -> None:
        check_parquet_dir(parquet_dir)
        self.parquet_dir = parquet_dir
        self.table = table
        self.deferred: list[Path] = []
        # Days found in use are not tried again this run: each attempt costs
        # a whole day's COPY plus the retries, and the holder is still there.
        self._skip: set[dt.date] = set()

    def flush(self, con: Any) -> None:
        """Write the pending days; raise LoaderError if that fails other than on a file in use."""
        try:
            self.parquet_dir.mkdir(parents=True, exist_ok=True)
            done = flush_pending(con, self.table, self.parquet_dir, skip=frozenset(self._skip))
        except (OSError, duckdb.Error) as exc:
            # Committed chunks stay committed and their days stay recorded
            # as pending, so the next start rewrites them.
            raise LoaderError(
                f"writing Parquet files to {self.parquet_dir} failed: {exc}",
                "the database is complete; rerun to rewrite the Parquet files",
            ) from exc
        for day, path in done.in_use.items():
            self._skip.add(day)
            self.deferred.append(path)
            log.warning("warning: %s is in use by another program and was not replaced; "
                        "the database is complete and the next run writes this file", path)
