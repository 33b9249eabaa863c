"""DuckDB side of the loader: argument checks, table and manifest DDL, manifest reads.

Everything here either runs before DuckDB is opened (the checks, so a bad
argument never touches a file; the path check never fails because another
program has the file open) or takes an open connection from the loader
thread (which is the only thread that ever holds one).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path
from typing import Any

from mpexport.dates import day_range
from mpexport.errors import AccessDeniedError, UsageError
from mpexport.filelock import DENIED, HELD, why_refused
from mpexport.sinks.duckdb.lock import lock_path, open_elsewhere_error

log = logging.getLogger(__name__)

MANIFEST_TABLE = "_mpexport_chunks"
# Days whose Parquet file must be (re)written: recorded in the chunk's own
# transaction so a crash between COMMIT and the file write is repaired on the
# next start instead of leaving the Parquet copy silently stale.
PARQUET_PENDING_TABLE = "_mpexport_parquet_pending"
# Where each sync's range begins (the --from of its first run, moved only by a
# later explicit --from), per table and filters: a first sync cut short must
# leave its range behind, whichever of its chunks committed.
SYNC_TABLE = "_mpexport_sync"
RESERVED_PREFIX = "_mpexport"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# A DuckDB file starts with an 8-byte checksum, then the magic bytes.
_MAGIC_OFFSET = 8
_MAGIC = b"DUCK"

# (name, type) in table order; the type strings are what DuckDB reports back.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event", "VARCHAR"),
    ("time", "TIMESTAMP WITH TIME ZONE"),
    ("distinct_id", "VARCHAR"),
    ("insert_id", "VARCHAR"),
    ("mp_processing_time_ms", "BIGINT"),
    ("properties", "JSON"),
)


def quote_ident(name: str) -> str:
    """Double-quote an identifier (names are validated, this guards keywords like ``time``)."""
    return '"' + name.replace('"', '""') + '"'


def check_table_name(table: str) -> None:
    """Raise UsageError unless ``table`` is a plain identifier outside the reserved prefix."""
    if not _IDENTIFIER.fullmatch(table):
        raise UsageError(
            f"invalid table name {table!r}",
            "use letters, digits and underscores, not starting with a digit, at most 63 chars",
        )
    if table.lower().startswith(RESERVED_PREFIX):
        raise UsageError(
            f"invalid table name {table!r}: names starting with {RESERVED_PREFIX} are reserved",
            "pick another --table name",
        )


def check_db_path(db_path: Path, *, locked: bool = False) -> None:
    """Raise UsageError when ``db_path`` cannot be a DuckDB database we may write.

    Reads at most a few bytes of an existing file and writes nothing, so a
    wrong path (a CSV, a text file) is left exactly as it was. Called before
    the file's lock is taken (``locked=False``) it never fails because
    another program has the file open: the header is then checked under the
    lock (by the sink). With ``locked=True`` such a file raises
    :class:`~mpexport.errors.DatabaseLockedError`.
    """
    directory = db_path.parent if str(db_path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(
            f"the directory of the database does not exist: {directory}",
            "create it first or choose another path",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        # DuckDB writes a .wal file next to the database, so the directory
        # itself must be writable even when the file already exists.
        raise UsageError(
            f"the directory of the database is not writable: {directory}",
            "choose a path in a directory you can write to",
        )
    if not db_path.exists():
        return
    if not db_path.is_file():
        raise UsageError(
            f"the database path is not a regular file: {db_path}",
            "give the path of a DuckDB file (it is created if missing)",
        )
    if not os.access(db_path, os.R_OK | os.W_OK):
        # On Windows this sees the read-only flag only; an ACL is found by
        # the lock's probe (filelock.writer_refused), with the same error.
        raise AccessDeniedError(
            db_path, f"the database file is not readable and writable: {db_path}")
    if not locked and lock_path(db_path).exists():
        # A run may be opening the file right now, and on Windows even our
        # read would make its open (which shares nothing) fail: the header
        # is read under the lock. A path no run is locking has no lock
        # file (a run removes it as it ends), so a wrong path is still
        # refused before one is created.
        return
    try:
        with db_path.open("rb") as handle:
            header = handle.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError as exc:
        refused = why_refused(exc, db_path)
        if refused == DENIED:  # an ACL: os.access above sees only Windows' read-only flag
            raise AccessDeniedError(
                db_path, f"cannot read the database file {db_path}: {exc.strerror}") from exc
        if refused != HELD:
            raise UsageError(f"cannot read the database file {db_path}: {exc.strerror}") from exc
        if locked:
            raise open_elsewhere_error(db_path) from exc
        return
    if header[_MAGIC_OFFSET:] != _MAGIC:
        raise UsageError(
            f"{db_path} exists but is not a DuckDB database",
            "choose a new file name or an existing DuckDB file; the file was not changed",
        )


def create_schema(con: Any, table: str) -> None:
    """Create the events table and the bookkeeping tables if missing; check an existing table."""
    columns = ", ".join(f"{quote_ident(name)} {kind}" for name, kind in EVENT_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} ({columns})")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} (
            table_name VARCHAR NOT NULL,
            from_date DATE NOT NULL,
            to_date DATE NOT NULL,
            filters VARCHAR NOT NULL,
            received BIGINT NOT NULL,
            inserted BIGINT NOT NULL,
            duplicates BIGINT NOT NULL,
            replaced BIGINT NOT NULL,
            updated BIGINT DEFAULT 0,
            bytes BIGINT NOT NULL,
            sha256 VARCHAR,
            run_id VARCHAR,
            time_in_ms BOOLEAN,
            loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )"""
    )
    # Stored events a newer copy replaced. Files written before the column
    # existed gain it; their chunks count 0, as no copy replaced a stored row.
    con.execute(f"ALTER TABLE {MANIFEST_TABLE} ADD COLUMN IF NOT EXISTS updated BIGINT DEFAULT 0")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {PARQUET_PENDING_TABLE} "
        "(table_name VARCHAR NOT NULL, day DATE NOT NULL)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {SYNC_TABLE} (table_name VARCHAR NOT NULL, "
        "filters VARCHAR NOT NULL, from_date DATE NOT NULL, "
        "set_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    check_columns(con, table)


