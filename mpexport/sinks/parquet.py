"""Hive-partitioned Parquet copy of the events table: ``date=YYYY-MM-DD/data.parquet``.

A day's file always holds every stored row of that UTC day, rewritten whole
after each chunk that touched the day, so reruns and overlapping loads stay
exact. Each file is written beside its final name and moved over it with
``os.replace``, so readers see the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from mpexport.atomic import replacing
from mpexport.sinks.duckdb.load import sql_string
from mpexport.sinks.duckdb.schema import PARQUET_PENDING_TABLE, quote_ident

FILE_NAME = "data.parquet"


def day_dir(parquet_dir: Path, day: dt.date) -> Path:
    """The partition directory of one UTC day."""
    return parquet_dir / f"date={day.isoformat()}"


def _day_start_us(day: dt.date) -> int:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp()) * 1_000_000


def write_day(con: Any, table: str, parquet_dir: Path, day: dt.date) -> int:
    """Rewrite one day's Parquet file from the table; return its row count.

    A day left without rows loses its file (and its directory when empty).
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
        final.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    # The temp name does not end in .parquet, so a glob like */*.parquet
    # never picks up a half-written file left by a crash.
    with replacing(final) as temp:
        con.execute(
            f"COPY (SELECT event, time, distinct_id, insert_id, mp_processing_time_ms, properties "
            f"FROM {target} WHERE {window} ORDER BY time) "
            f"TO {sql_string(str(temp))} (FORMAT parquet, COMPRESSION zstd)"
        )
    return int(rows)


def flush_pending(con: Any, table: str, parquet_dir: Path) -> int:
    """Write every day recorded as pending for ``table``, then clear those records.

    Called after each chunk's commit and once at start-up, which repairs days
    whose write was cut off by a crash. Returns the number of days written.
    """
    days = [
        day
        for (day,) in con.execute(
            f"SELECT DISTINCT day FROM {PARQUET_PENDING_TABLE} WHERE table_name = ? ORDER BY day",
            [table],
        ).fetchall()
    ]
    for day in days:
        write_day(con, table, parquet_dir, day)
    if days:
        con.execute(f"DELETE FROM {PARQUET_PENDING_TABLE} WHERE table_name = ?", [table])
    return len(days)
