"""The storage side of a run: which file, table or lake, taking its lock, opening the sink.

Here the run's options become sinks (:mod:`mpexport.sinks`), which take
plain values: a sink knows no request, no options and no stop guard.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mpexport.errors import UsageError
from mpexport.options import DEFAULT_TABLE, RunOptions

if TYPE_CHECKING:
    from mpexport.environment import Environment
    from mpexport.interrupt import InterruptGuard
    from mpexport.request import ExportRequest
    from mpexport.sinks.duckdb.sink import DuckDBSink
    from mpexport.sinks.lake.sink import LakeSink


@dataclass(frozen=True)
class DatabaseTarget:
    """Where ``--db`` loads: a DuckDB file, its table, and how to treat stored rows."""

    path: Path
    table: str = DEFAULT_TABLE
    replace: bool = False
    refresh: bool = False
    parquet: str | None = None  # a folder or an object-store URL
    memory_limit: str | None = None  # the loader's budget, e.g. "512MB" (see sinks.duckdb.budget)

    @classmethod
    def from_options(cls, options: RunOptions, *, sync: bool = False) -> DatabaseTarget:
        """The target of ``options.db`` (which must be set); a sync re-reads whole days."""
        assert options.db is not None
        return cls(Path(options.db), options.table, replace=options.replace and not sync,
                   refresh=options.refresh or sync, parquet=options.parquet,
                   memory_limit=options.memory_limit)


def open_database(
    target: DatabaseTarget, request: ExportRequest, guard: InterruptGuard | None = None,
    lake_check: Callable[[], None] | None = None,
    environ: Mapping[str, str] | None = None,
    cpus: int | None = None,
) -> DuckDBSink:
    """Validate and open the DuckDB sink (fails before anything is fetched).

    ``guard`` is the run's: the sink's waits for its loader look for its stop
    request. ``lake_check`` raises once the ``--parquet`` lake's lock is lost.
    ``environ`` is the run's variables, which an object-store ``--parquet``
    URL needs (see :func:`mpexport.sinks.lake.store.open_store`); ``cpus``
    its machine's cores, which cap the loader's threads.
    """
    from mpexport.sinks.lake.sink import database_sink
    from mpexport.sinks.lake.store import Store, open_store
    from mpexport.startup import stop_check

    check_replace(request, target.replace)
    parquet: str | Store | None = target.parquet
    if parquet is not None:
        # Staged beside the database, as the sink would (same disk, same permissions).
        parquet = open_store(parquet, staging=target.path.parent, environ=environ)
    return database_sink(
        target.path,
        table=target.table,
        filters=request.filters,
        run_id=uuid.uuid4().hex,
        replace=target.replace,
        # Replacing stored days means fetching them again.
        refresh=target.refresh or target.replace,
        parquet_dir=parquet,
        project_timezone=request.project_timezone,
        memory_limit=target.memory_limit,
        cpus=cpus,
        check_stop=stop_check(guard),
        lake_check=lake_check,
    )


@dataclass(frozen=True)
class StoredDays:
    """The days a database holds for one set of filters (what a sync needs of it)."""

    days: frozenset[dt.date]
    origin: dt.date | None = None

    def covered_days(self) -> set[dt.date]:
        """The days loaded whole (by the manifest)."""
        return set(self.days)

    def sync_from(self) -> dt.date | None:
        """The recorded first day of the sync range."""
        return self.origin

    def record_sync_from(self, day: dt.date) -> None:
        """Refused: these days were read for a dry run, which writes nothing."""
        raise RuntimeError("a dry run records no sync range")


def stored_days(target: DatabaseTarget, request: ExportRequest) -> StoredDays:
    """The days ``target`` holds for the request's filters, read without writing anything.

    For a sync's dry run: a missing file holds nothing and is not created; an
    existing one is opened read-only, without mpexport's lock (no lock file
    is made) and without the sink (which would write pending Parquet days).
    """
    import duckdb

    from mpexport.sinks.duckdb.lock import HELD_WORDS, in_use_error
    from mpexport.sinks.duckdb.schema import (
        MANIFEST_TABLE,
        SYNC_TABLE,
        check_db_path,
        check_table_name,
        read_manifest,
        read_sync_from,
    )

    check_table_name(target.table)
    check_db_path(target.path)
    if not target.path.exists():
        return StoredDays(frozenset())
    try:
        con = duckdb.connect(str(target.path), read_only=True)
    except duckdb.Error as exc:
        if any(words in str(exc).lower() for words in HELD_WORDS):
            # A run writing it is named as the run itself would name it; a dry
            # run does not wait (--wait-lock is for runs that write).
            raise in_use_error(target.path, wait_option=False) from exc
        raise UsageError(f"cannot open the database {target.path}: {exc}") from exc
    fingerprint = request.filters.fingerprint()
    with con:
        tables = {name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND table_name IN (?, ?)", [MANIFEST_TABLE, SYNC_TABLE]).fetchall()}
        covered = read_manifest(con, target.table) if MANIFEST_TABLE in tables else {}
        origin = (read_sync_from(con, target.table, fingerprint)
                  if SYNC_TABLE in tables else None)
    return StoredDays(frozenset(covered.get(fingerprint, ())), origin)


def stored_lake_days(location: str, request: ExportRequest,
                     environ: Mapping[str, str]) -> StoredDays:
    """The days a lake holds for the request's filters, read without its lock or a write.

    For a sync's dry run, as :func:`stored_days` for a file: a missing folder
    is not created, and no lock object is made (a dry run beside a running
    sync, or with read-only credentials, still plans). ``environ``: the run's variables.
    """
    from mpexport.sinks.lake.manifest import read_manifest
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.store import open_store, parse_location

    if parse_location(location, environ).scheme is None and not Path(location).exists():
        return StoredDays(frozenset())
    store = open_store(location, environ=environ)
    try:
        manifest = read_manifest(store)
    except OSError as exc:
        raise startup_error(exc, store.url, environ) from None
    fingerprint = request.filters.fingerprint()
    return StoredDays(frozenset(manifest.covered().get(fingerprint, ())),
                      manifest.sync_from.get(fingerprint))


def check_replace(request: ExportRequest, replace: bool) -> None:
    """Refuse ``--replace`` with filters: it deletes whole days, a filtered fetch refills part."""
    filters = request.filters
    if replace and (filters.events or filters.where or filters.limit is not None):
        # Refetching only some events would lose the rest for good (the
        # manifest says those days are loaded).
        raise UsageError("--replace cannot be combined with --event, --where or --limit",
                         "replace whole days without filters")


@contextmanager
def locked_database(
    target: DatabaseTarget,
    request: ExportRequest,
    wait_lock: float = 0.0,
    guard: InterruptGuard | None = None,
    *,
    environment: Environment,
) -> Iterator[DuckDBSink]:
    """Take the file's lock, open the sink, and abort it on the way out unless closed.

    The locks name ``environment``'s command; its variables reach the
    ``--parquet`` lake's store and lease.

    One writer per file: another run's lock raises
    :class:`~mpexport.errors.DatabaseLockedError` (after ``wait_lock`` seconds).
    A file this run created and never committed to is removed on the way out.
    A stop request of ``guard`` ends the lock wait, and one that came while
    the database opened (which cannot be cut) takes effect right after it.
    The loader thread has ended when the block is left.
    """
    from mpexport.errors import DatabaseLockedError, FileInUseError
    from mpexport.sinks.duckdb.schema import file_identity, remove_new_database
    from mpexport.startup import database_locked, stop_check

    check_stop = stop_check(guard)
    command, environ = environment.command_name, environment.environ
    with database_locked(target.path, wait_lock, guard, command), \
            _lake_lock(target.parquet, wait_lock, check_stop, environ, command) as lake_check:
        # Looked at under the lock: only a file this run creates may be removed again.
        # (lexists: a dangling link is not a file this run may remove.)
        created = not os.path.lexists(target.path)
        try:
            database = open_database(target, request, guard, lake_check, environ,
                                     environment.cpus)
        except (DatabaseLockedError, FileInUseError):
            raise  # another program has the file now: it is not this run's to remove
        except BaseException:
            if created:
                remove_new_database(target.path, None)
            raise
        opened = file_identity(target.path) if created else None
        try:
            if check_stop is not None:
                check_stop()
            yield database
        finally:
            database.abort()  # a no-op once the run closed it
            if created and not database.committed and opened is not None:
                # Nothing of this run was stored: no empty file stays behind.
                remove_new_database(target.path, opened)


@contextmanager
def _lake_lock(location: str | None, wait_lock: float,
               check_stop: Callable[[], None] | None, environ: Mapping[str, str],
               command: str) -> Iterator[Callable[[], None] | None]:
    """Hold the lock of the ``--parquet`` lake beside the database, if there is one.

    The database rewrites whole days of the lake: a run writing the same
    lake alone must not do so at the same time. Yields the lock's check
    (raises once the lease is lost), for every write to the lake.
    """
    if location is None:
        yield None
        return
    from mpexport.sinks.lake.lock import lake_lock, lease_seconds
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.store import open_store

    store = open_store(location, environ=environ)
    with lake_lock(store, wait_lock, check_stop,
                   on_error=lambda exc: startup_error(exc, store.url, environ),
                   lease=lease_seconds(environ), command=command) as held:
        yield held.check


@contextmanager
def open_lake(
    location: str,
    request: ExportRequest,
    *,
    run_id: str | None = None,
    replace: bool = False,
    refresh: bool = False,
    memory_limit: str | None = None,
    guard: InterruptGuard | None = None,
    spool_dir: Path | None = None,
    wait_lock: float = 0.0,
    environment: Environment,
) -> Iterator[LakeSink]:
    """Take the lake's lock, open the lake and its scratch database; undo all on the way out.

    One writer per lake: another run's lock raises
    :class:`~mpexport.errors.DatabaseLockedError` (after ``wait_lock``
    seconds). Fails before anything is fetched when the lake cannot be
    reached or read. The loader thread has ended, the lock is released and
    the scratch folder is gone when the block is left. ``environment`` is as
    for :func:`locked_database`.
    """
    from mpexport.sinks.lake.lock import lake_lock, lease_seconds
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.sink import LakeCopy, LakeSink
    from mpexport.sinks.lake.store import open_store
    from mpexport.spool import spool_folder
    from mpexport.startup import stop_check

    check_replace(request, replace)
    run_id = run_id or uuid.uuid4().hex
    check_stop = stop_check(guard)
    command, environ = environment.command_name, environment.environ
    # A spool folder: locked while the run lives, removed by a later run if
    # this one is killed.
    with spool_folder(spool_dir) as scratch:
        store = open_store(location, staging=scratch, environ=environ)
        # The lock is the run's first request: a missing bucket or wrong
        # credentials are reported as at any other start.
        with lake_lock(store, wait_lock, check_stop,
                       on_error=lambda exc: startup_error(exc, store.url, environ),
                       lease=lease_seconds(environ), command=command) as lock:
            lake = LakeCopy(store, run_id=run_id, filters=request.filters.fingerprint(),
                            project_timezone=request.project_timezone, staging=scratch,
                            lock=lock)
            sink = LakeSink(lake, scratch, filters=request.filters, run_id=run_id,
                            replace=replace, refresh=refresh or replace,
                            project_timezone=request.project_timezone,
                            memory_limit=memory_limit, cpus=environment.cpus,
                            check_stop=check_stop)
            try:
                if check_stop is not None:
                    check_stop()
                yield sink
            finally:
                sink.abort()  # a no-op once the run closed it


def loader_budget(environment: Environment) -> str:
    """The loader's budget a run on ``environment`` takes without ``--memory-limit``, and why.

    ``2135MB, 15 threads: the default for 16 cores and 64.0 GiB``, for
    ``mpexport --version`` (the CLI reaches the sinks only through here).
    """
    from mpexport.sinks.duckdb.budget import choose_budget

    return choose_budget(None, environment).describe()
