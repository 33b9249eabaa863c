"""How a spool file becomes rows: DuckDB's NDJSON reader and the typed key columns.

:class:`RowReader` inserts a spool file's rows wherever the loader asks
(the table itself, or a staging table), within the caller's transaction,
and repairs the lines DuckDB's reader refuses (see
:mod:`mpexport.sinks.duckdb.repair`). JSON is only ever parsed by DuckDB
(``read_json`` and the JSON functions).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from mpexport.errors import ReaderMismatchError
from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb.budget import LoaderBudget
from mpexport.sinks.duckdb.repair import count_refused, write_repairs

RAW_TABLE = "_mpexport_raw"
# Mixpanel refuses events over 1 MB at ingestion, so 16 MB leaves a wide
# margin. With ignore_errors a longer line still loads (measured); the
# reader's own buffers are 32 MiB a thread whatever this is (duckdb_budget).
MAX_OBJECT_SIZE = 16 * 1024 * 1024

KEY_COLUMNS = ("event", "distinct_id", "time", "insert_id")

# Which of the copies sharing a Mixpanel key a chunk keeps, best first: the
# one Mixpanel shows, the latest processed (a missing processing time counts
# as the earliest). Copies processed at the same instant (or both without a
# time) are ordered by a hash of their properties text (TIE), so the choice
# depends on the copies alone, never on their order in the file or on how
# the chunk was loaded (the reader keeps no line order), and --db and the
# lake keep the same one. Two order keys also keep DuckDB from turning the
# fast path's window into a hash aggregate of whole rows (it does so for a
# single ORDER BY key), which was 1.5-2x slower.
TIE = "hash(properties)"


def latest_first(tie: str = TIE) -> str:
    """The ORDER BY of a key's copies, latest first; ``tie`` is :data:`TIE` or a column of it."""
    return f"mp_processing_time_ms DESC NULLS LAST, {tie} DESC"


class StageInstead(Exception):
    """The fast path cannot apply the latest-copy rule to this chunk: stage it instead."""


class RefusedLines(Exception):
    """Lines of a chunk that DuckDB refuses and no repair makes readable."""


def sql_string(text: str) -> str:
    """A SQL string literal (paths are ours, but may contain quotes)."""
    return "'" + text.replace("'", "''") + "'"


