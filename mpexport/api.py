"""The library: everything the CLI does, as plain function calls."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport.dates import check_timezone, day_range, parse_range, today_in
from mpexport.errors import Interrupted, UsageError
from mpexport.events import ProgressCallback, WaitingForBudget
from mpexport.interrupt import InterruptGuard
from mpexport.mixpanel.credentials import Credentials, credentials_from_env
from mpexport.mixpanel.endpoints import Endpoint, query_params, resolve_endpoint, validate_filters
from mpexport.mixpanel.fetch import FetchSettings, Query
from mpexport.model import Chunk, ExportResult, QueryFilters
from mpexport.pipeline import Pipeline
from mpexport.plan import merge_ranges, plan_adaptive, plan_chunks, query_budget
from mpexport.sinks.ndjson import NdjsonSink

if TYPE_CHECKING:
    from mpexport.pacing.limiter import RateLimiter
    from mpexport.sinks.duckdb.sink import DuckDBSink, LoadStats

DEFAULT_WORKERS = 10
MAX_WORKERS = 100  # Mixpanel refuses more than 100 concurrent queries per project
MAX_RETRIES = 100
DEFAULT_QPS_LIMIT = 3.0  # Mixpanel's limits per project
DEFAULT_HOURLY_LIMIT = 60


@dataclass(frozen=True)
class ExportRequest:
    """A validated export: the range, the filters, where to send queries, how fast."""

    from_date: dt.date
    to_date: dt.date
    endpoint: Endpoint
    filters: QueryFilters = field(default_factory=QueryFilters)
    workers: int = DEFAULT_WORKERS
    chunk_days: int | None = None  # None: the adaptive plan
    settings: FetchSettings = field(default_factory=FetchSettings)
    qps_limit: float = DEFAULT_QPS_LIMIT
    hourly_limit: int = DEFAULT_HOURLY_LIMIT
    project_timezone: str | None = None
    # Things the user should know about how the request was read (e.g. a
    # future --to clamped to today); the CLI prints them on stderr.
    notes: tuple[str, ...] = ()
    # Plan chunks never span these days' ends (sync keeps re-read days apart
    # from new ones, so late events can be counted).
    boundaries: tuple[dt.date, ...] = ()
    # Days a refreshing run still need not fetch (a sync: loaded days older
    # than its lookback window, between a gap and that window).
    skip_days: frozenset[dt.date] = frozenset()

    def plan(
        self,
        *,
        used_this_hour: int = 0,
        day_volumes: Mapping[dt.date, int] | None = None,
        skip_days: Collection[dt.date] = (),
    ) -> list[Chunk]:
        """The chunks this export fetches, in date order.

        With ``--chunk-days`` the grid is fixed (a rerun meets the same
        chunks in the manifest). Otherwise the days not in ``skip_days`` are
        planned to fit the hourly budget left (``used_this_hour`` starts
        spent already), balanced across workers by ``day_volumes``.
        """
        chunks: list[Chunk] = []
        if self.chunk_days is not None:
            for start, end in _cut_runs([(self.from_date, self.to_date)], self.boundaries):
                chunks += plan_chunks(start, end, self.chunk_days)
            return [dataclasses.replace(c, index=i) for i, c in enumerate(chunks)]
        runs = _cut_runs(_missing_runs(self.from_date, self.to_date, skip_days),
                         self.boundaries)
        total_days = sum((b - a).days + 1 for a, b in runs)
        budget = query_budget(self.hourly_limit, used_this_hour)
        if budget < min(self.workers, total_days):
            # The hour is nearly spent: shrinking the plan to fit would mean
            # a few huge queries (slow and fragile at Mixpanel). Plan as for a
            # fresh hour and let the limiter wait for the budget instead.
            budget = query_budget(self.hourly_limit)
        for start, end in runs:
            share = ((end - start).days + 1) / total_days
            chunks += plan_adaptive(
                start, end,
                workers=max(1, round(self.workers * share)),
                max_queries=max(1, int(budget * share)),
                day_volumes=day_volumes,
            )
        return [dataclasses.replace(c, index=i) for i, c in enumerate(chunks)]

    def query(self, credentials: Credentials) -> Query:
        """The request description workers use."""
        return Query(self.endpoint, credentials, self.filters)


def remaining_ranges(
    planned: Sequence[Chunk], written: Sequence[Chunk]
) -> list[tuple[dt.date, dt.date]]:
    """The planned days not written, as merged ranges (for a resume command).

    Counted by day, not by chunk: a chunk split mid-run was written as halves.
    """
    done = {day for c in written for day in day_range(c.from_date, c.to_date)}
    missing = [Chunk(0, day, day) for c in planned
               for day in day_range(c.from_date, c.to_date) if day not in done]
    return merge_ranges(missing)


def _missing_runs(
    start: dt.date, end: dt.date, skip_days: Collection[dt.date]
) -> list[tuple[dt.date, dt.date]]:
    missing = [Chunk(0, d, d) for d in day_range(start, end) if d not in skip_days]
    return merge_ranges(missing)


def _cut_runs(
    runs: list[tuple[dt.date, dt.date]], boundaries: Collection[dt.date]
) -> list[tuple[dt.date, dt.date]]:
    cut: list[tuple[dt.date, dt.date]] = []
    for start, end in runs:
        for boundary in sorted(boundaries):
            if start <= boundary < end:
                cut.append((start, boundary))
                start = boundary + dt.timedelta(days=1)
        cut.append((start, end))
    return cut


def _as_date_text(value: dt.date | str) -> str:
    return value.isoformat() if isinstance(value, dt.date) else value


def build_request(
    from_date: dt.date | str,
    to_date: dt.date | str,
    *,
    workers: int = DEFAULT_WORKERS,
    chunk_days: int | None = None,
    events: Sequence[str] = (),
    where: str | None = None,
    limit: int | None = None,
    region: str = "us",
    api_url: str | None = None,
    today: dt.date | None = None,
    settings: FetchSettings | None = None,
    retries: int | None = None,
    qps_limit: float = DEFAULT_QPS_LIMIT,
    hourly_limit: int = DEFAULT_HOURLY_LIMIT,
    project_timezone: str | None = None,
    boundaries: Sequence[dt.date] = (),
) -> ExportRequest:
    """Validate the arguments of an export; raise :class:`UsageError` if wrong.

    Dates are read in ``project_timezone`` (UTC by default); a ``to_date``
    after today is clamped to today, with a note, since Mixpanel refuses it.
    """
    if project_timezone is not None:
        check_timezone(project_timezone)
    today = today or today_in(project_timezone)
    start, end = parse_range(_as_date_text(from_date), _as_date_text(to_date), today=today)
    notes: list[str] = []
    if start > today:
        raise UsageError(f"--from {start.isoformat()} is in the future (today is {today})")
    if end > today:
        notes.append(f"--to {end.isoformat()} is in the future: exporting up to today, "
                     f"{today.isoformat()}")
        end = today
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(
            f"--workers must be between 1 and {MAX_WORKERS}, not {workers}",
            "Mixpanel allows at most 100 concurrent queries per project",
        )
    if chunk_days is not None and chunk_days < 1:
        raise UsageError(f"--chunk-days must be at least 1, not {chunk_days}")
    if not qps_limit > 0:
        raise UsageError(f"--qps-limit must be above 0, not {qps_limit}")
    if hourly_limit < 1:
        raise UsageError(f"--hourly-limit must be at least 1, not {hourly_limit}")
    filters = QueryFilters(tuple(events), where or None, limit)
    validate_filters(filters)
    settings = settings or FetchSettings()
    if retries is not None:
        if not 0 <= retries <= MAX_RETRIES:
            raise UsageError(f"--retries must be between 0 and {MAX_RETRIES}, not {retries}")
        settings = dataclasses.replace(settings, max_attempts=retries + 1)
    return ExportRequest(
        from_date=start,
        to_date=end,
        endpoint=resolve_endpoint(region, api_url),
        filters=filters,
        workers=workers,
        chunk_days=chunk_days,
        settings=settings,
        qps_limit=qps_limit,
        hourly_limit=hourly_limit,
        project_timezone=project_timezone,
        notes=tuple(notes),
        boundaries=tuple(boundaries),
    )


def sync_range(
    covered: Collection[dt.date],
    from_date: dt.date | None,
    to_date: dt.date,
    lookback: int,
) -> tuple[dt.date, dt.date, dt.date | None]:
    """Where an incremental sync starts and ends, and the last day already complete.

    The first sync needs ``from_date``. Later ones start ``lookback`` days
    before the end of the unbroken run of loaded days that begins at the
    first loaded day (so a day that failed earlier is fetched again too),
    but never before that first day: it is where the table's range begins
    (the ``--from`` of its first sync), and a short run of loaded days (a
    young file, a first run cut short) must not pull in days nobody asked
    for. An explicit ``from_date`` wins and moves that first day on purpose.
    Raises :class:`UsageError` when ``to_date`` ends before the first day
    and no ``from_date`` says to go there.
    """
    if lookback < 0:
        raise UsageError(f"--lookback must be 0 or more days, not {lookback}")
    if not covered:
        if from_date is None:
            raise UsageError(
                "this database has no synced days yet, so the first sync needs --from",
                "e.g. --from 2024-01-01",
            )
        return from_date, to_date, None
    days = set(covered)
    first = min(days)
    complete = first
    while complete + dt.timedelta(days=1) in days:
        complete += dt.timedelta(days=1)
    if from_date is not None:
        return min(from_date, to_date), to_date, complete
    if to_date < first:
        raise UsageError(
            f"--to {to_date.isoformat()} is before the first synced day of this table, "
            f"{first.isoformat()}",
            "pass --from as well to sync earlier days",
        )
    start = max(first, complete - dt.timedelta(days=lookback))
    return min(start, to_date), to_date, complete


def new_limiter(
    request: ExportRequest, credentials: Credentials | None, *, persist: bool = True
) -> RateLimiter:
    """The run's shared limiter; with ``persist`` it shares the hour with earlier runs."""
    from mpexport.pacing.limiter import HourlyState, RateLimiter

    state = None
    if persist:
        project = credentials.project_id if credentials is not None else None
        state = HourlyState.for_project(request.endpoint.base_url, project)
    return RateLimiter(
        qps=request.qps_limit,
        hourly=request.hourly_limit,
        concurrency=min(request.workers, MAX_WORKERS),
        state=state,
    )


