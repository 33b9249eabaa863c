"""Reading a DuckDB file for ``mpexport sql``: read-only, and never while a run writes it.

The file is never created and never changed: DuckDB's read-only mode refuses
every statement that would write it. A run that is writing the file holds
its lock file (``FILE.lock``, see :mod:`mpexport.sinks.duckdb.lock`), which
names the run; such a file is refused with
:class:`~mpexport.errors.DatabaseLockedError` (exit 4), as a second export
would be.

While a query runs, a run that starts writing the file finds it open in
another program (exit 4, or it waits with ``--wait-lock``).

Results are streamed: rows come in batches of :data:`BATCH_ROWS` from
DuckDB's streaming result, so a query over ten million rows never holds
them all in this process.

Every connection is a sandbox (:func:`sandboxed`): the query reads its input
and nothing else. A wrapper that passes user text as the query, or a view
inside a file someone sent, could otherwise write or read any file the user
can (``COPY ... TO``, ``read_text``, ``ATTACH``) and make DuckDB download
extensions. So external access is off (only a private folder is allowed:
DuckDB's spill files, and the copies of a lake's or an NDJSON file's data
that :mod:`mpexport.sql.sources` attached before), extensions are neither
installed nor loaded on demand, and the configuration is locked, so no
statement can undo any of it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpexport.errors import UsageError
from mpexport.filelock import in_use_elsewhere
from mpexport.sinks.duckdb.lock import in_use_error, writer_holding, written_by
from mpexport.sinks.duckdb.rows import sql_string
from mpexport.sinks.duckdb.schema import RESERVED_PREFIX, quote_ident
from mpexport.sql.formats import Column, Nested, Shape

BATCH_ROWS = 2048
# How DuckDB words "another process has this file open" (POSIX, Windows).
_HELD_WORDS = ("could not set lock", "conflicting lock", "being used by another process")
_NUMERIC = frozenset({
    "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
    "uinteger", "ubigint", "uhugeint", "float", "double", "decimal",
})
_DAY_TYPES = frozenset({
    "TIMESTAMP WITH TIME ZONE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
    "DATE",
})
Batches = Iterator[list[tuple[Any, ...]]]
Config = dict[str, str | bool | int | float | list[str]]  # what duckdb.connect takes
# Set when the connection opens, before the configuration is locked. Without
# them a query naming an extension's function or file type (httpfs,
# spatial, ...) would download and load it.
SANDBOX: Config = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}
# DuckDB's words for a statement the sandbox refused (see _query_error).
_LOCKED_WORDS = "the configuration has been locked"


@dataclass(frozen=True)
class Result:
    """A query's columns and its rows, batch by batch (read them while the file is open)."""

    columns: list[Column]
    batches: Batches


def complaint(error: BaseException) -> str:
    """DuckDB's message on one line, without its drawing of the query (``LINE 1: ...``)."""
    text = str(error).split("\n\nLINE ", 1)[0]
    return " ".join(text.split())


def _check_file(db_path: Path) -> None:
    # Checked before DuckDB sees the path: its read-only open of a missing
    # file fails too, but a message naming the path and the fix is clearer.
    if not db_path.exists():
        raise UsageError(f"no database file at {db_path}",
                         "check the path; 'mpexport export --db FILE' creates one")
    if not db_path.is_file():
        raise UsageError(f"the database path is not a regular file: {db_path}",
                         "give the path of a DuckDB file")


