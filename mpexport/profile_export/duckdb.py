"""Profiles in DuckDB: pages staged as they arrive, the table changed in one transaction.

Every page is committed to a staging table of the same file together with
its row in the pages table, so a stopped run keeps what it fetched and a
rerun continues the session. When the last page is in, one transaction
either replaces the table's snapshot (a full export: the old rows go, the
session's rows come) or upserts the session's profiles by ``distinct_id``
(a filtered export: ``--where``, ``--cohort``). Readers of the table see the
old snapshot or the new one, never part of one: DuckDB's transactions are
snapshot-isolated, and a run killed before the commit changed nothing.

The upsert is a delete of the profiles the session holds plus an insert,
both in that transaction, rather than ``INSERT ... ON CONFLICT``: ON
CONFLICT needs a PRIMARY KEY, whose index must fit in memory (the loader's
budget bounds memory, an index would not be bounded) and which DuckDB
before 1.2 would not let a transaction delete and insert again.

User profiles go to ``profiles`` (``distinct_id``, ``properties`` as sent,
``last_seen``, ``exported_at``); group profiles to ``group_profiles``, the
same columns after a ``group_key``, one table for every group key (a full
export of one key replaces that key's rows only).

Only the run's main thread touches the connection: one writer, as for events.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpexport.errors import (
    AccessDeniedError,
    EmptySnapshotError,
    LoaderError,
    MpexportError,
    UsageError,
)
from mpexport.filelock import DENIED, HELD, writer_refused
from mpexport.mixpanel.engage_doc import read_profile
from mpexport.profile_export.model import ProfileLoad
from mpexport.profile_export.resume import SessionState
from mpexport.sinks.duckdb.budget import LoaderBudget, spill_directory
from mpexport.sinks.duckdb.lock import open_elsewhere_error
from mpexport.sinks.duckdb.rows import sql_string
from mpexport.sinks.duckdb.schema import check_db_path, check_table_name, quote_ident

STAGE_TABLE = "_mpexport_profile_stage"
PAGES_TABLE = "_mpexport_profile_pages"
SESSIONS_TABLE = "_mpexport_profile_sessions"
# DuckDB's reader allocates buffers of twice its maximum_object_size per
# thread: a page's longest row sets it, never less than this.
MIN_OBJECT_SIZE = 16 * 1024 * 1024

_TZ = "TIMESTAMP WITH TIME ZONE"
USER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("distinct_id", "VARCHAR"), ("properties", "JSON"), ("last_seen", _TZ), ("exported_at", _TZ),
)
GROUP_COLUMNS: tuple[tuple[str, str], ...] = (("group_key", "VARCHAR"), *USER_COLUMNS)


class DuckDBProfiles:
    """The DuckDB sink of a profiles export (see the module docstring).

    ``open()`` connects and checks the table (one of the name with other
    columns is a :class:`~mpexport.errors.UsageError`); the caller holds the
    file's lock. The tables are created with the session's first record
    (:meth:`begin`), so a run that stores nothing leaves the file as it was;
    ``committed`` says whether anything was. ``load`` describes what
    :meth:`finish` did.
    """

    def __init__(self, path: Path, *, table: str, group_key: str | None, filtered: bool,
                 spool_dir: Path, memory_limit: str | None = None,
                 allow_empty: bool = False, cpus: int | None = None) -> None:
        check_table_name(table)
        self.path = Path(path)
        self.table = table
        self.group_key = group_key
        self.filtered = filtered
        self.allow_empty = allow_empty
        self.spool_dir = spool_dir
        self.budget = LoaderBudget.from_text(memory_limit, cpus)  # cpus: the run's machine
        # One staged session per table and group key.
        self.stage = json.dumps([table, group_key])
        self.load = ProfileLoad(table, "upsert" if filtered else "replace")
        self.other_session = False  # an unfinished export with other options was found
        self._con: Any = None
        self._read_only = False
        self.committed = False

    # -- connection ---------------------------------------------------------------

    def open(self) -> None:
        """Connect (the lock is held by now) and check the table; nothing is created yet."""
        import duckdb

        check_db_path(self.path, locked=True)
        try:
            con = duckdb.connect(str(self.path), config=self.budget.duckdb_config(self.path))
        except (duckdb.IOException, OSError) as exc:
            refused = writer_refused(self.path)
            if refused == DENIED:  # a read-only file: no wait helps (exit 2)
                raise AccessDeniedError(self.path) from exc
            if refused == HELD:
                raise open_elsewhere_error(self.path) from exc
            raise UsageError(f"cannot open the database {self.path}: {exc}") from exc
        except duckdb.Error as exc:
            raise UsageError(f"cannot open the database {self.path}: {exc}") from exc
        self._con = con
        try:
            con.execute("SET TimeZone = 'UTC'")  # last_seen is UTC without a zone
            self._check_columns()
        except BaseException:
            self.close()
            raise

    def open_read_only(self) -> bool:
        """Connect read-only (a dry run): create, change and lock nothing.

        Returns False when the file cannot be read now (another program
        writes it: DuckDB refuses a second process then); the dry run then
        plans as if nothing were stored, which is only an estimate anyway.
        """
        import duckdb

        try:
            self._con = duckdb.connect(str(self.path), read_only=True)
        except (duckdb.Error, OSError):
            return False
        self._read_only = True
        return True

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        con, self._con = self._con, None
        if con is not None:
            con.close()
            if not self._read_only:  # a read-only connection spills nowhere
                with contextlib.suppress(OSError):
                    spill_directory(self.path).rmdir()

    @property
    def _columns(self) -> tuple[tuple[str, str], ...]:
        return GROUP_COLUMNS if self.group_key is not None else USER_COLUMNS

    def _create_tables(self, con: Any) -> None:
        """Create the table and the staging tables if missing (in the caller's transaction)."""
        columns = self._columns
        body = ", ".join(f"{quote_ident(n)} {t}" for n, t in columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(self.table)} ({body})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {STAGE_TABLE} (stage VARCHAR NOT NULL, "
                    "page INTEGER NOT NULL, distinct_id VARCHAR, properties JSON, "
                    f"last_seen {_TZ})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {PAGES_TABLE} (stage VARCHAR NOT NULL, "
                    "page INTEGER NOT NULL, profiles INTEGER NOT NULL)")
        con.execute(f"CREATE TABLE IF NOT EXISTS {SESSIONS_TABLE} (stage VARCHAR NOT NULL, "
                    "fingerprint VARCHAR NOT NULL, session_id VARCHAR NOT NULL, "
                    "total BIGINT NOT NULL, page_size INTEGER NOT NULL, started DOUBLE NOT NULL)")

    def _check_columns(self) -> None:
        """Refuse a table of the name with other columns (before anything is fetched)."""
        columns = self._columns
        found = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            [self.table],
        ).fetchall()
        if found and [(str(n), str(t)) for n, t in found] != list(columns):
            wanted = ", ".join(f"{n} {t}" for n, t in columns)
            raise UsageError(
                f"table {self.table!r} exists with other columns than mpexport's profiles "
                f"({wanted})", "choose another --table name",
            )

    def _transaction(self, work: Callable[[Any], None],
                     before_commit: Callable[[], None] | None = None) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            work(con)
            if before_commit is not None:
                before_commit()
            con.execute("COMMIT")
            self.committed = True
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise

    # -- the session ----------------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        # A dry run's read-only connection, or a session not begun yet (begin() creates them).
        row = self._con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ?", [name]).fetchone()
        return bool(row and row[0])

    def stored_rows(self) -> int:
        """Rows the table holds now (of this group key), for a dry run's estimate."""
        if not self._has_table(self.table):
            return 0
        where, args = self._group_filter()
        row = self._con.execute(f"SELECT count(*) FROM {quote_ident(self.table)} {where}",
                                args).fetchone()
        return int(row[0])

    def resume(self, key: str) -> tuple[SessionState | None, set[int]]:
        """The staged session of this table if options with fingerprint ``key`` opened it."""
        if not self._has_table(SESSIONS_TABLE) or not self._has_table(PAGES_TABLE):
            return None, set()
        row = self._con.execute(
            f"SELECT session_id, total, page_size, fingerprint, started FROM {SESSIONS_TABLE} "
            "WHERE stage = ?", [self.stage]).fetchone()
        if row is None:
            return None, set()
        state = SessionState(str(row[0]), int(row[1]), int(row[2]), str(row[3]), float(row[4]))
        if state.fingerprint != key:
            self.other_session = True
            return None, set()
        pages = self._con.execute(f"SELECT page FROM {PAGES_TABLE} WHERE stage = ?",
                                  [self.stage]).fetchall()
        return state, {int(p) for (p,) in pages if int(p) < state.pages}

    def _clear(self, con: Any) -> None:
        for table in (STAGE_TABLE, PAGES_TABLE, SESSIONS_TABLE):
            con.execute(f"DELETE FROM {table} WHERE stage = ?", [self.stage])

    def begin(self, state: SessionState) -> None:
        """A new session: drop whatever was staged before, record this one."""
        def work(con: Any) -> None:
            self._create_tables(con)
            self._clear(con)
            con.execute(f"INSERT INTO {SESSIONS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                        [self.stage, state.fingerprint, state.session_id, state.total,
                         state.page_size, state.started])
        self._transaction(work)

    def discard(self) -> None:
        """The session expired: drop its staged pages."""
        self._transaction(self._clear)

    def store(self, page: int, path: Path, profiles: int) -> None:
        """Stage a verified page (a spool file of profile lines) with its pages row."""
        rows = path.with_name(path.name + ".rows")
        try:
            repaired, longest = _write_rows(path, rows)
            object_size = max(MIN_OBJECT_SIZE, longest + 1)

            def work(con: Any) -> None:
                con.execute(f"DELETE FROM {STAGE_TABLE} WHERE stage = ? AND page = ?",
                            [self.stage, page])
                con.execute(f"DELETE FROM {PAGES_TABLE} WHERE stage = ? AND page = ?",
                            [self.stage, page])
                if profiles:
                    con.execute(
                        f"INSERT INTO {STAGE_TABLE} SELECT ?, ?, d, p::JSON, "
                        f"TRY_CAST(s AS {_TZ}) FROM read_json({sql_string(str(rows))}, "
                        "format = 'newline_delimited', columns = {'d': 'VARCHAR', "
                        f"'p': 'VARCHAR', 's': 'VARCHAR'}}, maximum_object_size = "
                        f"{object_size})", [self.stage, page])
                con.execute(f"INSERT INTO {PAGES_TABLE} VALUES (?, ?, ?)",
                            [self.stage, page, profiles])

            self._transaction(work)
        except (UsageError, LoaderError):
            raise
        except Exception as exc:
            raise LoaderError(
                f"staging page {page} in {self.path} failed: {exc}".splitlines()[0],
                "the pages staged before it are kept; rerun the same command to resume",
            ) from exc
        finally:
            path.unlink(missing_ok=True)
            rows.unlink(missing_ok=True)
        self.load.repaired += repaired

    def _group_filter(self) -> tuple[str, list[Any]]:
        if self.group_key is None:
            return "", []
        return "WHERE group_key = ?", [self.group_key]

    def _refuse_empty(self, con: Any) -> None:
        """Raise :class:`EmptySnapshotError` when the snapshot to replace holds profiles.

        Runs in :meth:`finish`'s transaction before anything is deleted, so
        the table and the staged session stay as they were: the same
        command with ``allow_empty`` then finishes the session without
        fetching it again.
        """
        where, group = self._group_filter()
        (held,) = con.execute(f"SELECT count(*) FROM {quote_ident(self.table)} {where}",
                              group).fetchone()
        if not held:
            return  # nothing to lose: a new or already empty table
        kind = f"{self.group_key} " if self.group_key is not None else ""
        raise EmptySnapshotError(
            f"Mixpanel's session listed 0 profiles; replacing the {held} {kind}profiles in "
            f"{self.path} table {self.table} with none was refused and the table is unchanged",
            "if the project really has no profiles now, run again with --allow-empty, or "
            "allow_empty=True in the library",
        )

    def finish(self, state: SessionState,
               before_commit: Callable[[], None] | None = None) -> int:
        """Replace the snapshot, or upsert the profiles, in one transaction; return the rows.

        ``before_commit`` runs inside that transaction just before its COMMIT
        (tests look at the table from another connection there).
        """
        table = quote_ident(self.table)
        where, group = self._group_filter()
        group_column = "?, " if self.group_key is not None else ""
        load = self.load

        def work(con: Any) -> None:
            listed = con.execute(f"SELECT sum(profiles) FROM {PAGES_TABLE} WHERE stage = ?",
                                 [self.stage]).fetchone()
            if not self.filtered and not self.allow_empty and not (listed and listed[0]):
                self._refuse_empty(con)
            if self.filtered:
                scope = f"{where} AND" if where else "WHERE"
                removed = con.execute(
                    f"DELETE FROM {table} {scope} distinct_id IN (SELECT distinct_id FROM "
                    f"{STAGE_TABLE} WHERE stage = ?)", [*group, self.stage]).fetchone()
            else:
                removed = con.execute(f"DELETE FROM {table} {where}", group).fetchone()
            load.replaced = int(removed[0]) if removed else 0
            # A profile listed twice is kept once, where it is first listed:
            # the earliest page here, the first line within a page when the
            # page was staged (_write_rows). NDJSON output keeps the same one.
            inserted = con.execute(
                f"INSERT INTO {table} SELECT {group_column}distinct_id, properties, last_seen, "
                f"to_timestamp(?) FROM {STAGE_TABLE} WHERE stage = ? QUALIFY row_number() "
                "OVER (PARTITION BY distinct_id ORDER BY page) = 1",
                [*group, state.started, self.stage]).fetchone()
            load.rows = int(inserted[0]) if inserted else 0
            # Counted from the pages as listed: a page's own repeats never reach the stage.
            load.duplicates = max(0, int(listed[0] or 0) - load.rows) if listed else 0
            self._clear(con)

        try:
            self._transaction(work, before_commit)
        except MpexportError:
            raise
        except Exception as exc:
            raise LoaderError(
                f"writing the profiles into {self.path} table {self.table} failed: "
                f"{exc}".splitlines()[0],
                "the table is unchanged and the pages stay staged; rerun the same command",
            ) from exc
        return load.rows


def _write_rows(page: Path, rows: Path) -> tuple[int, int]:
    """Turn a page's profile lines into the staging reader's rows.

    ``p`` is the ``$properties`` text as sent, carried as a JSON string so
    that DuckDB stores it unchanged (its JSON reader would re-format it).
    A profile the page lists again is left out (the first line is kept).
    Returns the repaired count and the longest row's length.
    """
    repaired = longest = 0
    seen: set[str] = set()  # one page's ids: at most a page size of them
    with page.open("rb") as source, rows.open("wb") as target:
        for line in source:
            record = read_profile(line)
            if record.distinct_id in seen:
                continue  # the page listed it already: its first line is kept
            seen.add(record.distinct_id)
            repaired += record.repaired
            row = json.dumps({"d": record.distinct_id, "p": record.properties,
                              "s": record.last_seen}).encode("ascii") + b"\n"
            longest = max(longest, len(row))
            target.write(row)
    return repaired, longest
