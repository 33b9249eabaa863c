"""``mpexport export`` and ``mpexport sync``: the commands that fetch events."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mpexport.cli.options import (
    CONTEXT,
    DESTINATION,
    FETCH_EPILOG,
    OUTPUT,
    RANGE,
    GroupedCommand,
    database_options,
    date_help,
    echo_err,
    fetch_options,
    option,
    output_options,
    run_reporting,
)
from mpexport.cli.running import (
    DISPLAY_ONLY,
    ended,
    given_on_command_line,
    library_values,
    progress_shown,
)
from mpexport.errors import Interrupted, LoaderError, MpexportError
from mpexport.options import RunOptions

if TYPE_CHECKING:
    import datetime as dt

    from mpexport.cli.report import RunReport
    from mpexport.events import WaitingForBudget
    from mpexport.model import ChunkFailure
    from mpexport.options import Command


@click.command("export", cls=GroupedCommand, context_settings=CONTEXT, epilog=FETCH_EPILOG)
@option("--from", "from_date", group=RANGE, required=True, metavar="DATE",
        help=date_help("First"))
@option("--to", "to_date", group=RANGE, required=True, metavar="DATE", help=date_help("Last"))
@fetch_options
@option("--db", "db", group=DESTINATION, metavar="FILE", type=click.Path(dir_okay=False),
        help="Load into this DuckDB file instead of writing NDJSON to stdout.")
@option("-o", "--output", group=DESTINATION, metavar="FILE", type=click.Path(dir_okay=False),
        help="Write the NDJSON to FILE instead of stdout, byte for byte (put in place "
             "when the run ends; no shell re-encodes it).")
@option("--append", group=DESTINATION, is_flag=True,
        help="With --output: add to the end of FILE (how a printed resume command "
             "completes it).")
@database_options
@option("--refresh", group=DESTINATION, is_flag=True,
        help="With --db or --parquet: fetch days again even if the manifest has them.")
@option("--replace", group=DESTINATION, is_flag=True,
        help="With --db or --parquet: delete each chunk's days before loading it (for data "
             "deleted upstream); implies --refresh.")
@option("--verify", group=DESTINATION, is_flag=True,
        help="With --db or --parquet: after loading, compare the range's settled days "
             "with Mixpanel's daily counts, fetch the days that differ again, compare "
             "once more; exit 1 only if a day still differs.")
@option("--dry-run", group=OUTPUT, is_flag=True,
        help="Print the plan to stdout; fetch nothing.")
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
    missing is fetched. With --parquet alone, the events go to a Parquet
    lake (a folder or s3://, gs://, az://): one file per UTC day, written
    whole, deduplicated the same way.

    \b
    Examples:
      mpexport export --from 2024-01-01 --to 2024-01-31 > january.ndjson
      mpexport export --from -7 --to yesterday --event Purchase | wc -l
      mpexport export --from 2024-01-01 --to 2024-06-30 --db events.duckdb
      mpexport export --from -30 --to yesterday --parquet s3://bucket/events
    """
    raise SystemExit(_execute("export", options))


@click.command("sync", cls=GroupedCommand, context_settings=CONTEXT, epilog=FETCH_EPILOG)
@option("--db", "db", group=DESTINATION, metavar="FILE", type=click.Path(dir_okay=False),
        help="The DuckDB file to keep current (or give --parquet alone to keep a "
             "lake current).")
@option("--from", "from_date", group=RANGE, metavar="DATE",
        help="First day of the range the file keeps (needed on its first sync, then "
             "recorded). Later syncs read every day of the range not loaded yet, plus "
             "the lookback; repeating the same --from changes nothing, an earlier one "
             "extends the range.")
@option("--to", "to_date", group=RANGE, default="today", show_default=True, metavar="DATE",
        help=date_help("Last"))
@option("--lookback", group=RANGE, type=int, default=RunOptions.lookback, show_default=True,
        metavar="DAYS",
        help="Whole days before the last synced day to read again, for late events.")
@fetch_options
@database_options
@option("--refresh", group=DESTINATION, is_flag=True,
        help="Read every day of the range again, not only new days and the lookback.")
@option("--verify", group=DESTINATION, is_flag=True,
        help="With --db or --parquet: after loading, compare the range's settled days "
             "with Mixpanel's daily counts, fetch the days that differ again, compare "
             "once more; exit 1 only if a day still differs.")