def describe_plan(request: ExportRequest, credentials: Credentials | None) -> list[str]:
    """Lines describing the plan for ``--dry-run``: one per chunk, then totals and waits."""
    from mpexport.pacing.limiter import HourlyState, budget_wait

    project = credentials.project_id if credentials is not None else None
    used = HourlyState.for_project(request.endpoint.base_url, project).load()
    chunks = request.plan(used_this_hour=len(used))
    lines = []
    for chunk in chunks:
        params = query_params(
            chunk, request.filters, credentials or Credentials(api_secret="-")
        )
        query = "&".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"chunk {chunk.index + 1}/{len(chunks)}  {chunk.label()}  "
                     f"GET {request.endpoint.export_url}?{query}")
    workers = min(request.workers, len(chunks))
    wait = budget_wait(len(chunks), request.qps_limit, request.hourly_limit, used, time.time())
    lines.append(f"{len(chunks)} chunks, {len(chunks)} queries, {workers} workers, "
                 f"{request.from_date.isoformat()}..{request.to_date.isoformat()}")
    lines.append(f"rate limits {request.qps_limit:g}/s and {request.hourly_limit}/hour; "
                 f"{len(used)} queries used in the last hour; the last query can start "
                 f"in {format_duration(wait)} at the earliest (ETA: that plus its download)")
    return lines


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; for messages about waits."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class DatabaseTarget:
    """Where ``--db`` loads: a DuckDB file, its table, and how to treat stored rows."""

    path: Path
    table: str = "events"
    replace: bool = False
    refresh: bool = False
    parquet_dir: Path | None = None
    memory_limit: str | None = None  # the loader's budget, e.g. "512MB" (see duckdb_budget)


