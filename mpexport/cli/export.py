"""``mpexport export`` and ``mpexport sync``: the commands that fetch events."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mpexport.cli.options import (
    CONTEXT,
    EXIT_CODES_HELP,
    database_options,
    date_help,
    echo_err,
    fetch_options,
    output_options,
)
from mpexport.errors import ExitCode, Interrupted, LoaderError, MpexportError, exit_code_for

if TYPE_CHECKING:
    from mpexport.api import ExportRequest
    from mpexport.cli.progress import BarProgress
    from mpexport.cli.report import RunReport
    from mpexport.interrupt import InterruptGuard
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.model import ExportResult
    from mpexport.sinks.duckdb.sink import DuckDBSink

CREDENTIALS_HELP = """\b
Credentials come from the environment or a profile, never from the command line:
  MP_USERNAME, MP_SECRET, MP_PROJECT_ID   a service account (recommended)
  MP_API_SECRET                           a legacy project secret
  --profile NAME                          a profile written by 'mpexport config init'"""
EPILOG = CREDENTIALS_HELP + "\n\n" + EXIT_CODES_HELP


@click.command("export", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--from", "from_date", required=True, metavar="DATE", help=date_help("First"))
@click.option("--to", "to_date", required=True, metavar="DATE", help=date_help("Last"))
@fetch_options
@click.option("--db", "db_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Load into this DuckDB file instead of writing NDJSON to stdout.")
@database_options
@click.option("--refresh", is_flag=True,
              help="With --db: fetch days again even if the manifest has them.")
@click.option("--replace", is_flag=True,
              help="With --db: delete each chunk's days before loading it (for data "
                   "deleted upstream); implies --refresh.")
@click.option("--dry-run", is_flag=True, help="Print the plan to stdout; fetch nothing.")
@output_options
def export_command(**options: Any) -> None:
    """Export raw events for a date range as NDJSON on stdout, or into DuckDB.

    Chunks are fetched in parallel within Mixpanel's rate limits, each
    verified whole before a byte of it is written, and written in date order
    as the exact bytes Mixpanel sent. Messages, bars and the summary go to
    stderr only.

    With --db, events go into a DuckDB table instead (one row per Mixpanel
    event, deduplicated on event, distinct_id, time and $insert_id), each
    chunk in one transaction; run the same command again and only what is
    missing is fetched.

    \b
    Examples:
      mpexport export --from 2024-01-01 --to 2024-01-31 > january.ndjson
      mpexport export --from -7 --to yesterday --event Purchase | wc -l
      mpexport export --from 2024-01-01 --to 2024-06-30 --db events.duckdb
    """
    if options["db_path"] is None:
        used = [name for name in ("refresh", "replace", "parquet_dir") if options[name]]
        if used or options["table"] != "events" or options["wait_lock"]:
            raise click.UsageError("--table, --refresh, --replace, --parquet and --wait-lock "
                                   "need --db FILE")
        source = click.get_current_context().get_parameter_source("memory_limit")
        if options["memory_limit"] and source is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--memory-limit needs --db FILE")
    raise SystemExit(_execute("export", options))


@click.command("sync", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--db", "db_path", required=True, metavar="FILE",
              type=click.Path(dir_okay=False), help="The DuckDB file to keep current.")
@click.option("--from", "from_date", metavar="DATE",
              help="First day (needed on the first sync of a file; later syncs continue "
                   "where the last one stopped).")
@click.option("--to", "to_date", default="today", show_default=True, metavar="DATE",
              help=date_help("Last"))
@click.option("--lookback", type=int, default=5, show_default=True, metavar="DAYS",
              help="Whole days before the last synced day to read again, for late events.")
@fetch_options
@database_options
@click.option("--dry-run", is_flag=True, help="Print the plan to stdout; fetch nothing.")
@output_options
def sync_command(**options: Any) -> None:
    """Keep a DuckDB file current: new days, plus a lookback for late events.

    The first sync of a file needs --from. Later syncs start at the last day
    the file holds complete, minus --lookback days (mobile SDKs send events
    up to 5 days late), and end --to (today by default). Re-read days are
    deduplicated against what is stored; the summary counts the late events
    added. Older days are not fetched again. Made for cron.

    \b
    Examples:
      mpexport sync --db events.duckdb --from 2024-01-01
      mpexport sync --db events.duckdb --quiet --summary-json last-sync.json
    """
    options["refresh"] = True  # every day in a sync's range is read whole again
    options["replace"] = False
    raise SystemExit(_execute("sync", options))


def _configure_logging(verbose: bool) -> None:
    logger = logging.getLogger("mpexport")
    logger.handlers.clear()
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mpexport: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _progress(options: dict[str, Any]) -> BarProgress:
    from mpexport.cli.progress import BarProgress

    if options["quiet"]:
        mode = "quiet"
    elif options["progress"] is None:
        mode = "bars" if sys.stderr.isatty() else "lines"
    else:
        mode = "bars" if options["progress"] else "lines"
    return BarProgress(sys.stderr, mode=mode)


def _execute(command: str, options: dict[str, Any]) -> int:
    """Run export or sync; write the summary JSON whatever happens; return the exit code."""
    from mpexport.cli.report import RunReport

    report = RunReport(command=command, table=options["table"])
    code = int(ExitCode.OK)
    try:
        code = _run(command, options, report)
    except BaseException as exc:
        code = exit_code_for(exc)
        report.error = exc.one_line() if isinstance(exc, MpexportError) else str(exc) or None
        raise
    finally:
        if options["summary_json"]:
            try:
                report.write_json(options["summary_json"], code)
            except OSError as exc:  # never hide the run's own outcome behind this
                echo_err(f"mpexport: could not write the summary JSON: {exc}")
    return code


def _run(command: str, options: dict[str, Any], report: RunReport) -> int:
    from mpexport import api

    _configure_logging(options["verbose"])
    quiet = options["quiet"]

    def build(region: str) -> ExportRequest:
        return api.build_request(
            options["from_date"] or options["to_date"], options["to_date"],
            workers=options["workers"], chunk_days=options["chunk_days"],
            events=options["events"], where=options["where"], limit=options["limit"],
            region=region, api_url=options["api_url"], retries=options["retries"],
            qps_limit=options["qps_limit"], hourly_limit=options["hourly_limit"],
            project_timezone=options["project_timezone"],
        )

    # Bad input is reported before missing credentials: it is the first thing to fix.
    build(options["region"] or "us")
    credentials, region, warnings = _credentials(options)
    request = build(region)
    if not quiet:
        for note in (*warnings, *request.notes):
            echo_err(f"mpexport: note: {note}")
    if options["dry_run"] and command == "export":
        _print_plan(api.describe_plan(request, credentials))
        return int(ExitCode.OK)
    assert credentials is not None
    db_path = Path(options["db_path"]) if options["db_path"] else None
    report.database = db_path
    with ExitStack() as stack:
        # This run's own guard, installed first so that it covers the lock wait
        # and the database's close too; signals only record a stop request.
        from mpexport.interrupt import InterruptGuard

        guard = stack.enter_context(InterruptGuard().installed())
        database = None
        if db_path is not None:
            target = api.DatabaseTarget(
                db_path, options["table"], options["replace"], options["refresh"],
                Path(options["parquet_dir"]) if options["parquet_dir"] else None,
                options["memory_limit"],
            )
            try:
                database = stack.enter_context(
                    api.locked_database(target, request, options["wait_lock"], guard))
            except Interrupted as stop:
                echo_err(f"mpexport: {stop.signal_name}: stopped before anything was fetched")
                raise
        if command == "sync":
            assert database is not None
            request = api.sync_request(request, database, bool(options["from_date"]),
                                       options["lookback"])
            if options["dry_run"]:
                _print_plan(api.describe_plan(request, credentials))
                return int(ExitCode.OK)
        report.from_date, report.to_date = request.from_date, request.to_date
        result = _run_pipeline(request, credentials, database, options, report, guard)
    report.result = result
    report.load = database.stats if database is not None else None
    if not quiet:
        from mpexport.cli.report import summary_line

        echo_err(summary_line(report))
    if result.failed:
        _report_failures(result, report, options)
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)


def _print_plan(lines: Iterable[str]) -> None:
    """A dry run's plan on stdout (it is the requested output); `| head` ends it quietly."""
    from mpexport.errors import OutputClosed
    from mpexport.sinks.ndjson import reader_gone

    try:
        for line in lines:
            click.echo(line)
        sys.stdout.flush()
    except OSError as error:
        # Raised as our own error: click would turn a broken pipe into exit 1.
        if reader_gone(error):
            raise OutputClosed() from error
        raise