def _time_micros_sql(raw: str) -> str:
    """SQL turning the JSON text of ``time`` into exact epoch microseconds.

    DECIMAL first: it parses integers and fractions exactly (a BIGINT cast
    would round ``1.5``), and also accepts exponent forms. DOUBLE is the
    fallback for anything else numeric-looking. A value outside years
    1..9999 gives NULL instead of failing the chunk: the multiplication of a
    wide DECIMAL overflowed (an OutOfRangeException for ``1e30``, which no
    TRY_CAST catches), and instants near the BIGINT limit overflowed in the
    time zone conversion, so the range is checked on a DOUBLE first.
    """
    # Mixpanel's `time` is in seconds: its time_in_ms export parameter is
    # never sent, so a table never mixes units (the manifest's time_in_ms
    # column, kept for older files, is always false).
    seconds = f"TRY_CAST({raw} AS DOUBLE)"
    return (
        f"CASE WHEN {seconds} BETWEEN {_MIN_SECONDS} AND {_MAX_SECONDS} THEN "
        f"coalesce(TRY_CAST(TRY_CAST({raw} AS DECIMAL(38, 6)) * 1000000 AS BIGINT), "
        f"TRY_CAST(round({seconds} * 1000000) AS BIGINT)) END"
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


def rows_sql(source: str, project_timezone: str | None = None, *,
             numbered: bool = False, readable_only: bool = True) -> str:
    """A SELECT of ``source``'s (event, properties) rows in the table's columns.

    ``source`` is a reader (:func:`reader_sql`), a table of raw rows, or
    (``numbered``) either of them with a line number ``n`` (:func:`numbered_sql`),
    which comes first in the output. ``readable_only=False`` keeps the rows of
    refused lines (no properties, every column NULL).
    """
    # json_extract_string with a list of paths parses each properties value
    # once for all four fields, instead of once per ->> operator.
    micros = _time_micros_sql("p[1]")
    mp_ms = "p[4]"
    n = "n, " if numbered else ""
    # A refused line (see reader_sql); every Mixpanel event has properties.
    readable = "WHERE properties IS NOT NULL" if readable_only else ""
    return f"""
        SELECT {n}event,
               {_instant_sql(micros, project_timezone)} AS time,
               p[2] AS distinct_id,
               p[3] AS insert_id,
               coalesce(TRY_CAST({mp_ms} AS BIGINT),
                        TRY_CAST(TRY_CAST({mp_ms} AS DOUBLE) AS BIGINT)) AS mp_processing_time_ms,
               properties
        FROM (
            SELECT {n}event, properties,
                   json_extract_string(properties, ['$.time', '$.distinct_id',
                       '$."$insert_id"', '$.mp_processing_time_ms']) AS p
            FROM {source}
            {readable}
        )
    """


def numbered_sql(source: str, first: int = 0) -> str:
    """``source``'s (event, properties) rows with their line number ``n``, from ``first`` on.

    Numbers follow the file only while insertion order is preserved
    (:func:`in_file_order`); reading in file order takes one thread.
    """
    return f"SELECT row_number() OVER () - 1 + {int(first)} AS n, event, properties FROM {source}"


@dataclass(frozen=True)
class RowReader:
    """How the loader turns a spool file into rows: the budget and the project time zone."""

    budget: LoaderBudget
    project_timezone: str | None = None

    def in_two_steps(self) -> RowReader:
        """This reader, staging raw lines before extracting keys whatever the budget."""
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, two_step=True))

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
                f"{into} {shape(rows_sql(reader, self.project_timezone))}"
            ).fetchone()
            return int(count)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {RAW_TABLE} AS SELECT * FROM {reader}")
        try:
            (count,) = con.execute(
                f"{into} {shape(rows_sql(RAW_TABLE, self.project_timezone))}"
            ).fetchone()
        except BaseException:
            # A failed statement aborted the transaction: the DROP would fail
            # too and hide the error (the rollback drops the table anyway).
            with contextlib.suppress(Exception):
                con.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
            raise
        con.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        return int(count)

    def insert_new(self, con: Any, target: str, completed: CompletedChunk,
                   window: str) -> tuple[int, int]:
        """Insert a chunk's rows into a window of ``target`` that holds none: (rows, repaired).

        The fast path of a loader with several threads: the window below
        runs in parallel, where reading in file order would take one thread
        (with one, :mod:`mpexport.sinks.duckdb.ordered` is cheaper).
        Copies within the chunk are dropped as the rows go in (the latest
        copy of each Mixpanel key, see :func:`latest_first`), never deleted
        after: deleting rows appended by the same transaction made DuckDB
        write the whole chunk to the WAL at commit and again at checkpoint
        (+38 s for a 1.5 GB day, measured; even one deleted row did it).
        Refused lines are counted in a second pass over the file and their
        repaired copies inserted when their key is new. A repaired copy of a
        key already inserted would have to win or lose against it, which
        only deleting an appended row could undo: the chunk is then staged
        instead (:class:`StageInstead`; refused lines are rare, copies of
        them that differ rarer still). The pass that names refused lines
        costs about a tenth of the insert (5 s for a 1.5 GB day); it also
        counts the rows read, which :func:`check_counts` compares with the
        chunk's lines.
        """
        inserted = self.insert(con, f"INSERT INTO {target}", str(completed.path), latest_per_key)
        found = count_refused(con, reader_sql(str(completed.path)))
        check_counts(completed, found.rows, len(found.refused))
        if not found.refused:
            return inserted, 0

        def new_to_window(rows: str) -> str:
            return (f"SELECT s.* FROM ({latest_per_key(rows)}) AS s ANTI JOIN "
                    f"(SELECT {', '.join(KEY_COLUMNS)} FROM {target} WHERE {window}) AS e "
                    f"ON {key_match('s', 'e')}")

        with self.repaired_lines(con, completed, found.refused) as (side, repaired):
            added = self.insert(con, f"INSERT INTO {target}", str(side), new_to_window)
            side_rows = rows_sql(reader_sql(str(side)), self.project_timezone)
            (keys,) = con.execute(
                f"SELECT count(*) FROM ({latest_per_key(side_rows)})").fetchone()
        if added != keys:
            raise StageInstead()
        return inserted + added, repaired

    def insert_spool(self, con: Any, into: str, completed: CompletedChunk,
                     shape: Callable[[str], str] = lambda rows: rows) -> tuple[int, int]:
        """Insert every line of a spool file, repairing refused ones: (rows, repaired).

        The insert's own row count is the rows read. Only when it falls
        short of the chunk's lines does a second pass name the refused
        lines; when it does not, no line can have been refused without the
        reader giving more rows than lines, so the check needs no pass then.
        """
        rows = self.insert(con, into, str(completed.path), shape)
        if rows >= completed.lines:
            check_counts(completed, rows, 0)
            return rows, 0
        refused = count_refused(con, reader_sql(str(completed.path))).refused
        check_counts(completed, rows, len(refused))
        with self.repaired_lines(con, completed, refused) as (side, repaired):
            rows += self.insert(con, into, str(side), shape)
        return rows, repaired

    @contextlib.contextmanager
    def repaired_lines(self, con: Any, completed: CompletedChunk,
                       numbers: list[int]) -> Iterator[tuple[Path, int]]:
        """A side file with repaired copies of the lines DuckDB refused, and their number.

        Raises :class:`RefusedLines` when a refused line is not even lenient
        JSON or its repair is refused too (no properties object), so a chunk
        is never stored with events missing.
        """
        side = completed.path.with_name(completed.path.name + ".repaired")
        originals = completed.path.with_name(completed.path.name + ".refused")
        try:
            found = write_repairs(completed.path, side, numbers, originals)
            check_refused_again(con, completed, originals, len(numbers))
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
            originals.unlink(missing_ok=True)