@option("--dry-run", group=OUTPUT, is_flag=True,
        help="Print the plan to stdout; fetch nothing.")
@output_options
def sync_command(**options: Any) -> None:
    """Keep a DuckDB file or a lake current: new days, plus a lookback for late events.

    The first sync of a file (or lake) needs --from, which the file records
    as where its range begins. Every later sync reads each day of that range
    not loaded whole yet (a day that failed, or a first run cut short), the
    --lookback days before the newest loaded day (mobile SDKs send events up
    to 5 days late), and new days up to --to (today by default). Loaded days
    older than the lookback are not fetched again, with or without the same
    --from; --refresh reads them all again. Re-read days are deduplicated
    against what is stored; the summary counts the late events added. A
    sync exits non-zero while any day of its range is missing. Made for cron.

    \b
    Examples:
      mpexport sync --db events.duckdb --from 2024-01-01
      mpexport sync --db events.duckdb --quiet --summary-json last-sync.json
      mpexport sync --parquet s3://bucket/events --quiet
    """
    raise SystemExit(_execute("sync", options))


def run_options(options: dict[str, Any]) -> RunOptions:
    """The :class:`RunOptions` of the parsed command line (the library's input)."""
    database = options.get("db") is not None or options.get("parquet") is not None
    values = library_values(options, repeated="events", database=database)
    values.pop("verify", None)  # the CLI's step after the run (mpexport.verify.heal)
    return RunOptions(**values)


def _execute(command: Command, options: dict[str, Any]) -> int:
    """Run export or sync; write the summary JSON whatever happens; return the exit code."""
    from mpexport.cli.verify_heal import HealedRunReport

    # A table only where there is one: NDJSON and the lake alone have none.
    report = HealedRunReport(command=command, table=options["table"] if options["db"] else None,
                       database=Path(options["db"]) if options["db"] else None,
                       lake=options["parquet"])
    return run_reporting(report, options["summary_json"],
                         lambda: _run(command, options, report))


def _run(command: Command, options: dict[str, Any], report: RunReport) -> int:
    from mpexport.cli.progress import BarProgress
    from mpexport.cli.report import summary_line
    from mpexport.cli.verify_heal import check_verify
    from mpexport.environment import Environment
    from mpexport.interrupt import InterruptGuard
    from mpexport.runner import run

    check_verify(options)
    run_opts = run_options(options)
    with progress_shown(options, BarProgress) as progress:
        try:
            # This run's own guard covers the lock wait and the database's close
            # too; signals only record a stop request.
            environment = Environment.from_process()
            with InterruptGuard(stderr=environment.stderr).installed() as guard:
                try:
                    result = run(command, run_opts, progress=progress, guard=guard,
                                 environment=environment)
                except Interrupted as stop:
                    # Still under the guard: a second signal before the resume
                    # command is out undoes the run's additions to --output (the
                    # same command run again then adds each line once); after it,
                    # the file's whole chunks match that command and stay.
                    progress.close()
                    _report_interrupted(stop, options, report, progress.hourly_wait)
                    guard.settle()
                    raise
        except LoaderError as error:
            progress.close()
            _report_loader_failure(error, options, report)
            raise
        except MpexportError as error:
            report.from_date, report.to_date = error.run_range or (None, None)
            raise
    report.from_date, report.to_date = result.from_date, result.to_date
    report.load = result.load
    code = ended(result, report, options["quiet"], lambda: summary_line(report),
                 lambda: _report_failures(result.failed, options, report))
    if options.get("verify") and not result.plan and code == 0:
        from mpexport.cli.verify_heal import heal

        code = heal(command, run_opts, result, options, report)
    return code


# Never repeated in a resume command: its dates are new, and these only print.
_NOT_RETRIED = DISPLAY_ONLY | {"from_date", "to_date", "dry_run", "lookback", "verify"}