def existing_tables(con: Any) -> set[str]:
    """The tables of the database's main schema (before anything is created)."""
    return {str(name) for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = current_schema()").fetchall()}


def check_columns(con: Any, table: str) -> None:
    """Raise UsageError when ``table`` exists with other columns than mpexport's."""
    found = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    if found and [(str(n), str(t)) for n, t in found] != list(EVENT_COLUMNS):
        wanted = ", ".join(f"{n} {t}" for n, t in EVENT_COLUMNS)
        raise UsageError(
            f"table {table!r} exists with other columns than mpexport's ({wanted})",
            "choose another --table name",
        )


def file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file at ``path`` now, or None when there is none."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def remove_new_database(db_path: Path, identity: tuple[int, int] | None) -> None:
    """Delete a database file this run created and never committed to, with its WAL.

    Only for a file that did not exist when the run took its lock, and only
    while the file at the path is still the one this run opened
    (``identity``; None: the run's open failed on its own file): another
    program's file at that name is never touched. A delete that fails (a
    scanner holding the file on Windows) only warns: an empty file left
    behind is harmless, hiding the run's own outcome is not.
    """
    if identity is not None and file_identity(db_path) != identity:
        return
    for path in (db_path, db_path.with_name(db_path.name + ".wal")):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("warning: could not remove %s, which this run created and stored "
                        "nothing in: %s", path, exc.strerror or exc)


def read_manifest(con: Any, table: str) -> dict[str, set[dt.date]]:
    """Days covered by loaded chunks of ``table``, per filters fingerprint."""
    rows = con.execute(
        f"SELECT filters, from_date, to_date FROM {MANIFEST_TABLE} WHERE table_name = ?",
        [table],
    ).fetchall()
    covered: dict[str, set[dt.date]] = {}
    for filters, first, last in rows:
        days = covered.setdefault(str(filters), set())
        days.update(day_range(first, last))
    return covered


def read_sync_from(con: Any, table: str, filters: str) -> dt.date | None:
    """The recorded first day of the sync range of ``table`` with ``filters``, if any."""
    row = con.execute(
        f"SELECT from_date FROM {SYNC_TABLE} WHERE table_name = ? AND filters = ?",
        [table, filters],
    ).fetchone()
    return None if row is None else row[0]


def write_sync_from(con: Any, table: str, filters: str, day: dt.date) -> None:
    """Record ``day`` as the first day of the sync range of ``table`` with ``filters``."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {SYNC_TABLE} WHERE table_name = ? AND filters = ?",
                    [table, filters])
        con.execute(f"INSERT INTO {SYNC_TABLE} (table_name, filters, from_date) VALUES (?, ?, ?)",
                    [table, filters, day])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read_day_volumes(con: Any, table: str) -> dict[dt.date, int]:
    """Events per day received by earlier loads of ``table`` (any filters), for planning.

    A multi-day chunk's count is spread evenly over its days; the latest
    load of a day wins.
    """
    rows = con.execute(
        f"SELECT from_date, to_date, received FROM {MANIFEST_TABLE} "
        "WHERE table_name = ? ORDER BY loaded_at",
        [table],
    ).fetchall()
    volumes: dict[dt.date, int] = {}
    for first, last, received in rows:
        days = day_range(first, last)
        for day in days:
            volumes[day] = int(received or 0) // len(days)
    return volumes
