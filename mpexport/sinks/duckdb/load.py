"""Loading one verified chunk into DuckDB: stage, dedupe, insert, manifest row.

All of it runs on the loader thread's connection inside one transaction
opened by :func:`load_chunk`, so a chunk is stored wholly or not at all.
How a spool file's lines become rows is :mod:`mpexport.sinks.duckdb.rows`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from mpexport.model import Chunk, CompletedChunk
from mpexport.sinks.duckdb.ordered import insert_new_in_file_order, scanned
from mpexport.sinks.duckdb.rows import (
    KEY_COLUMNS,
    TIE,
    RefusedLines,
    RowReader,
    StageInstead,
    key_match,
    latest_first,
    newer,
)
from mpexport.sinks.duckdb.schema import (
    MANIFEST_TABLE,
    PARQUET_PENDING_TABLE,
    quote_ident,
)

log = logging.getLogger(__name__)

STAGE_TABLE = "_mpexport_stage"
# The staged copies of one time slice that go into the table: each key's
# latest, when the table lacks the key or holds an older copy (whose row id
# is kept, to delete it). Row ids only, never the large properties.
LATEST_TABLE = "_mpexport_latest"
# Rows deduplicated and inserted per statement. DuckDB's DISTINCT ON and the
# anti-join keep hash tables proportional to their input; slicing a chunk by
# time keeps them bounded, so a big chunk loads under a small memory_limit.
# Read at call time: tests shrink it to exercise the slicing on small chunks.
BATCH_ROWS = 200_000

_ALL_COLUMNS = "event, time, distinct_id, insert_id, mp_processing_time_ms, properties"
_KEYS = ", ".join(KEY_COLUMNS)


@dataclass
class ChunkLoad:
    """What loading one chunk did."""

    received: int = 0
    inserted: int = 0  # events new to the table
    duplicates: int = 0  # copies that changed nothing: received - inserted - updated
    replaced: int = 0
    updated: int = 0  # stored events replaced by a newer copy of the same key
    repaired: int = 0  # events DuckDB refused, stored with U+FFFD in place of bad text
    window: str | None = None  # set by the fast path: where this chunk's rows are
    days: list[dt.date] | None = None  # set when read in file order: the days of its rows


def _latest_slice_sql(table: str, window: str) -> str:
    """Pick the staged copies of ``window`` to store, and the stored rows they replace.

    Each key's latest staged copy (:func:`latest_first`, on the stage's
    ``tie`` column, hashed while the rows were parsed) is kept when the
    table lacks its key, and when it is newer than the stored copy
    (:func:`newer`), whose row id is kept to delete it. An equal copy
    leaves the stored row alone, so reading a day again changes nothing.
    ``window`` is a predicate on ``time`` built from constants, so the scan of
    the stored table is pruned by DuckDB's per-row-group min/max (zonemaps):
    the join reads only the row groups overlapping this slice. Only the key
    columns, the processing time and row ids are read, not the large
    properties: the window and the join stay small whatever the events' width.
    """
    target = quote_ident(table)
    return f"""
        CREATE OR REPLACE TEMP TABLE {LATEST_TABLE} AS
        SELECT s.staged_row, t.rowid AS stored_row
        FROM (
            SELECT rowid AS staged_row, {_KEYS}, mp_processing_time_ms FROM {STAGE_TABLE}
            WHERE {window}
            QUALIFY row_number() OVER (PARTITION BY {_KEYS} ORDER BY {latest_first("tie")}) = 1
        ) AS s
        LEFT JOIN (
            SELECT rowid, {_KEYS}, mp_processing_time_ms FROM {target} WHERE {window}
        ) AS t
        ON {key_match("s", "t")}
        WHERE t.rowid IS NULL OR {newer("s", "t")}
    """


def _store_slice(con: Any, table: str) -> tuple[int, int]:
    """Replace the stored rows picked by :func:`_latest_slice_sql`, insert the rest: (new, updated).

    The delete and the insert are in the chunk's transaction, so the newer
    copy takes the stored row's place or neither changes. No ORDER BY: a
    chunk already lands as a contiguous time range, and sorting whole rows
    doubled the insert's cost.
    """
    target = quote_ident(table)
    (updated,) = con.execute(
        f"DELETE FROM {target} WHERE rowid IN "
        f"(SELECT stored_row FROM {LATEST_TABLE} WHERE stored_row IS NOT NULL)"
    ).fetchone()
    (inserted,) = con.execute(
        f"INSERT INTO {target} SELECT {_ALL_COLUMNS} FROM {STAGE_TABLE} "
        f"WHERE rowid IN (SELECT staged_row FROM {LATEST_TABLE})"
    ).fetchone()
    return int(inserted) - int(updated), int(updated)


def _slice_windows(con: Any, batch_rows: int, rows: str = STAGE_TABLE) -> list[str]:
    """Time predicates that split ``rows`` (the staged ones) into slices of about ``batch_rows``.

    Slices are ranges of ``time``, so every copy of a key lands in the same
    slice and per-slice dedupe equals whole-chunk dedupe.
    """
    lo, hi, count = con.execute(
        f"SELECT epoch_us(min(time)), epoch_us(max(time)), count(time) FROM {rows}"
    ).fetchone()
    windows: list[str] = []
    if count:
        pieces = max(1, math.ceil(count / max(1, batch_rows)))
        bounds: list[int] = [int(lo)]
        if pieces > 1:
            fractions = ", ".join(str(k / pieces) for k in range(1, pieces))
            cuts = [
                row[0]
                for row in con.execute(
                    f"SELECT epoch_us(q) FROM (SELECT unnest(quantile_disc(time, "
                    f"[{fractions}])) AS q FROM {rows})"
                ).fetchall()
            ]
            bounds.extend(sorted({int(c) for c in cuts if lo < int(c) <= hi}))
        bounds.append(int(hi) + 1)  # half-open upper end just past the newest row
        for start, stop in itertools.pairwise(bounds):
            windows.append(
                f"time >= make_timestamptz({start}::BIGINT) "
                f"AND time < make_timestamptz({stop}::BIGINT)"
            )
    return windows


def refuse_untimed(con: Any, completed: CompletedChunk) -> None:
    """Raise :class:`UnreadableTime` when a staged row has no time.

    An event whose ``time`` is missing, null, not a number or beyond what a
    timestamp holds got a NULL time: stored so, it was counted as inserted
    yet in no Parquet day file (those are partitioned by the day of time).
    Refusing the chunk, as unreadable lines are, keeps one rule for the
    table, its Parquet copy and the lake: every event counted as stored is
    in each of them. One aggregate over the staged key column; the example
    is read only when there is one to show.
    """
    (nulls,) = con.execute(f"SELECT count(*) FROM {STAGE_TABLE} WHERE time IS NULL").fetchone()
    if not nulls:
        return
    event, insert_id, raw = con.execute(
        f"SELECT event, insert_id, json_extract(properties, '$.time')::VARCHAR "
        f"FROM {STAGE_TABLE} WHERE time IS NULL LIMIT 1"
    ).fetchone()
    raise UnreadableTime(
        f"{nulls} of {completed.lines} events have no readable time (missing, null, not a "
        f"number, or outside years 1-9999), e.g. event {event!r} with $insert_id "
        f"{insert_id!r} and time {'missing' if raw is None else raw}; the Parquet copy is "
        "partitioned by the day of time, so the chunk is not stored (stdout exports keep "
        "such events as sent)"
    )


def _day_start_us(day: dt.date, project_timezone: str | None = None) -> int:
    zone: dt.tzinfo = dt.UTC if project_timezone is None else ZoneInfo(project_timezone)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return int(start.timestamp()) * 1_000_000


def _window_sql(lo: int, hi: int) -> str:
    return f"time >= make_timestamptz({lo}::BIGINT) AND time < make_timestamptz({hi}::BIGINT)"


def _chunk_window(chunk: Chunk, project_timezone: str | None) -> str:
    """A predicate on ``time``: the chunk's days, as the project's days (UTC for new projects)."""
    return _window_sql(_day_start_us(chunk.from_date, project_timezone),
                       _day_start_us(chunk.to_date + dt.timedelta(days=1), project_timezone))


def _delete_chunk_days(con: Any, target: str, chunk: Chunk, project_timezone: str | None) -> int:
    """Delete the stored rows of the chunk's days (``--replace``); return how many."""
    (deleted,) = con.execute(
        f"DELETE FROM {target} WHERE {_chunk_window(chunk, project_timezone)}").fetchone()
    return int(deleted)