def _credentials(options: dict[str, Any]) -> tuple[Credentials | None, str, list[str]]:
    """Credentials, region and warnings; for a dry run, credentials are optional."""
    from mpexport.config.resolve import resolve_credentials
    from mpexport.errors import CredentialsError
    from mpexport.mixpanel.credentials import ENV_REGION

    try:
        resolved = resolve_credentials(os.environ, options["profile"], options["project_id"],
                                       options["region"])
    except CredentialsError:
        if not options["dry_run"]:
            raise
        region = options["region"] or os.environ.get(ENV_REGION) or "us"
        return None, region, []
    return resolved.credentials, resolved.region, list(resolved.warnings)


def _run_pipeline(
    request: ExportRequest,
    credentials: Credentials,
    database: DuckDBSink | None,
    options: dict[str, Any],
    report: RunReport,
    guard: InterruptGuard,
) -> ExportResult:
    from mpexport.api import run_export

    progress = _progress(options)
    try:
        return run_export(request, credentials, database=database, progress=progress,
                          guard=guard)
    except LoaderError:
        progress.close()
        assert database is not None
        _report_loader_failure(request, database, options, report)
        raise
    except Interrupted as stop:
        progress.close()
        from mpexport.model import ExportResult

        if isinstance(stop.result, ExportResult):
            report.result = stop.result
        if database is not None:
            report.load = database.stats
        _report_interrupted(stop, options, database is not None, report)
        raise
    finally:
        progress.close()


