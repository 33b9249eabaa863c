"""A chunk's rows into the table in one thread, duplicates dropped by line number.

The loader's other fast path (:meth:`RowReader.insert_new`) keeps each
key's latest copy with a window over whole rows: DuckDB sorts every row,
properties and all, and under a small budget spills them to disk and back.
On a 1M-event realistic day at 256MB (one thread) that window cost 14 s of
CPU on top of a 10 s insert (measured, DuckDB 2.0.1).

Here the file is read twice, neither time keeping whole rows:

1. a scan keeps each line's number, key columns, processing time and two
   hashes (of the properties, the tie-break; of all stored columns, the
   row's fingerprint) in a temp table, and counts the refused lines;
2. the lines that lose to another copy of their key are picked from that
   small table (by :func:`~mpexport.sinks.duckdb.rows.latest_first`, as on
   every path), together with repaired copies of refused lines;
3. for a chunk whose days the table already holds (a sync's lookback,
   ``--refresh``), each remaining copy is compared with the stored copy of
   its key, key columns only: an older stored row is deleted, a stored row
   at least as new puts the chunk's copy among the losers;
4. the insert reads the file again and leaves out the losers' (number,
   fingerprint) pairs: a small hash table, no sort.

Line numbers follow the file only while DuckDB preserves insertion order,
which keeps the reader on one thread: this path is taken when the budget
gives the loader one thread anyway (256MB, the default on two cores), and
uses about half the CPU of the window there (the 5.5 s scan included). A
number that named another line in the insert than in the scan would leave
out a different row; pairing it with the fingerprint makes that drop nothing
instead, which the count after the insert turns into a reader-mismatch
error, so a chunk is never stored with the wrong copies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb.repair import in_file_order
from mpexport.sinks.duckdb.rows import (
    KEY_COLUMNS,
    RAW_TABLE,
    RowReader,
    check_counts,
    key_match,
    latest_first,
    mismatch,
    newer,
    numbered_sql,
    reader_sql,
    rows_sql,
)

SCAN_TABLE = "_mpexport_scan"
LOSERS_TABLE = "_mpexport_losers"
# Copies of the chunk paired with the stored copy of their key.
PAIRS_TABLE = "_mpexport_pairs"
_KEYS = ", ".join(KEY_COLUMNS)
# Equal fingerprints mean equal stored columns (up to a 64-bit hash of the
# properties text): leaving out either of two such rows stores the same thing.
_FINGERPRINT = f"hash({_KEYS}, mp_processing_time_ms, hash(properties))"
_COLUMNS = "event, time, distinct_id, insert_id, mp_processing_time_ms, properties"


def insert_new_in_file_order(reader: RowReader, con: Any, target: str,
                             completed: CompletedChunk) -> tuple[int, int]:
    """Insert a chunk's latest copies into ``target``, holding none of its keys: (rows, repaired).

    Runs in the caller's transaction; the temp tables it makes are dropped
    before it returns. Refused lines are repaired (U+FFFD for what cannot
    be decoded) and compete with the other copies of their key like any line.
    """
    with scanned(reader, con, completed) as chunk:
        return chunk.insert(target), chunk.repaired


class ScannedChunk:
    """A chunk's lines, scanned: numbered sources (the spool file, then its repaired lines)."""

    def __init__(self, reader: RowReader, con: Any, completed: CompletedChunk) -> None:
        self.reader = reader
        self.con = con
        self.completed = completed
        self.staged = reader.budget.two_step
        self.files: list[tuple[Path, int]] = [(completed.path, 0)]
        self.readable = 0  # lines read, repaired ones included
        self.repaired = 0
        # The scanned rows, as a FROM clause with a WHERE (for time slices).
        self.rows = f"{SCAN_TABLE} WHERE NOT refused"

    def numbered(self) -> list[str]:
        """The sources to read, each a SELECT with ``n``, ``event`` and ``properties``."""
        if self.staged:
            return [RAW_TABLE]
        return [f"({numbered_sql(reader_sql(str(path)), first)})" for path, first in self.files]

    def scan(self, path: Path, first: int) -> list[int]:
        """Add the lines of ``path`` (numbered from ``first``) to the scan table; the refused ones.

        A small budget cannot read and extract in one statement
        (:mod:`mpexport.sinks.duckdb.budget`): the numbered raw lines go to a
        temp table first, and both reads use that.
        """
        source = f"({numbered_sql(reader_sql(str(path)), first)})"
        if self.staged:
            self._add(RAW_TABLE, f"SELECT * FROM {source}", first)
            source = f"(SELECT * FROM {RAW_TABLE} WHERE n >= {int(first)})"
        every_line = rows_sql(source, self.reader.project_timezone, numbered=True,
                              readable_only=False)
        self._add(SCAN_TABLE,
                  f"SELECT n, properties IS NULL AS refused, {_KEYS}, mp_processing_time_ms, "
                  f"hash(properties) AS tie, {_FINGERPRINT} AS fp FROM ({every_line})", first)
        readable, refused = self.con.execute(
            f"SELECT count(*) FILTER (WHERE NOT refused), "
            f"list(n - {int(first)} ORDER BY n) FILTER (WHERE refused) "
            f"FROM {SCAN_TABLE} WHERE n >= {int(first)}"
        ).fetchone()
        self.readable += int(readable)
        # list() over no rows is NULL.
        return [int(n) for n in refused or ()]

    def _add(self, table: str, select: str, first: int) -> None:
        """Create ``table`` from ``select`` for the spool file's lines; add to it for the rest."""
        if first == 0:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}")
        else:
            self.con.execute(f"INSERT INTO {table} {select}")

    def pick_losers(self) -> None:
        """The lines to leave out: every copy of a key but its latest.

        Keys seen once (nearly all) are told apart by a hash of the key, so
        only the few lines sharing a hash are ordered, and by their real key
        columns, so a hash collision cannot drop an event.
        """
        keyhash = f"hash({_KEYS})"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {LOSERS_TABLE} AS SELECT n, fp FROM {SCAN_TABLE} "
            f"WHERE NOT refused AND {keyhash} IN (SELECT {keyhash} FROM {SCAN_TABLE} "
            f"WHERE NOT refused GROUP BY ALL HAVING count(*) > 1) "
            f"QUALIFY row_number() OVER (PARTITION BY {_KEYS} "
            f"ORDER BY {latest_first('tie')}, n) > 1"
        )

    def untimed(self) -> int:
        """How many read lines have no readable ``time`` (see ``load.refuse_untimed``)."""
        (count,) = self.con.execute(
            f"SELECT count(*) FROM {self.rows} AND time IS NULL").fetchone()
        return int(count)

    def judge_against(self, target: str, window: str) -> int:
        """Compare the chunk's copies in ``window`` with the stored ones; return rows deleted.

        A stored copy at least as new as the chunk's (:func:`newer`) keeps
        its place and the chunk's copy joins the losers, so reading a day
        again changes nothing; an older one is deleted, to be replaced by
        the insert. Key columns, processing times and row ids only, of the
        stored rows in ``window`` (a constant time range, so DuckDB's
        zonemaps prune the rest). Call :meth:`insert` after every window.
        """
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {PAIRS_TABLE} AS "
            f"SELECT s.n, s.fp, t.rowid AS stored_row, {newer('s', 't')} AS newer FROM "
            f"(SELECT n, fp, {_KEYS}, mp_processing_time_ms FROM {self.rows} AND {window}) AS s "
            f"JOIN (SELECT rowid, {_KEYS}, mp_processing_time_ms FROM {target} "
            f"WHERE {window}) AS t ON {key_match('s', 't')} "
            f"WHERE (s.n, s.fp) NOT IN (SELECT (n, fp) FROM {LOSERS_TABLE})"
        )
        self.con.execute(f"INSERT INTO {LOSERS_TABLE} SELECT DISTINCT n, fp FROM {PAIRS_TABLE} "
                         "WHERE NOT newer")
        (deleted,) = self.con.execute(
            f"DELETE FROM {target} WHERE rowid IN (SELECT stored_row FROM {PAIRS_TABLE} "
            f"WHERE newer AND (n, fp) NOT IN (SELECT (n, fp) FROM {LOSERS_TABLE}))"
        ).fetchone()
        return int(deleted)

    def insert(self, target: str) -> int:
        """Insert every line but the losers into ``target``; return the rows inserted.

        Raises a reader-mismatch error unless exactly the losers were left
        out (a line numbered otherwise than in the scan leaves out nothing).
        """
        inserted = 0
        for source in self.numbered():
            (count,) = self.con.execute(
                f"INSERT INTO {target} SELECT {_COLUMNS} FROM "
                f"({rows_sql(source, self.reader.project_timezone, numbered=True)}) "
                f"WHERE (n, {_FINGERPRINT}) NOT IN (SELECT (n, fp) FROM {LOSERS_TABLE})"
            ).fetchone()
            inserted += int(count)
        (losers,) = self.con.execute(f"SELECT count(*) FROM {LOSERS_TABLE}").fetchone()
        if inserted != self.readable - losers:
            raise mismatch(self.completed, f"numbered lines differently on two reads of the "
                                           f"file ({inserted} rows kept of {self.readable}, "
                                           f"{losers} copies left out)")
        return inserted

    def days(self) -> list[dt.date]:
        """The days (of the connection's time zone) the chunk's lines fall on."""
        return [day for (day,) in self.con.execute(
            f"SELECT DISTINCT CAST(time AS DATE) FROM {self.rows} AND time IS NOT NULL "
            "ORDER BY 1").fetchall()]


@contextlib.contextmanager
def scanned(reader: RowReader, con: Any, completed: CompletedChunk) -> Iterator[ScannedChunk]:
    """Scan the chunk (and repaired copies of its refused lines), pick the losers, clean up.

    Inside, lines are read in file order (:func:`in_file_order`).
    """
    chunk = ScannedChunk(reader, con, completed)
    try:
        with in_file_order(con):
            refused = chunk.scan(completed.path, 0)
            check_counts(completed, chunk.readable, len(refused))
            if not refused:
                chunk.pick_losers()
                yield chunk
                return
            with reader.repaired_lines(con, completed, refused) as (side, repaired):
                # Numbered after the spool file's lines, so no number is shared.
                chunk.scan(side, completed.lines)
                chunk.files.append((side, completed.lines))
                chunk.repaired = repaired
                chunk.pick_losers()
                yield chunk
    finally:
        for table in (SCAN_TABLE, LOSERS_TABLE, PAIRS_TABLE, RAW_TABLE):
            # After a failed statement the transaction is aborted and these
            # fail too; the caller's rollback drops the tables then.
            with contextlib.suppress(Exception):
                con.execute(f"DROP TABLE IF EXISTS {table}")