def open_database(
    target: DatabaseTarget, request: ExportRequest, guard: InterruptGuard | None = None
) -> DuckDBSink:
    """Validate and open the DuckDB sink (fails before anything is fetched).

    ``guard`` is the run's: the sink's waits for its loader look for its stop request.
    """
    from mpexport.sinks.duckdb.sink import DuckDBSink

    filters = request.filters
    if target.replace and (filters.events or filters.where or filters.limit is not None):
        # --replace deletes whole days; refetching only some events would lose
        # the rest for good (the manifest says those days are loaded).
        raise UsageError("--replace cannot be combined with --event, --where or --limit",
                         "replace whole days without filters")

    return DuckDBSink(
        target.path,
        table=target.table,
        filters=request.filters,
        run_id=uuid.uuid4().hex,
        replace=target.replace,
        # Replacing stored days means fetching them again.
        refresh=target.refresh or target.replace,
        parquet_dir=target.parquet_dir,
        project_timezone=request.project_timezone,
        memory_limit=target.memory_limit,
        check_stop=guard.raise_if_requested if guard is not None else None,
    )


@contextmanager
def locked_database(
    target: DatabaseTarget,
    request: ExportRequest,
    wait_lock: float = 0.0,
    guard: InterruptGuard | None = None,
) -> Iterator[DuckDBSink]:
    """Take the file's lock, open the sink, and abort it on the way out unless closed.

    One writer per file: another run's lock raises
    :class:`~mpexport.errors.DatabaseLockedError` (after ``wait_lock`` seconds).
    A stop request of ``guard`` ends the lock wait, and one that came while
    the database opened (which cannot be cut) takes effect right after it.
    The loader thread has ended when the block is left.
    """
    from mpexport.sinks.duckdb.lock import database_lock
    from mpexport.sinks.duckdb.schema import check_db_path

    check_db_path(target.path)  # a clear message before a lock file is created
    check_stop = guard.raise_if_requested if guard is not None else None
    with database_lock(target.path, wait_lock, check_stop):
        database = open_database(target, request, guard)
        try:
            if check_stop is not None:
                check_stop()
            yield database
        finally:
            database.abort()  # a no-op once the run closed it