def retry_args(options: dict[str, Any]) -> list[str]:
    """The options the user gave that, with new dates, repeat this run for part of its range.

    Rebuilt from what was typed (click's parameter sources), so defaults and
    environment variables stay where they were: in the environment.
    """
    context = click.get_current_context()
    args: list[str] = []
    for param in context.command.params:
        name = param.name
        if (not isinstance(param, click.Option) or name is None or not param.expose_value
                or name in _NOT_RETRIED
                or not given_on_command_line(name)):
            continue
        flag = max(param.opts, key=len)  # the long form
        value = options[name]
        if param.is_flag:
            args += [flag] if value else []
            continue
        for item in value if param.multiple else [value]:
            args += [flag, f"{item:g}" if isinstance(item, float) else str(item)]
    if context.command.name == "sync" and "--refresh" not in args:
        args.append("--refresh")  # those days were loaded before: fetch them again
    if options.get("output") and "--append" not in args:
        args.append("--append")  # the resume adds to the file the run wrote
    return args


def _rerun(ranges: Iterable[tuple[dt.date, dt.date]], options: dict[str, Any],
           report: RunReport) -> None:
    from mpexport.cli.shell import quoted_commands

    commands = [["mpexport", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                 *retry_args(options)] for start, end in ranges]
    report.rerun.extend(commands)
    if not options["quiet"]:
        if options["db"] is None and options["parquet"] is None and not options.get("output"):
            # Typed again with the run's own "> FILE", it would empty the file first.
            which = "the command" if len(commands) == 1 else "each command"
            echo_err(f"mpexport: append the output of {which} below to this run's: '>> FILE', "
                     "not '> FILE' (which overwrites it), or add --output FILE --append")
        for line in quoted_commands(commands):
            echo_err(line)


def _report_failures(failed: list[ChunkFailure], options: dict[str, Any],
                     report: RunReport) -> None:
    from mpexport.plan import merge_ranges

    echo_err(f"mpexport: {len(failed)} chunks failed after their retries:")
    for failure in failed:
        echo_err(f"  {failure.chunk.label()}: {failure.reason}")
    if not options["quiet"]:
        echo_err("retry just those with:")
    _rerun(merge_ranges([f.chunk for f in failed]), options, report)


def _report_loader_failure(error: LoaderError, options: dict[str, Any],
                           report: RunReport) -> None:
    """Which days the failed loader committed, and the command that loads the rest."""
    report.from_date, report.to_date = error.run_range or (None, None)
    report.load = error.load  # type: ignore[assignment]
    listed = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in error.committed) or "none"
    echo_err(f"mpexport: the loader stopped after committing {error.chunks_committed} chunks "
             f"(days {listed}); nothing of the chunk it was loading was stored")
    if error.missing:
        echo_err("to load the rest, fix the cause above, then run:")
        _rerun(error.missing, options, report)


def _report_interrupted(stop: Interrupted, options: dict[str, Any], report: RunReport,
                        hourly_wait: WaitingForBudget | None = None) -> None:
    """What a stopped run did, and the commands that resume it (``hourly_wait``: its last)."""
    import time

    from mpexport.cli.progress import clock_time
    from mpexport.model import ExportResult

    report.from_date, report.to_date = stop.run_range or (None, None)
    to_db = options["db"] is not None or options["parquet"] is not None
    result = stop.result
    if not isinstance(result, ExportResult):
        echo_err(f"mpexport: {stop.signal_name}: stopped before anything was fetched")
        return
    report.result, report.load = result, result.load
    output = options.get("output") or "stdout"
    where = "only whole chunks were committed" if to_db else f"{output} ends on a whole line"
    echo_err(f"mpexport: {stop.signal_name}: stopped after {result.seconds:.1f}s; "
             f"{len(result.completed)}/{result.chunks_total} chunks fetched, {where}")
    if hourly_wait is not None and hourly_wait.until is not None and (
            hourly_wait.until > time.time()):
        # Stopped while waiting for the hour: a resume now would wait as long.
        echo_err(f"mpexport: Mixpanel's hourly budget frees up at "
                 f"{clock_time(hourly_wait.until)}; until then a resume waits for it")
    if to_db:
        echo_err("to resume, run the same command again: loaded chunks are not fetched again")
        return
    if stop.partial is not None:
        start, end = stop.partial
        echo_err(f"mpexport: {output} ends with part of {start.isoformat()}.."
                 f"{end.isoformat()} (whole lines); the commands below fetch all of it again")
    if stop.remaining:
        echo_err("to fetch what is missing, run:")
        _rerun(stop.remaining, options, report)
