"""The one run path: options in, an :class:`ExportResult` out.

``mpexport export``, ``mpexport sync``, :func:`mpexport.export` and
:func:`mpexport.sync` all come here with a :class:`RunOptions`. In order:
validate the options, resolve credentials, take the database's lock (with
``db``), work out the range (a sync's from what the database holds), plan the
chunks, and hand them to the pipeline with the right sink. The CLI only
parses, prints and maps errors to exit codes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport.environment import Environment
from mpexport.errors import (
    Interrupted,
    LoaderError,
    MpexportError,
    UsageError,
)
from mpexport.events import ProgressCallback
from mpexport.interrupt import InterruptGuard
from mpexport.model import Chunk, ExportResult
from mpexport.options import Command, RunOptions
from mpexport.request import (
    ExportRequest,
    build_request,
    describe_plan,
    loaded_not_fetched,
    loaded_note,
    missing_ranges,
    remaining_ranges,
    without_days,
)
from mpexport.sinks.output_file import Destination, ndjson_destination
from mpexport.startup import RunSetup, hour_used, ignore, new_limiter, resolve, tell

if TYPE_CHECKING:
    import datetime as dt

    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.transport import FetchSettings
    from mpexport.sinks.base import DatabaseSink
    from mpexport.syncing import HoldsDays


def run(
    command: Command,
    options: RunOptions,
    *,
    credentials: Credentials | None = None,
    output: BinaryIO | None = None,
    progress: ProgressCallback | None = None,
    guard: InterruptGuard | None = None,
    settings: FetchSettings | None = None,
    spool_dir: Path | None = None,
    share_hour: bool = True,
    environ: Mapping[str, str] | None = None,
    environment: Environment | None = None,
) -> ExportResult:
    """Run an export or a sync described by ``options``; return what it did.

    ``environment`` is what the run takes from its process (variables,
    stdout, state folder, lock command name, clocks), by default this
    process's (:meth:`Environment.from_process`); ``environ`` replaces only
    its variables. ``credentials`` default to those the environment or
    ``options.profile`` name. NDJSON goes to ``output``, else
    ``options.output``, else the environment's stdout. ``progress`` receives
    :mod:`mpexport.events` events on this thread, notes first. ``guard`` is
    the run's stop request (the CLI's signal handling; by default a fresh
    one). ``settings`` tunes fetching (timeouts, backoff); ``share_hour``
    counts queries against the hour earlier runs on this machine used.
    Raises :class:`~mpexport.errors.MpexportError` subclasses; a stop raises
    :class:`~mpexport.errors.Interrupted` with what was done and what is
    left. Every thread the run started has ended when this returns or raises.
    """
    environment = environment if environment is not None else Environment.from_process()
    if environ is not None:
        environment = dataclasses.replace(environment, environ=environ)
    environ = environment.environ
    notify = progress or ignore
    _check_destination(command, options, environ)
    if output is not None and (options.db is not None or options.parquet is not None):
        raise UsageError("an NDJSON output stream cannot be used with db or parquet",
                         "export to the database, or to the stream, in two calls")
    setup = RunSetup(environment, credentials=credentials, output=output, guard=guard,
                     settings=settings, spool_dir=spool_dir, share_hour=share_hour)
    request, credentials, warnings = resolve(
        options, lambda region, tuned: build_request(options, region=region, settings=tuned),
        setup)
    notes = [*warnings, *request.notes]
    tell(notify, notes)
    guard = setup.stop_request()
    if options.dry_run and command == "export":
        # Read-only, as a sync's dry run: what is loaded is not planned.
        loaded = (_held_days(options, request, environ)
                  if not (options.refresh or options.replace) else frozenset())
        return _dry_run(request, credentials, notes, environment, loaded=loaded, notify=notify)
    if options.db is None and options.parquet is None:
        assert credentials is not None
        with ndjson_destination(output, options.output, options.append, guard,
                                environment.stdout) as destination:
            return _run_pipeline(request, credentials, notes, destination=destination,
                                 progress=progress, guard=guard, spool_dir=spool_dir,
                                 share_hour=share_hour, environment=environment)
    from mpexport.database import (
        DatabaseTarget,
        locked_database,
        open_lake,
        stored_days,
        stored_lake_days,
    )
    from mpexport.sinks.duckdb.budget import chosen_memory_limit

    # Only now: $MPEXPORT_MEMORY_LIMIT is for the loader, never an NDJSON run's error.
    options = dataclasses.replace(
        options, memory_limit=chosen_memory_limit(options.memory_limit, environment))
    sync = command == "sync"
    if sync and options.dry_run:
        # Read-only: a dry run creates, locks and writes nothing.
        if options.db is not None:
            held = stored_days(DatabaseTarget.from_options(options, sync=True), request)
        else:
            assert options.parquet is not None
            held = stored_lake_days(options.parquet, request, environ)
        request = _synced(request, held, options, notes, notify)
        return _dry_run(request, credentials, notes, environment)
    opened: AbstractContextManager[DatabaseSink]
    if options.db is None:
        # The lake alone: a scratch database in the temp folder feeds it. As
        # with --db, a sync re-reads whole days and never replaces them.
        assert options.parquet is not None
        opened = open_lake(options.parquet, request, replace=options.replace and not sync,
                           refresh=options.refresh or sync, memory_limit=options.memory_limit,
                           guard=guard, spool_dir=spool_dir, wait_lock=options.wait_lock,
                           environment=environment)
    else:
        target = DatabaseTarget.from_options(options, sync=sync)
        opened = locked_database(target, request, options.wait_lock, guard,
                                 environment=environment)
    with opened as database:
        if command == "sync":
            request = _synced(request, database, options, notes, notify)
            if options.dry_run:
                return _dry_run(request, credentials, notes, environment)
        assert credentials is not None
        return _run_pipeline(request, credentials, notes, database=database,
                             progress=progress, guard=guard, spool_dir=spool_dir,
                             share_hour=share_hour, environment=environment)


def _synced(request: ExportRequest, store: HoldsDays, options: RunOptions, notes: list[str],
            notify: ProgressCallback) -> ExportRequest:
    """The sync's request from what ``store`` holds; its notes told and kept with the run's."""
    from mpexport.syncing import sync_request

    said: list[str] = []
    request = sync_request(request, store, options.from_date is not None, options.lookback,
                           refresh=options.refresh, record=not options.dry_run, notes=said)
    tell(notify, said)
    notes.extend(said)
    return request


def _check_destination(command: Command, options: RunOptions,
                       environ: Mapping[str, str]) -> None:
    """Refuse options that do not fit where the run writes: NDJSON, ``--db`` or the lake."""
    if options.parquet is not None:
        from mpexport.sinks.lake.store import parse_location

        parse_location(options.parquet, environ)  # no network: a dry run checks it too
    if options.db is not None:
        # One output per run: NDJSON beside a database would be a second
        # copy whose chunks (skipped when loaded) could never match it.
        used = _set_flags(options, "output", "append")
        if used:
            raise UsageError(f"{', '.join(used)} cannot be used with --db",
                             "export to the database, or to NDJSON, in two runs")
        _check_database(command, options)
        return
    if options.parquet is None:
        if command == "sync":
            raise UsageError("sync needs --db FILE or --parquet DIR|URL",
                             "e.g. --db events.duckdb or --parquet s3://bucket/events")
        _check_ndjson_options(options)
        return
    used = _set_flags(options, "table", "output", "append")
    if used:
        raise UsageError(f"{', '.join(used)} cannot be used with --parquet alone",
                         "the lake is the output; add --db FILE for a table too")


def _check_database(command: Command, options: RunOptions) -> None:
    """What can be refused before the file and its lock exist: refused then, neither is made."""
    from mpexport.sinks.duckdb.schema import check_table_name
    from mpexport.syncing import first_sync_error

    check_table_name(options.table)
    if command == "sync" and options.from_date is None and options.db is not None \
            and not Path(options.db).exists():
        # A missing file holds no sync range: the manifest need not be opened to know it.
        raise first_sync_error()


def _set_flags(options: RunOptions, *names: str) -> list[str]:
    """The command-line flags of ``names`` whose value is not the default."""
    defaults = RunOptions()
    return ["--" + name.replace("_", "-") for name in names
            if getattr(options, name) != getattr(defaults, name)]


def _check_ndjson_options(options: RunOptions) -> None:
    used = _set_flags(options, "table", "refresh", "replace", "parquet", "wait_lock",
                      "memory_limit")
    if used:
        need = "needs" if len(used) == 1 else "need"
        raise UsageError(f"{', '.join(used)} {need} --db FILE or --parquet DIR|URL",
                         "or drop them for NDJSON output")
    if options.append and options.output is None:
        raise UsageError("--append needs --output FILE")


def _held_days(options: RunOptions, request: ExportRequest,
               environ: Mapping[str, str]) -> frozenset[dt.date]:
    """The days an export's ``--db`` or lake holds (none for NDJSON), read without a write."""
    from mpexport.database import DatabaseTarget, stored_days, stored_lake_days

    if options.db is not None:
        return stored_days(DatabaseTarget.from_options(options), request).days
    if options.parquet is not None:
        return stored_lake_days(options.parquet, request, environ).days
    return frozenset()