def settled_days(covered: Collection[dt.date], start: dt.date, to_date: dt.date,
                 lookback: int) -> frozenset[dt.date]:
    """Loaded days of ``start..to_date`` that a sync need not read again.

    A sync re-reads the ``lookback`` days before the newest loaded day (late
    events land there) and every day not loaded yet. A day that keeps
    failing leaves a gap, and ``start`` stays before it; without this, every
    later sync would refetch everything after the gap, more each day.
    """
    loaded = [d for d in covered if start <= d <= to_date]
    if not loaded:
        return frozenset()
    recent = max(loaded) - dt.timedelta(days=lookback)
    return frozenset(d for d in loaded if d < recent)


def sync_request(
    request: ExportRequest, database: DuckDBSink, explicit_from: bool, lookback: int
) -> ExportRequest:
    """The request of an incremental sync: its range from what ``database`` holds."""
    covered = database.covered_days()
    start, end, complete = sync_range(
        covered, request.from_date if explicit_from else None, request.to_date, lookback,
    )
    skip = frozenset() if explicit_from else settled_days(covered, start, end, lookback)
    return dataclasses.replace(
        request, from_date=start, to_date=end,
        boundaries=(complete,) if complete is not None else (),
        skip_days=skip,
    )


def run_export(
    request: ExportRequest,
    credentials: Credentials,
    *,
    output: BinaryIO | None = None,
    database: DuckDBSink | None = None,
    progress: ProgressCallback | None = None,
    spool_dir: Path | None = None,
    guard: InterruptGuard | None = None,
    limiter: RateLimiter | None = None,
) -> ExportResult:
    """Run a validated export into ``database`` (a DuckDB sink) or ``output`` (NDJSON).

    ``output`` defaults to stdout. ``guard`` is the run's stop request (the
    CLI's signal handling, a library caller's cancel event; a fresh one by
    default): when it trips, the run stops at its next safe point, NDJSON
    output ends on a whole line, and :class:`Interrupted` is raised.
    ``limiter`` defaults to one with the request's limits that shares the
    hour with earlier runs. Every thread the run started has ended when this
    returns or raises.
    """
    guard = guard if guard is not None else InterruptGuard()
    limiter = limiter or new_limiter(request, credentials)
    sink: NdjsonSink | DuckDBSink
    if database is not None:
        sink = database
        skip: set[dt.date] = set(request.skip_days)
        if not database.refresh:
            skip = database.covered_days()
        chunks = request.plan(used_this_hour=limiter.hourly_used,
                              day_volumes=database.day_volumes, skip_days=skip)
        if request.skip_days:
            # A fixed --chunk-days grid ignores skip_days; settled chunks go here.
            kept = [c for c in chunks
                    if not set(day_range(c.from_date, c.to_date)) <= request.skip_days]
            chunks = [dataclasses.replace(c, index=i) for i, c in enumerate(kept)]
    else:
        chunks = request.plan(used_this_hour=limiter.hourly_used)
        sink = NdjsonSink(output or sys.stdout.buffer, request.from_date, guard)
    pipeline = Pipeline(
        chunks,
        request.query(credentials),
        sink,
        workers=request.workers,
        settings=request.settings,
        progress=progress,
        spool_dir=spool_dir,
        guard=guard,
        gate=limiter,
    )
    limiter.set_on_wait(lambda seconds, reason: pipeline.notify(WaitingForBudget(seconds, reason)))
    try:
        result = pipeline.run()
    except Interrupted as exc:
        if isinstance(sink, NdjsonSink):
            exc.remaining = remaining_ranges(chunks, sink.written)
            if sink.cut is not None:
                exc.partial = (sink.cut.from_date, sink.cut.to_date)
        raise
    if database is not None:
        # Chunks DuckDB refused to read were fetched but not stored.
        refused = {f.chunk for f in database.failed_chunks}
        result.failed.extend(database.failed_chunks)
        result.completed = [c for c in result.completed if c.chunk not in refused]
    return result


