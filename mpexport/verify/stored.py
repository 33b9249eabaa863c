"""What an export holds, counted per (day, event): from a DuckDB table or a Parquet lake.

Days are the project's: UTC days, or with a project time zone the zone's
days of each event's true instant (``time``). A table is opened read-only
and refused while a run writes it, as ``mpexport sql`` does; a lake's day
files are each replaced whole by its writer, so they are read as they are,
without its lock. A lake's files are UTC days: with a project time zone
the UTC days around the range are read and their rows counted by project day.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mpexport.errors import UsageError

DayCounts = dict[tuple[dt.date, str], int]


@dataclass
class StoredCounts:
    """Rows per (day, event) in the range read, and the event names seen there."""

    counts: DayCounts = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The event names stored, sorted."""
        return sorted({name for _day, name in self.counts})

    @property
    def first_day(self) -> dt.date | None:
        """The first day with stored events (None when there are none)."""
        return min((day for day, _ in self.counts), default=None)

    @property
    def last_day(self) -> dt.date | None:
        """The last day with stored events (None when there are none)."""
        return max((day for day, _ in self.counts), default=None)


def day_sql(project_timezone: str | None) -> str:
    """SQL for an event's project day from ``time`` (the session's zone is UTC)."""
    if project_timezone is None:
        return "CAST(time AS DATE)"
    zone = project_timezone.replace("'", "''")  # checked as an IANA name already
    return f"CAST(time AT TIME ZONE '{zone}' AS DATE)"


def day_bounds(first: dt.date, last: dt.date,
               project_timezone: str | None) -> tuple[dt.datetime, dt.datetime]:
    """The instants where project day ``first`` begins and day ``last`` ends (exclusive)."""
    zone: dt.tzinfo = dt.UTC if project_timezone is None else ZoneInfo(project_timezone)
    after = last + dt.timedelta(days=1)
    return (dt.datetime(first.year, first.month, first.day, tzinfo=zone),
            dt.datetime(after.year, after.month, after.day, tzinfo=zone))


def _count(con: Any, source: str, first: dt.date | None, last: dt.date | None,
           project_timezone: str | None) -> StoredCounts:
    """Count ``source``'s rows per project day and event (in ``first..last`` if given)."""
    where, params = "WHERE time IS NOT NULL AND event IS NOT NULL", []
    if first is not None and last is not None:
        start, stop = day_bounds(first, last, project_timezone)
        where += " AND time >= ? AND time < ?"
        params = [start, stop]
    rows = con.execute(
        f"SELECT {day_sql(project_timezone)} AS day, event, count(*) FROM {source} "
        f"{where} GROUP BY 1, 2", params).fetchall()
    return StoredCounts({(day, str(event)): int(n) for day, event, n in rows})


def table_counts(db_path: Path, table: str, first: dt.date | None, last: dt.date | None,
                 project_timezone: str | None) -> StoredCounts:
    """The rows of ``table`` in ``db_path`` per day and event; read-only, refused while written.

    Raises :class:`~mpexport.errors.DatabaseLockedError` while a run writes
    the file and :class:`UsageError` for a missing file or table.
    """
    from mpexport.sinks.duckdb.schema import quote_ident
    from mpexport.sql.database import open_read_only

    with open_read_only(db_path) as con:
        found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
                            [table]).fetchone()
        if not found or not found[0]:
            raise UsageError(f"the database {db_path} has no table {table}",
                             "check --table (mpexport sql FILE --tables lists them)")
        return _count(con, quote_ident(table), first, last, project_timezone)


def lake_counts(location: str, first: dt.date | None, last: dt.date | None,
                project_timezone: str | None, environ: Mapping[str, str]) -> StoredCounts:
    """The rows of the lake at ``location`` per project day and event.

    Only the UTC day files that can hold events of ``first..last`` are read
    (every file without a range). ``environ`` is the run's, for an object
    store's credentials and endpoint.
    """
    import duckdb

    from mpexport.dates import day_range
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.parquet import day_of_key
    from mpexport.sinks.lake.store import LocalStore, open_store, parse_location

    if parse_location(location, environ).scheme is None and not Path(location).is_dir():
        raise UsageError(f"no lake at {location}",
                         "check the path; 'mpexport export --parquet DIR' creates one")
    store = open_store(location, environ=environ)
    try:
        held = {day: key for key in store.list_keys("")
                if (day := day_of_key(key)) is not None}
    except OSError as exc:
        raise startup_error(exc, store.url, environ) from None
    if first is not None and last is not None:
        start, stop = day_bounds(first, last, project_timezone)
        wanted = set(day_range(start.astimezone(dt.UTC).date(),
                               (stop - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()))
        held = {day: key for day, key in held.items() if day in wanted}
    if not held:
        return StoredCounts()
    with tempfile.TemporaryDirectory(prefix="mpexport-verify-") as scratch:
        paths = []
        for day, key in sorted(held.items()):
            if isinstance(store, LocalStore):
                paths.append(str(store.path(key)))
                continue
            local = Path(scratch) / f"{day.isoformat()}.parquet"
            try:
                if store.get_file(key, local):
                    paths.append(str(local))
            except OSError as exc:
                raise startup_error(exc, store.url, environ) from None
        if not paths:
            return StoredCounts()
        # Paths are literals: a list parameter does not bind in every DuckDB version.
        listing = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
        with duckdb.connect(":memory:") as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")
            return _count(con, f"read_parquet({listing})", first, last, project_timezone)