def _dry_run(request: ExportRequest, credentials: Credentials | None,
             notes: list[str], environment: Environment,
             loaded: frozenset[dt.date] = frozenset(),
             notify: ProgressCallback = ignore) -> ExportResult:
    """The plan a run would fetch, less the ``loaded`` days of an export (said in a note)."""
    used = hour_used(request.endpoint.base_url, credentials, environment)
    chunks = request.plan(used_this_hour=len(used), skip_days=loaded)
    if request.skip_days:
        chunks = without_days(chunks, request.skip_days)
    if loaded:
        note = loaded_note(loaded_not_fetched(request, loaded, chunks))
        chunks = without_days(chunks, loaded)
        tell(notify, [note] if note else [])
        notes.extend([note] if note else [])
    return ExportResult(chunks_total=len(chunks), from_date=request.from_date,
                        to_date=request.to_date, notes=notes,
                        plan=describe_plan(request, chunks, credentials, used))


def _run_pipeline(
    request: ExportRequest,
    credentials: Credentials,
    notes: list[str],
    *,
    destination: Destination | None = None,
    database: DatabaseSink | None = None,
    progress: ProgressCallback | None,
    guard: InterruptGuard,
    spool_dir: Path | None,
    share_hour: bool,
    environment: Environment,
) -> ExportResult:
    """Plan the chunks, fetch them into the sink, and say what happened."""
    from mpexport.pipeline import Pipeline
    from mpexport.sinks.ndjson import NdjsonSink

    limiter = new_limiter(request.endpoint.base_url, credentials, environment,
                          qps=request.qps_limit, hourly=request.hourly_limit,
                          workers=request.workers, persist=share_hour)
    sink: NdjsonSink | DatabaseSink
    if database is not None:
        sink = database
        skip = set(request.skip_days) if database.refresh else database.covered_days()
        chunks = request.plan(used_this_hour=limiter.hourly_used,
                              day_volumes=database.day_volumes, skip_days=skip)
        if request.skip_days:
            # A fixed --chunk-days grid ignores skip_days; settled chunks go here.
            chunks = without_days(chunks, request.skip_days)
        if not database.refresh:
            # An export's loaded days (a sync said its own while choosing its range).
            note = loaded_note(loaded_not_fetched(request, skip, chunks))
            if note is not None:
                tell(progress or ignore, [note])
                notes.append(note)
    else:
        assert destination is not None
        chunks = request.plan(used_this_hour=limiter.hourly_used)
        sink = NdjsonSink(destination.stream, request.from_date, guard)
    pipeline = Pipeline(chunks, request.query(credentials), sink, workers=request.workers,
                        settings=request.settings, progress=progress, spool_dir=spool_dir,
                        guard=guard, gate=limiter)
    span = (request.from_date, request.to_date)
    try:
        fetched = pipeline.run()
    except MpexportError as error:
        error.run_range = span
        if isinstance(error, Interrupted):
            if isinstance(error.result, ExportResult):
                error.result = _assemble(error.result, request, notes, database, stopped=True)
            _explain_stop(error, chunks, sink, database, destination)
        elif isinstance(error, LoaderError) and database is not None:
            _explain_loader_failure(error, request, database)
        raise
    return _assemble(fetched, request, notes, database, stopped=False)


