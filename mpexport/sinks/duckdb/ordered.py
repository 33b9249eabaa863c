"""A new chunk's rows into the table in one thread, duplicates dropped by line number.

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
3. the insert reads the file again and leaves out the losers' (number,
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
    latest_first,
    mismatch,
    numbered_sql,
    reader_sql,
    rows_sql,
)

SCAN_TABLE = "_mpexport_scan"
LOSERS_TABLE = "_mpexport_losers"
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
    with in_file_order(con), _sources(reader, con, completed) as sources:
        inserted = 0
        for source in sources.numbered():
            (count,) = con.execute(
                f"INSERT INTO {target} SELECT {_COLUMNS} FROM "
                f"({rows_sql(source, reader.project_timezone, numbered=True)}) "
                f"WHERE (n, {_FINGERPRINT}) NOT IN (SELECT (n, fp) FROM {LOSERS_TABLE})"
            ).fetchone()
            inserted += int(count)
        (losers,) = con.execute(f"SELECT count(*) FROM {LOSERS_TABLE}").fetchone()
        if inserted != sources.readable - losers:
            raise mismatch(completed, f"numbered lines differently on two reads of the file "
                                      f"({inserted} rows kept of {sources.readable}, "
                                      f"{losers} copies left out)")
        return inserted, sources.repaired


class _Sources:
    """The chunk's lines as numbered sources: the spool file, then its repaired lines."""

    def __init__(self, reader: RowReader, con: Any, completed: CompletedChunk) -> None:
        self.reader = reader
        self.con = con
        self.completed = completed
        self.staged = reader.budget.two_step
        self.files: list[tuple[Path, int]] = [(completed.path, 0)]
        self.readable = 0
        self.repaired = 0

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


@contextlib.contextmanager
def _sources(reader: RowReader, con: Any, completed: CompletedChunk) -> Iterator[_Sources]:
    """Scan the chunk (and repaired copies of its refused lines), pick the losers, clean up."""
    sources = _Sources(reader, con, completed)
    try:
        refused = sources.scan(completed.path, 0)
        check_counts(completed, sources.readable, len(refused))
        if not refused:
            sources.pick_losers()
            yield sources
            return
        with reader.repaired_lines(con, completed, refused) as (side, repaired):
            # Numbered after the spool file's lines, so no number is shared.
            sources.scan(side, completed.lines)
            sources.files.append((side, completed.lines))
            sources.repaired = repaired
            sources.pick_losers()
            yield sources
    finally:
        for table in (SCAN_TABLE, LOSERS_TABLE, RAW_TABLE):
            # After a failed statement the transaction is aborted and these
            # fail too; the caller's rollback drops the tables then.
            with contextlib.suppress(Exception):
                con.execute(f"DROP TABLE IF EXISTS {table}")