@contextmanager
def private_folder() -> Iterator[Path]:
    """A new folder in the system's temp folder, for this process only; removed after the block.

    DuckDB spills there, and a lake's or an NDJSON file's data is copied
    there: the one place the sandbox lets a query touch, so whatever a query
    may write there is gone at the end.
    """
    folder = Path(tempfile.mkdtemp(prefix="mpexport-sql-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sandboxed(db_path: Path, private: Path, *, data: Path | None = None) -> Any:
    """Connect to ``db_path`` read-only, reading nothing but it (and ``data``), then lock.

    ``private`` is a :func:`private_folder`: DuckDB's spill folder goes in it
    (by default a database spills beside its file, ``FILE.tmp``, and the
    sandbox allows whatever is there). ``data``, a folder in ``private``, is
    the one folder a query may read besides the database: the copies of a
    lake's or an NDJSON file's data its views read.

    Times of ``TIMESTAMP WITH TIME ZONE`` columns come back in UTC, whatever
    the machine's time zone, as mpexport stores and names days in UTC.
    DuckDB prints no progress bar. Raises :class:`duckdb.Error` when DuckDB
    cannot open the file.
    """
    import duckdb

    # External access is turned off right after the open (with it off at the
    # open, DuckDB refuses the temp folder); opening runs nothing the file holds.
    config: Config = {**SANDBOX, "temp_directory": str(private / "spill")}
    con = duckdb.connect(str(db_path), read_only=True, config=config)
    try:
        if data is not None:
            # Only settable once DuckDB runs, and only while access is on.
            con.execute(f"SET allowed_directories = [{sql_string(str(data) + os.sep)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET TimeZone = 'UTC'")
        # DuckDB draws a progress bar for queries that run over 2 s, on
        # stdout: in the middle of the result.
        con.execute("SET enable_progress_bar = false")
        # Last: from here on no statement changes a setting, not even these.
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def open_read_only(db_path: Path) -> Iterator[Any]:
    """Open the DuckDB file ``db_path`` read-only for the block, sandboxed (:func:`sandboxed`).

    Refuses a file a run is writing, or another program has open (exit 4).
    """
    import duckdb

    _check_file(db_path)
    with private_folder() as private:
        try:
            con = sandboxed(db_path, private)
        except duckdb.Error as exc:
            text = str(exc).lower()
            # Probed only now that DuckDB failed: this process has no connection
            # to the file, so the probe cannot drop a lock of ours (POSIX).
            if isinstance(exc, duckdb.IOException) and (
                any(words in text for words in _HELD_WORDS) or in_use_elsewhere(db_path)
            ):
                # The same words as export's and sync's for the same holder.
                raise in_use_error(db_path, wait_option=False) from exc
            hint = "give the path of a DuckDB file" if "not a valid DuckDB" in str(exc) else None
            raise UsageError(f"cannot open the database {db_path}: {complaint(exc)}",
                             hint) from exc
        try:
            # Probed once the file is open: a run starting now finds the file in
            # use anyway, so the probe's brief hold of the lock costs it nothing.
            # A run that took the lock but has not opened the file yet is in use
            # too: our open would make its open fail.
            holder = writer_holding(db_path)
            if holder:
                raise written_by(db_path, holder, wait_option=False)
            yield con
        finally:
            con.close()


def _shape(kind: Any) -> Shape:
    """Where JSON text sits in values of a DuckDB type (so formats embed it, not quote it)."""
    if str(kind) == "JSON":
        return True
    if kind.id not in ("list", "array", "struct", "map"):
        return False
    children = kind.children
    if kind.id == "struct":
        fields = tuple((str(name), _shape(child)) for name, child in children)
        return Nested(fields=fields) if any(shape for _, shape in fields) else False
    # A LIST's or ARRAY's items, a MAP's values: the last child that is a type.
    child = children[1][1] if kind.id == "map" else children[0][1]
    items = _shape(child)
    return Nested(items=items) if items else False


def _columns(description: list[tuple[Any, ...]] | None) -> list[Column]:
    columns = []
    for entry in description or ():
        name, kind = str(entry[0]), entry[1]
        columns.append(Column(name, str(kind), numeric=kind.id in _NUMERIC, json=_shape(kind)))
    return columns


def _stream(cursor: Any) -> Batches:
    import duckdb

    while True:
        try:
            rows = cursor.fetchmany(BATCH_ROWS)
        except duckdb.Error as exc:
            raise _query_error(exc) from exc
        if not rows:
            return
        yield rows


REFUSED_HINT = ("mpexport sql reads only its input: no other file, no extension, no setting; "
                "--output FILE writes the result")


def _query_error(exc: BaseException) -> BaseException:
    import duckdb

    if isinstance(exc, duckdb.InterruptException):
        return KeyboardInterrupt()  # Ctrl-C reached DuckDB first: exit 130, as anywhere
    text = complaint(exc)
    if isinstance(exc, duckdb.PermissionException) or _LOCKED_WORDS in text:
        return UsageError(f"the query was refused: {text}", REFUSED_HINT)
    if "read-only mode" in text:
        return UsageError(f"the query would change the database: {text}",
                          "mpexport sql opens the file read-only; load data with export or sync")
    hint = None
    if isinstance(exc, duckdb.CatalogException):
        hint = "'mpexport sql FILE --tables' lists the file's tables"
    return UsageError(f"the query failed: {text}", hint)


def run_query(con: Any, query: str) -> Result:
    """Run ``query`` (the last statement's rows are the result) and stream its rows."""
    import duckdb

    if not query.strip():
        raise UsageError("the query is empty", 'give one, e.g. "SELECT count(*) FROM events"')
    try:
        cursor = con.execute(query)
    except duckdb.Error as exc:
        raise _query_error(exc) from exc
    if cursor is None or cursor.description is None:
        return Result([], iter(()))  # only comments: nothing ran
    return Result(_columns(cursor.description), _stream(cursor))


def _utc_day(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        # A TIMESTAMP without a zone is taken as UTC, as mpexport writes times.
        return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    return value if isinstance(value, dt.date) else None


TABLE_COLUMNS = [
    Column("table", "VARCHAR"),
    Column("rows", "BIGINT", numeric=True),
    Column("first_day", "DATE"),
    Column("last_day", "DATE"),
]


def list_tables(con: Any, views: Sequence[str] = ()) -> Result:
    """The file's tables (not mpexport's bookkeeping): rows, and the UTC days of ``time``.

    ``first_day`` and ``last_day`` are those of the table's ``time`` column
    (a timestamp or date); NULL without one, or when the table is empty.
    ``views`` are listed after the tables, the same way: the ``events`` view
    mpexport made over a lake or an NDJSON file. Other views are not listed
    (nor read): a view in a file is a query someone else wrote.
    """
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT internal AND NOT temporary "
        "ORDER BY schema_name = 'main' DESC, schema_name, table_name"
    ).fetchall()
    tables += [("main", view) for view in views]
    timed = {
        (str(schema), str(table)): str(column)
        for schema, table, column, kind in con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND lower(column_name) = 'time'"
        ).fetchall()
        if str(kind) in _DAY_TYPES
    }
    rows: list[tuple[Any, ...]] = []
    for schema, table in tables:
        if str(table).lower().startswith(RESERVED_PREFIX):
            continue
        name = table if schema == "main" else f"{schema}.{table}"
        source = f"{quote_ident(schema)}.{quote_ident(table)}"
        column = timed.get((str(schema), str(table)))
        if column is None:
            (count,) = con.execute(f"SELECT count(*) FROM {source}").fetchone()
            rows.append((name, count, None, None))
            continue
        time_ = quote_ident(column)
        count, first, last = con.execute(
            f"SELECT count(*), min({time_}), max({time_}) FROM {source}"
        ).fetchone()
        rows.append((name, count, _utc_day(first), _utc_day(last)))
    return Result(list(TABLE_COLUMNS), iter([rows] if rows else []))