def _assemble(fetched: ExportResult, request: ExportRequest, notes: list[str],
              database: DatabaseSink | None, *, stopped: bool) -> ExportResult:
    """The run's result: what the pipeline fetched, with the range, the notes and the load.

    Chunks DuckDB refused to read were fetched but not stored: once the run
    is over they count as failed. A stopped run reports them as fetched.
    """
    completed, failed, load = fetched.completed, fetched.failed, None
    if database is not None:
        load = database.stats
        if not stopped:
            refused = {f.chunk for f in database.failed_chunks}
            completed = [c for c in completed if c.chunk not in refused]
            failed = [*failed, *database.failed_chunks]
    return dataclasses.replace(fetched, completed=completed, failed=failed, load=load,
                               from_date=request.from_date, to_date=request.to_date,
                               notes=notes)


def _explain_stop(stop: Interrupted, chunks: list[Chunk], sink: object,
                  database: DatabaseSink | None, destination: Destination | None) -> None:
    from mpexport.sinks.ndjson import NdjsonSink

    if database is not None:
        stop.load = database.stats
    if isinstance(sink, NdjsonSink):
        stop.remaining = remaining_ranges(chunks, sink.written)
        # A file of ours is cut back to its last whole chunk, so that the
        # resume (which fetches the cut chunk whole) adds no line twice.
        cut_back = destination is not None and destination.keep_whole_chunks(sink.whole_bytes)
        if sink.cut is not None and not cut_back:
            stop.partial = (sink.cut.from_date, sink.cut.to_date)


def _explain_loader_failure(error: LoaderError, request: ExportRequest,
                            database: DatabaseSink) -> None:
    from mpexport.plan import merge_ranges

    done = database.loaded_days
    error.committed = merge_ranges([Chunk(0, d, d) for d in sorted(done)])
    error.missing = missing_ranges(request.from_date, request.to_date, done)
    error.chunks_committed = database.stats.chunks
    error.load = database.stats