def _fast_insert(
    con: Any, completed: CompletedChunk, target: str, reader: RowReader,
    check_stop: Callable[[], None],
) -> ChunkLoad | None:
    """Insert straight from the reader when the table has nothing near this chunk.

    The common case (new days) needs no anti-join, so the rows are inserted
    as the bare reader would, one per Mixpanel key. Returns None, having changed nothing, when the
    table has rows in the window; raises :class:`_OutsideWindow` (the caller
    rolls back and stages instead) when a row of the chunk fell outside it,
    since only the window was checked for stored copies.
    """
    chunk = completed.chunk
    # The chunk's own days: Mixpanel returns events of those days, so its rows
    # land there; one that does not (odd data, a wrong --project-timezone)
    # sends the chunk down the staged path.
    window = _chunk_window(chunk, reader.project_timezone)
    (stored,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if stored:
        return None
    check_stop()
    if reader.budget.threads == 1:
        # One thread either way: numbering lines halves the CPU (see ordered).
        inserted, repaired = insert_new_in_file_order(reader, con, target, completed)
    else:
        # Several threads: the window over whole rows runs in parallel.
        inserted, repaired = reader.insert_new(con, target, completed, window)
    check_stop()
    # A row without a readable time (NULL) lies outside the window too: the
    # staged path then refuses the chunk (see refuse_untimed).
    (landed,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if landed != inserted:
        raise _OutsideWindow()
    return ChunkLoad(received=completed.lines, inserted=inserted,
                     duplicates=completed.lines - inserted, repaired=repaired, window=window)


class UnreadableTime(RefusedLines):
    """Events of a chunk whose ``time`` DuckDB cannot read: the chunk fails as refused data."""


class _OutsideWindow(Exception):
    """A row of the chunk lies outside the fast path's window: stage instead."""


def _staged_insert(
    con: Any, completed: CompletedChunk, table: str, target: str, replace: bool,
    reader: RowReader, check_stop: Callable[[], None],
) -> ChunkLoad:
    """Stage the chunk, then store its latest copies, slice by time slice.

    Each slice's latest copy of a key is inserted when the table lacks the
    key, and replaces the stored row when it is newer (counted as updated).
    With one loader thread the same is done without staging whole rows
    (:func:`_store_in_file_order`), unless a line has no readable time.
    """
    if reader.budget.threads == 1 and completed.path.stat().st_size > 0:
        stored = _store_in_file_order(con, completed, target, replace, reader, check_stop)
        if stored is not None:
            return stored
    chunk = completed.chunk
    result = ChunkLoad()
    # tie: the properties' hash, taken while they are parsed anyway, so
    # choosing among copies never reads the staged properties again.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} (event VARCHAR, time TIMESTAMPTZ, "
        "distinct_id VARCHAR, insert_id VARCHAR, mp_processing_time_ms BIGINT, properties JSON, "
        "tie UBIGINT)"
    )
    # A quiet day needs no reader at all.
    if completed.path.stat().st_size > 0:
        result.received, result.repaired = reader.insert_spool(
            con, f"INSERT INTO {STAGE_TABLE}", completed,
            lambda rows: f"SELECT *, {TIE} AS tie FROM ({rows})")
    refuse_untimed(con, completed)
    check_stop()
    if replace:
        result.replaced = _delete_chunk_days(con, target, chunk, reader.project_timezone)
    for window in _slice_windows(con, BATCH_ROWS):
        check_stop()
        con.execute(_latest_slice_sql(table, window))
        check_stop()
        inserted, updated = _store_slice(con, table)
        result.inserted += inserted
        result.updated += updated
    con.execute(f"DROP TABLE IF EXISTS {LATEST_TABLE}")
    result.duplicates = result.received - result.inserted - result.updated
    return result


def _store_in_file_order(
    con: Any, completed: CompletedChunk, target: str, replace: bool, reader: RowReader,
    check_stop: Callable[[], None],
) -> ChunkLoad | None:
    """The staged path's work with one loader thread, without staging whole rows.

    The chunk is scanned for keys (:mod:`mpexport.sinks.duckdb.ordered`),
    its copies judged against the stored ones slice by time slice, and the
    file read again into the table, losers left out. Returns None, having
    changed nothing, when a line has no readable time: the staged path then
    refuses the chunk with an example (:func:`refuse_untimed`).
    """
    chunk = completed.chunk
    result = ChunkLoad(received=completed.lines)
    with scanned(reader, con, completed) as lines:
        if lines.untimed():
            return None
        check_stop()
        if replace:
            result.replaced = _delete_chunk_days(con, target, chunk, reader.project_timezone)
        for window in _slice_windows(con, BATCH_ROWS, lines.rows):
            check_stop()
            result.updated += lines.judge_against(target, window)
        check_stop()
        rows = lines.insert(target)
        result.repaired = lines.repaired
        result.days = lines.days()
    result.inserted = rows - result.updated
    result.duplicates = result.received - rows
    return result


def load_chunk(
    con: Any,
    completed: CompletedChunk,
    *,
    table: str,
    filters: str,
    run_id: str,
    replace: bool,
    reader: RowReader,
    track_days: bool,
    check_stop: Callable[[], None],
) -> ChunkLoad:
    """Load one spool file in one transaction; roll back on any error.

    ``check_stop`` is called between statements and raises to abandon the
    chunk (the transaction is rolled back, nothing of it stays).
    ``track_days`` records the UTC days the chunk touched in the
    pending-Parquet table within the same transaction.

    Wide events (several KB each on average) can run the budget out: with
    several loader threads the fast path dedupes with one window over whole
    rows, and the one-statement read parses a vector of 2048 rows twice at
    once. The chunk is then loaded again, staged in two steps, which dedupes
    on the key columns only, slice by slice (6-12 KB events load at 256MB,
    measured). With one thread the fast path never holds whole rows
    (:mod:`mpexport.sinks.duckdb.ordered`).
    """
    fast = not replace and completed.path.stat().st_size > 0
    paths: set[str] = set()  # the ways the first attempt tried
    attempt = functools.partial(_load_once, con, completed, table=table, filters=filters,
                                run_id=run_id, replace=replace, track_days=track_days,
                                check_stop=check_stop, paths=paths)
    try:
        return attempt(reader=reader, fast=fast)
    except duckdb.OutOfMemoryException as exc:
        if spill_disk_full(exc) or (reader.budget.two_step and "staged" in paths):
            raise  # another attempt would fail the same way
        log.debug("%s: rows too wide for the memory budget in one step; staging in two",
                  completed.chunk.label())
        return attempt(reader=reader.in_two_steps(), fast=False)


def spill_disk_full(exc: BaseException) -> bool:
    """True when DuckDB's out-of-memory error is really the spill folder's disk filling up."""
    # DuckDB raises OutOfMemoryException for both; only this text tells them apart.
    text = str(exc).lower()
    return "max_temp_directory_size" in text or "offload" in text


def _load_once(
    con: Any,
    completed: CompletedChunk,
    *,
    table: str,
    filters: str,
    run_id: str,
    replace: bool,
    reader: RowReader,
    track_days: bool,
    check_stop: Callable[[], None],
    fast: bool,
    paths: set[str],
) -> ChunkLoad:
    """One attempt at :func:`load_chunk`: committed whole, or rolled back and raised.

    Adds to ``paths`` the ways it tried (``fast``, ``staged``).
    """
    chunk = completed.chunk
    target = quote_ident(table)
    con.execute("BEGIN TRANSACTION")
    try:
        check_stop()
        result = None
        if fast:
            paths.add("fast")
            try:
                result = _fast_insert(con, completed, target, reader, check_stop)
            except (_OutsideWindow, StageInstead):
                _rollback(con)
                con.execute("BEGIN TRANSACTION")
        if result is None:
            paths.add("staged")
            result = _staged_insert(con, completed, table, target, replace, reader, check_stop)
        if track_days:
            # The days this chunk's rows fell on, from SQL, never row by row in
            # Python: the fast path's window holds only this chunk's rows.
            if result.days is not None:
                con.execute(f"INSERT INTO {PARQUET_PENDING_TABLE} SELECT ?, unnest(?::DATE[])",
                            [table, result.days])
            else:
                rows = (f"{target} WHERE {result.window}" if result.window
                        else f"{STAGE_TABLE} WHERE TRUE")
                con.execute(
                    f"INSERT INTO {PARQUET_PENDING_TABLE} SELECT DISTINCT ?, CAST(time AS DATE) "
                    f"FROM {rows} AND time IS NOT NULL",
                    [table],
                )
            if replace:
                con.execute(
                    f"INSERT INTO {PARQUET_PENDING_TABLE} SELECT ?, CAST(d AS DATE) "
                    "FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) AS g(d)",
                    [table, chunk.from_date, chunk.to_date],
                )
        con.execute(
            f"INSERT INTO {MANIFEST_TABLE} (table_name, from_date, to_date, filters, received, "
            "inserted, duplicates, replaced, updated, bytes, sha256, run_id, time_in_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                table, chunk.from_date, chunk.to_date, filters, result.received,
                result.inserted, result.duplicates, result.replaced, result.updated,
                completed.bytes, completed.sha256, run_id, False,
            ],
        )
        con.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")
        check_stop()
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return result


def _rollback(con: Any) -> None:
    # The connection may be interrupted or already closed; the transaction
    # then dies with it, which is the same outcome.
    with contextlib.suppress(Exception):
        con.execute("ROLLBACK")
    # A statement that failed while lines were read in file order left the
    # setting on (it could not be reset in the aborted transaction).
    with contextlib.suppress(Exception):
        con.execute("SET preserve_insertion_order = false")
