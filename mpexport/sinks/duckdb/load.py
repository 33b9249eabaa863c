"""Loading one verified chunk into DuckDB: stage, dedupe, insert, manifest row.

All of it runs on the loader thread's connection inside one transaction
opened by :func:`load_chunk`, so a chunk is stored wholly or not at all.
JSON is only ever parsed by DuckDB (``read_json`` and the JSON functions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb.budget import LoaderBudget
from mpexport.sinks.duckdb.repair import refused_line_numbers, write_repairs
from mpexport.sinks.duckdb.schema import (
    MANIFEST_TABLE,
    PARQUET_PENDING_TABLE,
    quote_ident,
)

STAGE_TABLE = "_mpexport_stage"
RAW_TABLE = "_mpexport_raw"
# Mixpanel refuses events over 1 MB at ingestion, so 16 MB leaves a wide
# margin. With ignore_errors a longer line still loads (measured); the
# reader's own buffers are 32 MiB a thread whatever this is (duckdb_budget).
MAX_OBJECT_SIZE = 16 * 1024 * 1024
# Rows deduplicated and inserted per statement. DuckDB's DISTINCT ON and the
# anti-join keep hash tables proportional to their input; slicing a chunk by
# time keeps them bounded, so a big chunk loads under a small memory_limit.
DEFAULT_BATCH_ROWS = 200_000

KEY_COLUMNS = ("event", "distinct_id", "time", "insert_id")
_ALL_COLUMNS = "event, time, distinct_id, insert_id, mp_processing_time_ms, properties"


@dataclass
class ChunkLoad:
    """What loading one chunk did."""

    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    replaced: int = 0
    repaired: int = 0  # events DuckDB refused, stored with U+FFFD in place of bad text
    window: str | None = None  # set by the fast path: where this chunk's rows are


class RefusedLines(Exception):
    """Lines of a chunk that DuckDB refuses and no repair makes readable."""


def sql_string(text: str) -> str:
    """A SQL string literal (paths are ours, but may contain quotes)."""
    return "'" + text.replace("'", "''") + "'"


def _time_micros_sql(raw: str, time_in_ms: bool) -> str:
    """SQL turning the JSON text of ``time`` into exact epoch microseconds.

    DECIMAL first: it parses integers and fractions exactly (a BIGINT cast
    would round ``1.5``), and also accepts exponent forms. DOUBLE is the
    fallback for anything else numeric-looking. A value outside years
    1..9999 gives NULL instead of failing the chunk: the multiplication of a
    wide DECIMAL overflowed (an OutOfRangeException for ``1e30``, which no
    TRY_CAST catches), and instants near the BIGINT limit overflowed in the
    time zone conversion, so the range is checked on a DOUBLE first.
    """
    unit = 1_000 if time_in_ms else 1_000_000
    seconds = f"(TRY_CAST({raw} AS DOUBLE) / {1000 if time_in_ms else 1})"
    return (
        f"CASE WHEN {seconds} BETWEEN {_MIN_SECONDS} AND {_MAX_SECONDS} THEN "
        f"coalesce(TRY_CAST(TRY_CAST({raw} AS DECIMAL(38, 6)) * {unit} AS BIGINT), "
        f"TRY_CAST(round(TRY_CAST({raw} AS DOUBLE) * {unit}) AS BIGINT)) END"
    )


# 0001-01-01 and 9999-12-31 in epoch seconds: the instants a TIMESTAMPTZ
# holds in every time zone.
_MIN_SECONDS = -62_135_596_800 + 86_400
_MAX_SECONDS = 253_402_300_799 - 86_400


def _instant_sql(micros: str, project_timezone: str | None) -> str:
    """SQL for the true instant of an event from its epoch microseconds.

    Projects created before 2023 shift ``time`` by their UTC offset: the
    number is the project's wall clock read as if it were UTC. Reading it as
    a naive timestamp and placing that in the project's zone undoes the shift
    (with the offset of that moment, so daylight saving is right too).
    """
    if project_timezone is None:
        return f"make_timestamptz({micros})"
    return f"(make_timestamp({micros}) AT TIME ZONE {sql_string(project_timezone)})"


def reader_sql(path: str) -> str:
    """DuckDB's NDJSON reader over a spool file, two columns, never failing on a line.

    With ``ignore_errors`` a line the reader refuses becomes a row without
    ``properties`` instead of failing the chunk; :func:`rows_sql` drops such
    rows, and the loader compares the rows it got with the file's line count
    and repairs what was refused (see :mod:`mpexport.sinks.duckdb.repair`).
    """
    return (
        f"read_json({sql_string(path)}, format = 'newline_delimited', "
        "columns = {'event': 'VARCHAR', 'properties': 'JSON'}, "
        f"maximum_object_size = {MAX_OBJECT_SIZE}, ignore_errors = true)"
    )


def rows_sql(source: str, time_in_ms: bool, project_timezone: str | None = None) -> str:
    """A SELECT of ``source``'s (event, properties) rows in the table's columns.

    ``source`` is a reader (:func:`reader_sql`) or a table of raw rows.
    """
    # json_extract_string with a list of paths parses each properties value
    # once for all four fields, instead of once per ->> operator.
    micros = _time_micros_sql("p[1]", time_in_ms)
    mp_ms = "p[4]"
    return f"""
        SELECT event,
               {_instant_sql(micros, project_timezone)} AS time,
               p[2] AS distinct_id,
               p[3] AS insert_id,
               coalesce(TRY_CAST({mp_ms} AS BIGINT),
                        TRY_CAST(TRY_CAST({mp_ms} AS DOUBLE) AS BIGINT)) AS mp_processing_time_ms,
               properties
        FROM (
            SELECT event, properties,
                   json_extract_string(properties, ['$.time', '$.distinct_id',
                       '$."$insert_id"', '$.mp_processing_time_ms']) AS p
            FROM {source}
            -- A refused line (see reader_sql); every Mixpanel event has properties.
            WHERE properties IS NOT NULL
        )
    """


@dataclass(frozen=True)
class RowReader:
    """How the loader turns a spool file into rows: the budget and the time settings."""

    budget: LoaderBudget
    time_in_ms: bool = False
    project_timezone: str | None = None

    def insert(self, con: Any, into: str, path: str,
               shape: Callable[[str], str] = lambda rows: rows) -> int:
        """Run ``into`` (``INSERT INTO t``) over ``shape(rows of path)``; return the row count.

        A small budget cannot read and extract in one statement (see
        :mod:`mpexport.sinks.duckdb.budget`): the raw rows go to a temp table that
        spills to disk, and the keys are extracted from there.
        """
        reader = reader_sql(path)
        if not self.budget.two_step:
            (count,) = con.execute(
                f"{into} {shape(rows_sql(reader, self.time_in_ms, self.project_timezone))}"
            ).fetchone()
            return int(count)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {RAW_TABLE} AS SELECT * FROM {reader}")
        try:
            (count,) = con.execute(
                f"{into} {shape(rows_sql(RAW_TABLE, self.time_in_ms, self.project_timezone))}"
            ).fetchone()
        finally:
            con.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        return int(count)

    def insert_new(self, con: Any, target: str, completed: CompletedChunk,
                   window: str) -> tuple[int, int]:
        """Insert a chunk's rows into a window of ``target`` that holds none: (rows, repaired).

        Copies within the chunk are dropped as the rows go in (one row per
        Mixpanel key), never deleted after: deleting rows appended by the
        same transaction made DuckDB write the whole chunk to the WAL at
        commit and again at checkpoint (+38 s for a 1.5 GB day, measured;
        even one deleted row did it). Refused lines are counted in a second
        pass over the file and their repaired copies inserted unless their
        key is already there. The pass that names refused lines costs about
        a tenth of the insert (5 s for a 1.5 GB day).
        """
        inserted = self.insert(con, f"INSERT INTO {target}", str(completed.path), _first_per_key)
        refused = refused_line_numbers(con, reader_sql(str(completed.path)))
        if not refused:
            return inserted, 0

        def new_to_window(rows: str) -> str:
            return (f"SELECT s.* FROM ({_first_per_key(rows)}) AS s ANTI JOIN "
                    f"(SELECT {', '.join(KEY_COLUMNS)} FROM {target} WHERE {window}) AS e "
                    f"ON {_key_match('s', 'e')}")

        with self._repaired(con, completed, refused) as (side, repaired):
            inserted += self.insert(con, f"INSERT INTO {target}", str(side), new_to_window)
        return inserted, repaired

    def insert_spool(self, con: Any, into: str, completed: CompletedChunk) -> tuple[int, int]:
        """Insert every line of a spool file, repairing refused ones: (rows, repaired)."""
        rows = self.insert(con, into, str(completed.path))
        if rows >= completed.lines:
            return rows, 0
        refused = refused_line_numbers(con, reader_sql(str(completed.path)))
        with self._repaired(con, completed, refused) as (side, repaired):
            rows += self.insert(con, into, str(side))
        return rows, repaired

    @contextlib.contextmanager
    def _repaired(self, con: Any, completed: CompletedChunk,
                  numbers: list[int]) -> Iterator[tuple[Path, int]]:
        """A side file with repaired copies of the lines DuckDB refused, and their number.

        Raises :class:`RefusedLines` when a refused line is not even lenient
        JSON or its repair is refused too (no properties object), so a chunk
        is never stored with events missing.
        """
        side = completed.path.with_name(completed.path.name + ".repaired")
        try:
            found = write_repairs(completed.path, side, numbers)
            (still,) = con.execute(
                f"SELECT count(*) FROM {reader_sql(str(side))} WHERE properties IS NULL"
            ).fetchone() if found.repaired else (0,)
            if found.unrepairable or still:
                raise RefusedLines(
                    f"DuckDB refused {found.unrepairable + still} of {completed.lines} events "
                    "and they could not be repaired (stdout exports keep them as sent)"
                )
            yield side, found.repaired
        finally:
            side.unlink(missing_ok=True)


def _first_per_key(rows: str) -> str:
    # Which copy survives does not matter for Mixpanel's exact duplicates;
    # copies that differ elsewhere (a re-sent event) keep an arbitrary one.
    return (f"SELECT * FROM ({rows}) "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(KEY_COLUMNS)}) = 1")


def _key_match(left: str, right: str) -> str:
    # NULL keys (a missing distinct_id or $insert_id) must compare equal, as
    # Mixpanel treats them, so plain = would let such duplicates through.
    return " AND ".join(f"{left}.{c} IS NOT DISTINCT FROM {right}.{c}" for c in KEY_COLUMNS)


def _insert_slice_sql(table: str, window: str) -> str:
    """Insert the staged rows matching ``window`` that are new to the table.

    ``window`` is a predicate on ``time`` built from constants, so the scan of
    the stored table is pruned by DuckDB's per-row-group min/max (zonemaps):
    the anti-join reads only the row groups overlapping this slice. Copies
    within the chunk are dropped by keeping each key's first staged row: the
    grouping touches only the key columns and the row id, not the large
    properties, which makes it about twice as fast as DISTINCT ON over whole
    rows and keeps its memory small. No ORDER BY: a chunk already lands as a
    contiguous time range, and sorting whole rows doubled the insert's cost.
    """
    target = quote_ident(table)
    return f"""
        INSERT INTO {target}
        SELECT s.event, s.time, s.distinct_id, s.insert_id, s.mp_processing_time_ms, s.properties
        FROM (
            SELECT {_ALL_COLUMNS} FROM {STAGE_TABLE}
            WHERE rowid IN (
                SELECT min(rowid) FROM {STAGE_TABLE} WHERE {window}
                GROUP BY event, distinct_id, time, insert_id
            )
        ) AS s
        ANTI JOIN (
            SELECT event, distinct_id, time, insert_id FROM {target} WHERE {window}
        ) AS e
        ON {_key_match("s", "e")}
    """


def _slice_windows(con: Any, batch_rows: int) -> list[str]:
    """Time predicates that split the staged rows into slices of about ``batch_rows``.

    Slices are ranges of ``time``, so every copy of a key lands in the same
    slice and per-slice dedupe equals whole-chunk dedupe.
    """
    lo, hi, count = con.execute(
        f"SELECT epoch_us(min(time)), epoch_us(max(time)), count(time) FROM {STAGE_TABLE}"
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
                    f"[{fractions}])) AS q FROM {STAGE_TABLE})"
                ).fetchall()
            ]
            bounds.extend(sorted({int(c) for c in cuts if lo < int(c) <= hi}))
        bounds.append(int(hi) + 1)  # half-open upper end just past the newest row
        for start, stop in itertools.pairwise(bounds):
            windows.append(
                f"time >= make_timestamptz({start}::BIGINT) "
                f"AND time < make_timestamptz({stop}::BIGINT)"
            )
    (nulls,) = con.execute(f"SELECT count(*) FROM {STAGE_TABLE} WHERE time IS NULL").fetchone()
    if nulls:
        # Rows without a usable time cannot be windowed; they are rare enough
        # that a full scan for their own NULL-time peers is acceptable.
        windows.append("time IS NULL")
    return windows


def _day_start_us(day: dt.date, project_timezone: str | None = None) -> int:
    zone: dt.tzinfo = dt.UTC if project_timezone is None else ZoneInfo(project_timezone)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return int(start.timestamp()) * 1_000_000


def _window_sql(lo: int, hi: int) -> str:
    return f"time >= make_timestamptz({lo}::BIGINT) AND time < make_timestamptz({hi}::BIGINT)"


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
    lo = _day_start_us(chunk.from_date, reader.project_timezone)
    hi = _day_start_us(chunk.to_date + dt.timedelta(days=1), reader.project_timezone)
    window = _window_sql(lo, hi)
    (stored,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if stored:
        return None
    check_stop()
    inserted, repaired = reader.insert_new(con, target, completed, window)
    check_stop()
    (landed,) = con.execute(f"SELECT count(*) FROM {target} WHERE {window}").fetchone()
    if landed != inserted:
        raise _OutsideWindow()
    return ChunkLoad(received=completed.lines, inserted=inserted,
                     duplicates=completed.lines - inserted, repaired=repaired, window=window)


class _OutsideWindow(Exception):
    """A row of the chunk lies outside the fast path's window: stage instead."""