def retry_args(options: dict[str, Any]) -> list[str]:
    """The options that, with new dates, repeat this run for part of its range."""
    args: list[str] = []
    for name in options["events"]:
        args += ["--event", name]
    pairs = [("--where", options["where"]), ("--limit", options["limit"]),
             ("--region", options["region"]), ("--api-url", options["api_url"]),
             ("--project-id", options["project_id"]), ("--profile", options["profile"]),
             ("--project-timezone", options["project_timezone"]),
             ("--chunk-days", options["chunk_days"])]
    args += [item for flag, value in pairs if value is not None for item in (flag, str(value))]
    defaults = [("--workers", options["workers"], 10), ("--retries", options["retries"], 5),
                ("--qps-limit", options["qps_limit"], 3.0),
                ("--hourly-limit", options["hourly_limit"], 60)]
    args += [item for flag, value, default in defaults if value != default
             for item in (flag, f"{value:g}" if isinstance(value, float) else str(value))]
    if options["db_path"]:
        args += ["--db", options["db_path"]]
        if options["table"] != "events":
            args += ["--table", options["table"]]
        if options["parquet_dir"]:
            args += ["--parquet", options["parquet_dir"]]
        if options["memory_limit"]:
            args += ["--memory-limit", options["memory_limit"]]
        # Days a sync or --refresh re-read were loaded before: without
        # --refresh the retry would skip them and fix nothing.
        if options["replace"]:
            args.append("--replace")
        elif options["refresh"]:
            args.append("--refresh")
    return args


def _rerun(ranges: list[tuple[Any, Any]], options: dict[str, Any], report: RunReport) -> None:
    import shlex

    for start, end in ranges:
        command = ["mpexport", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                   *retry_args(options)]
        report.rerun.append(command)
        if not options["quiet"]:
            echo_err("  " + shlex.join(command))


def _report_failures(result: ExportResult, report: RunReport, options: dict[str, Any]) -> None:
    from mpexport.plan import merge_ranges

    echo_err(f"mpexport: {len(result.failed)} chunks failed after their retries:")
    for failure in result.failed:
        echo_err(f"  {failure.chunk.label()}: {failure.reason}")
    if not options["quiet"]:
        echo_err("retry just those with:")
    _rerun(merge_ranges([f.chunk for f in result.failed]), options, report)


def _report_loader_failure(request: ExportRequest, database: DuckDBSink,
                           options: dict[str, Any], report: RunReport) -> None:
    """Which days the failed loader committed, and the command that loads the rest."""
    from mpexport.dates import day_range
    from mpexport.model import Chunk
    from mpexport.plan import merge_ranges

    report.load = database.stats
    done = database.loaded_days
    missing = merge_ranges([Chunk(0, d, d) for d in day_range(request.from_date, request.to_date)
                            if d not in done])
    committed = merge_ranges([Chunk(0, d, d) for d in sorted(done)])
    listed = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in committed) or "none"
    echo_err(f"mpexport: the loader stopped after committing {database.stats.chunks} chunks "
             f"(days {listed}); nothing of the chunk it was loading was stored")
    if missing:
        echo_err("to load the rest, fix the cause above, then run:")
        _rerun(missing, options, report)


def _report_interrupted(stop: Interrupted, options: dict[str, Any], to_db: bool,
                        report: RunReport) -> None:
    from mpexport.model import ExportResult

    result = stop.result
    if isinstance(result, ExportResult):
        where = ("only whole chunks were committed" if to_db
                 else "stdout ends on a whole line")
        echo_err(f"mpexport: {stop.signal_name}: stopped after {result.seconds:.1f}s; "
                 f"{len(result.completed)}/{result.chunks_total} chunks fetched, {where}")
    if to_db:
        echo_err("to resume, run the same command again: loaded chunks are not fetched again")
        return
    if stop.partial is not None:
        start, end = stop.partial
        echo_err(f"mpexport: stdout ends with part of {start.isoformat()}..{end.isoformat()} "
                 "(whole lines); the commands below fetch all of it again")
    if stop.remaining:
        echo_err("to fetch what is missing, run:")
        _rerun(stop.remaining, options, report)