def mismatch(completed: CompletedChunk, said: str) -> ReaderMismatchError:
    """The error for a chunk the reader read otherwise than the loader relies on (``said``)."""
    return ReaderMismatchError(
        f"loading {completed.chunk.label()}: DuckDB's JSON reader {said}, "
        f"a DuckDB reader mismatch (duckdb {duckdb.__version__})",
        "nothing of this chunk was stored; please report it to mpexport with the duckdb "
        "version named here; exports to stdout do not use this reader and are unaffected",
    )


def check_counts(completed: CompletedChunk, rows: int, refused: int) -> None:
    """Raise :class:`ReaderMismatchError` unless rows read plus refused lines are the chunk's lines.

    ``completed.lines`` was counted on the bytes received, so a difference
    means the reader no longer gives exactly one row per line (one without
    properties for a line it refuses), which the refused-line pass relies
    on: the chunk would be stored with events missing or doubled.
    """
    if rows + refused != completed.lines:
        raise mismatch(completed, f"gave {rows} rows and {refused} refused lines "
                                   f"for a chunk of {completed.lines} lines")


def check_refused_again(con: Any, completed: CompletedChunk, originals: Path,
                        named: int) -> None:
    """Raise :class:`ReaderMismatchError` unless the ``named`` lines in ``originals`` are refused.

    The refused lines are named by row number, which follows the file only
    as long as DuckDB keeps ``row_number() OVER ()`` in file order. Numbers
    out of order would name readable lines: their copies would be stored,
    the refused events lost, and every count would still add up. Reading
    only the named lines again costs a few lines, not a pass over the file.
    """
    if not named:
        return
    (still,) = con.execute(
        f"SELECT count(*) FILTER (WHERE properties IS NULL) FROM {reader_sql(str(originals))}"
    ).fetchone()
    if still != named:
        raise mismatch(completed, f"named {named} refused lines, of which {still} are "
                                   "refused when read again")


def latest_per_key(rows: str) -> str:
    """A SELECT of ``rows`` keeping the latest copy of each Mixpanel key (:func:`latest_first`)."""
    return (f"SELECT * FROM ({rows}) QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(KEY_COLUMNS)} ORDER BY {latest_first()}) = 1")


def newer(new: str, old: str) -> str:
    """A condition: the copy ``new`` was processed after the copy ``old`` (aliases of rows).

    A missing processing time counts as the earliest; equal times are not
    newer, so a stored row stays when a re-read brings an equal copy.
    """
    n, o = f"{new}.mp_processing_time_ms", f"{old}.mp_processing_time_ms"
    return f"({n} IS NOT NULL AND ({o} IS NULL OR {n} > {o}))"


def key_match(left: str, right: str) -> str:
    """A join condition: the Mixpanel keys of ``left`` and ``right`` are equal."""
    # NULL keys (a missing distinct_id or $insert_id) must compare equal, as
    # Mixpanel treats them, so plain = would let such duplicates through.
    return " AND ".join(f"{left}.{c} IS NOT DISTINCT FROM {right}.{c}" for c in KEY_COLUMNS)