def _staged_insert(
    con: Any, completed: CompletedChunk, table: str, target: str, replace: bool,
    reader: RowReader, batch_rows: int, check_stop: Callable[[], None],
) -> ChunkLoad:
    """Stage the chunk, then insert what is new to the table, slice by time slice."""
    chunk = completed.chunk
    result = ChunkLoad()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} (event VARCHAR, time TIMESTAMPTZ, "
        "distinct_id VARCHAR, insert_id VARCHAR, mp_processing_time_ms BIGINT, properties JSON)"
    )
    # A quiet day needs no reader at all.
    if completed.path.stat().st_size > 0:
        result.received, result.repaired = reader.insert_spool(
            con, f"INSERT INTO {STAGE_TABLE}", completed)
    check_stop()
    if replace:
        # The chunk's days are the project's days (UTC for new projects).
        start = _day_start_us(chunk.from_date, reader.project_timezone)
        stop = _day_start_us(chunk.to_date + dt.timedelta(days=1), reader.project_timezone)
        (result.replaced,) = con.execute(
            f"DELETE FROM {target} WHERE {_window_sql(start, stop)}"
        ).fetchone()
    for window in _slice_windows(con, batch_rows):
        check_stop()
        (inserted,) = con.execute(_insert_slice_sql(table, window)).fetchone()
        result.inserted += int(inserted)
    result.duplicates = result.received - result.inserted
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
    batch_rows: int,
    track_days: bool,
    check_stop: Callable[[], None],
) -> ChunkLoad:
    """Load one spool file in one transaction; roll back on any error.

    ``check_stop`` is called between statements and raises to abandon the
    chunk (the transaction is rolled back, nothing of it stays).
    ``track_days`` records the UTC days the chunk touched in the
    pending-Parquet table within the same transaction.
    """
    chunk = completed.chunk
    target = quote_ident(table)
    fast = not replace and completed.path.stat().st_size > 0
    con.execute("BEGIN TRANSACTION")
    try:
        check_stop()
        result = None
        if fast:
            try:
                result = _fast_insert(con, completed, target, reader, check_stop)
            except _OutsideWindow:
                _rollback(con)
                con.execute("BEGIN TRANSACTION")
        if result is None:
            result = _staged_insert(con, completed, table, target, replace, reader,
                                    batch_rows, check_stop)
        if track_days:
            # The days this chunk's rows fell on, from SQL, never row by row in
            # Python: the fast path's window holds only this chunk's rows.
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
            "inserted, duplicates, replaced, bytes, sha256, run_id, time_in_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                table, chunk.from_date, chunk.to_date, filters, result.received,
                result.inserted, result.duplicates, result.replaced, completed.bytes,
                completed.sha256, run_id, reader.time_in_ms,
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