def export(
    from_date: dt.date | str,
    to_date: dt.date | str,
    *,
    output: BinaryIO | None = None,
    credentials: Credentials | None = None,
    workers: int = DEFAULT_WORKERS,
    chunk_days: int | None = None,
    events: Sequence[str] = (),
    where: str | None = None,
    limit: int | None = None,
    region: str = "us",
    api_url: str | None = None,
    progress: ProgressCallback | None = None,
    settings: FetchSettings | None = None,
    spool_dir: Path | None = None,
    db: Path | str | None = None,
    table: str = "events",
    replace: bool = False,
    refresh: bool = False,
    parquet: Path | str | None = None,
    qps_limit: float = DEFAULT_QPS_LIMIT,
    hourly_limit: int = DEFAULT_HOURLY_LIMIT,
    project_timezone: str | None = None,
    retries: int | None = None,
    wait_lock: float = 0.0,
    memory_limit: str | None = None,
    cancel: threading.Event | None = None,
) -> ExportResult:
    """Export raw events for ``from_date..to_date`` (inclusive) as NDJSON or into DuckDB.

    Dates are ``datetime.date`` or the CLI's words (``YYYY-MM-DD``, ``today``,
    ``yesterday``, ``-N``). Events go to ``output`` (a binary stream; default
    stdout) chunk by chunk in date order, each chunk whole and verified.
    ``credentials`` default to the ``MP_*`` environment variables.
    With ``db``, events are loaded into that DuckDB file's ``table`` instead,
    deduplicated on Mixpanel's key, each chunk in one transaction with its
    manifest row; days already loaded are skipped (``refresh`` refetches,
    ``replace`` swaps stored days for fresh ones), and ``parquet`` also
    writes a Hive-partitioned Parquet dataset there. ``memory_limit`` is the
    loader's budget (``"256MB"`` by default, or ``$MPEXPORT_MEMORY_LIMIT``).
    Requests stay within ``qps_limit`` per second and ``hourly_limit`` per
    rolling hour (Mixpanel's 3 and 60 by default), shared across runs.
    ``progress`` is called on the calling thread with each
    :mod:`mpexport.events` event. Returns an :class:`ExportResult`; raises
    :class:`~mpexport.errors.MpexportError` subclasses for bad input and for
    errors retrying cannot fix.

    ``cancel`` stops the run from another thread (or from ``progress``):
    once it is set, the run stops at its next safe point (within moments:
    blocked downloads are cut; only a connection still being set up or a
    DuckDB commit already writing is waited for), NDJSON output ends on a
    whole line, nothing partial is committed, and
    :class:`~mpexport.errors.Interrupted` is raised
    with ``signal_name == "cancel"``, ``result`` (what was done) and, for
    NDJSON, ``remaining`` (the date ranges still to fetch). Whatever way it
    ends, the call leaves no thread running and no spool file behind, so it
    can be called again and again in one process (a notebook, a worker).
    """
    request = build_request(
        from_date, to_date, workers=workers, chunk_days=chunk_days, events=events,
        where=where, limit=limit, region=region, api_url=api_url, settings=settings,
        qps_limit=qps_limit, hourly_limit=hourly_limit, project_timezone=project_timezone,
        retries=retries,
    )
    credentials = credentials or credentials_from_env()
    guard = InterruptGuard(cancel)  # this run's alone: a stop never outlives its run
    if db is None:
        if parquet is not None:
            raise UsageError("parquet output needs a database", "pass db= as well")
        return run_export(request, credentials, output=output, progress=progress,
                          spool_dir=spool_dir, guard=guard)
    target = DatabaseTarget(Path(db), table, replace, refresh,
                            Path(parquet) if parquet is not None else None, memory_limit)
    with locked_database(target, request, wait_lock, guard) as database:
        return run_export(request, credentials, database=database, progress=progress,
                          spool_dir=spool_dir, guard=guard)


def sync(
    db: Path | str,
    *,
    from_date: dt.date | str | None = None,
    to_date: dt.date | str = "today",
    lookback: int = 5,
    credentials: Credentials | None = None,
    table: str = "events",
    workers: int = DEFAULT_WORKERS,
    chunk_days: int | None = None,
    events: Sequence[str] = (),
    where: str | None = None,
    region: str = "us",
    api_url: str | None = None,
    progress: ProgressCallback | None = None,
    qps_limit: float = DEFAULT_QPS_LIMIT,
    hourly_limit: int = DEFAULT_HOURLY_LIMIT,
    project_timezone: str | None = None,
    wait_lock: float = 0.0,
    memory_limit: str | None = None,
    cancel: threading.Event | None = None,
) -> tuple[ExportResult, LoadStats]:
    """Bring a DuckDB file up to ``to_date``: new days plus a lookback of ``lookback`` days.

    The first sync of a file needs ``from_date``; later syncs never reach
    before the first day the file holds unless ``from_date`` says so (see
    :func:`sync_range`). Holds the file's lock for the run
    (:class:`~mpexport.errors.DatabaseLockedError` if another run has it,
    after waiting ``wait_lock`` seconds). ``cancel`` stops the run as for
    :func:`export`. Returns the export result and the load statistics
    (``late_rows`` counts late events added).
    """
    start_text = from_date if from_date is not None else to_date
    request = build_request(
        start_text, to_date, workers=workers, chunk_days=chunk_days, events=events,
        where=where, region=region, api_url=api_url, qps_limit=qps_limit,
        hourly_limit=hourly_limit, project_timezone=project_timezone,
    )
    credentials = credentials or credentials_from_env()
    target = DatabaseTarget(Path(db), table, refresh=True, memory_limit=memory_limit)
    guard = InterruptGuard(cancel)
    with locked_database(target, request, wait_lock, guard) as database:
        request = sync_request(request, database, from_date is not None, lookback)
        result = run_export(request, credentials, database=database, progress=progress,
                            guard=guard)
    return result, database.stats
