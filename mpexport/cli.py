"""The ``mpexport`` command tree. Only argument handling lives here.

Every command calls the library; :func:`run` is the one place that turns
exceptions into exit codes and one-line messages.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mpexport import __version__
from mpexport.errors import ExitCode, Interrupted, MpexportError, OutputClosed, exit_code_for
from mpexport.interrupt import GUARD

if TYPE_CHECKING:
    from mpexport.api import ExportRequest
    from mpexport.model import ExportResult
    from mpexport.sink_duckdb import DuckDBSink

EXIT_CODES_HELP = """\b
Exit codes:
  0    complete: every chunk arrived whole
  1    partial: some chunks failed after their retries (stderr names them)
  2    bad usage or parameters (also HTTP 400 from Mixpanel)
  3    credentials or permission (HTTP 401/402/403)
  4    the database is locked by another run
  130  interrupted (SIGINT), 143 terminated (SIGTERM)"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _State:
    debug = False


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="mpexport")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Export raw events from Mixpanel, fast and exactly once.

    \b
    Quick start (no credentials needed):
      mpexport demo
    Real export to stdout:
      export MP_USERNAME=... MP_SECRET=... MP_PROJECT_ID=...
      mpexport export --from 2024-01-01 --to 2024-03-31 | jq -c 'select(.event=="Purchase")'
    """
    _State.debug = debug


def _date_help(which: str) -> str:
    return f"{which} day, inclusive: YYYY-MM-DD, today, yesterday or -N (N days ago)."


@cli.command("export", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.option("--from", "from_date", required=True, metavar="DATE", help=_date_help("First"))
@click.option("--to", "to_date", required=True, metavar="DATE", help=_date_help("Last"))
@click.option("--workers", type=int, default=10, show_default=True,
              help="Parallel requests (1 = sequential; never more than chunks).")
@click.option("--chunk-days", type=int, default=None,
              help="Days per request [default: planned to fit the hourly budget and "
                   "balance the workers].")
@click.option("--qps-limit", type=float, default=3.0, show_default=True,
              envvar="MPEXPORT_QPS_LIMIT",
              help="Request starts per second [env MPEXPORT_QPS_LIMIT].")
@click.option("--hourly-limit", type=int, default=60, show_default=True,
              envvar="MPEXPORT_HOURLY_LIMIT",
              help="Request starts per rolling hour, shared by runs on this machine "
                   "[env MPEXPORT_HOURLY_LIMIT].")
@click.option("--retries", type=int, default=5, show_default=True,
              help="Further attempts of a failing chunk before it counts as failed.")
@click.option("--event", "events", multiple=True, metavar="NAME",
              help="Only this event (repeat for several).")
@click.option("--where", metavar="EXPR",
              help='Mixpanel filter, e.g. \'properties["$os"]=="Linux"\'.')
@click.option("--limit", type=int, help="Cap on events per request (at most 100000).")
@click.option("--region", type=click.Choice(["us", "eu", "in"], case_sensitive=False),
              envvar="MP_REGION", default="us", show_default=True,
              help="Data residency region [env MP_REGION].")
@click.option("--api-url", metavar="URL",
              help="Replace scheme and host (a proxy or the built-in server).")
@click.option("--project-id", type=int, help="Project id [env MP_PROJECT_ID].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: on when stderr is a terminal].")
@click.option("--db", "db_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Load into this DuckDB file instead of writing NDJSON to stdout.")
@click.option("--table", default="events", show_default=True,
              help="Table to load into (with --db).")
@click.option("--refresh", is_flag=True,
              help="With --db: fetch chunks again even if the manifest has them.")
@click.option("--replace", is_flag=True,
              help="With --db: delete each chunk's days before loading it (for data "
                   "deleted upstream); implies --refresh.")
@click.option("--parquet", "parquet_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="With --db: also write a Hive-partitioned Parquet dataset (date=YYYY-MM-DD).")
@click.option("--dry-run", is_flag=True, help="Print the plan to stdout; fetch nothing.")
def export_command(
    from_date: str,
    to_date: str,
    workers: int,
    chunk_days: int | None,
    qps_limit: float,
    hourly_limit: int,
    retries: int,
    events: tuple[str, ...],
    where: str | None,
    limit: int | None,
    region: str,
    api_url: str | None,
    project_id: int | None,
    progress: bool | None,
    db_path: str | None,
    table: str,
    refresh: bool,
    replace: bool,
    parquet_dir: str | None,
    dry_run: bool,
) -> None:
    """Export raw events for a date range as NDJSON on stdout, or into DuckDB.

    Chunks are fetched in parallel, each verified whole before a byte of it
    is written, and written in date order as the exact bytes Mixpanel sent.
    Messages, bars and the summary go to stderr only.

    \b
    Credentials come from the environment, never from the command line:
      MP_USERNAME, MP_SECRET, MP_PROJECT_ID   a service account (recommended)
      MP_API_SECRET                           a legacy project secret

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
    from mpexport.api import (
        DatabaseTarget,
        build_request,
        describe_plan,
        open_database,
        run_export,
    )
    from mpexport.credentials import credentials_from_env

    request = build_request(
        from_date, to_date, workers=workers, chunk_days=chunk_days, events=events,
        where=where, limit=limit, region=region, api_url=api_url, retries=retries,
        qps_limit=qps_limit, hourly_limit=hourly_limit,
    )
    if db_path is None and (refresh or replace or parquet_dir or table != "events"):
        raise click.UsageError("--table, --refresh, --replace and --parquet need --db FILE")
    if dry_run:
        try:
            credentials = credentials_from_env(project_id=project_id)
        except MpexportError:
            credentials = None
        for line in describe_plan(request, credentials):
            click.echo(line)
        return
    credentials = credentials_from_env(project_id=project_id)
    retry_args = _retry_args(events, where, limit, region, api_url, project_id, chunk_days,
                             workers)
    database = None
    if db_path is not None:
        target = DatabaseTarget(Path(db_path), table, replace, refresh,
                                Path(parquet_dir) if parquet_dir else None)
        database = open_database(target, request)
        retry_args += ["--db", db_path] + (["--table", table] if table != "events" else [])
    with GUARD.installed() as guard:
        try:
            result = _run_with_progress(
                lambda callback: run_export(request, credentials, database=database,
                                            progress=callback, guard=guard),
                progress,
            )
        except Interrupted as stop:
            _report_interrupted(stop, retry_args, database is not None)
            raise
    _report(result, request, retry_args, database)
    if not result.ok:
        raise SystemExit(int(ExitCode.PARTIAL))


def _run_with_progress(job: Any, progress: bool | None) -> ExportResult:
    from mpexport.progress import BarProgress

    enabled = sys.stderr.isatty() if progress is None else progress
    bars = BarProgress(sys.stderr, enabled=enabled)
    try:
        result: ExportResult = job(bars)
    finally:
        bars.close()
    return result


def _retry_args(
    events: tuple[str, ...], where: str | None, limit: int | None, region: str,
    api_url: str | None, project_id: int | None, chunk_days: int | None, workers: int,
) -> list[str]:
    args: list[str] = []
    for name in events:
        args += ["--event", name]
    if where:
        args += ["--where", where]
    if limit is not None:
        args += ["--limit", str(limit)]
    if region.lower() != "us":
        args += ["--region", region]
    if api_url:
        args += ["--api-url", api_url]
    if project_id is not None:
        args += ["--project-id", str(project_id)]
    if chunk_days is not None:
        args += ["--chunk-days", str(chunk_days)]
    if workers != 10:
        args += ["--workers", str(workers)]
    return args


def _rerun_commands(ranges: list[tuple[dt.date, dt.date]], retry_args: list[str]) -> None:
    for start, end in ranges:
        command = ["mpexport", "export", "--from", start.isoformat(), "--to", end.isoformat(),
                   *retry_args]
        _echo_err("  " + shlex.join(command))


def _report_interrupted(stop: Interrupted, retry_args: list[str], to_db: bool) -> None:
    from mpexport.model import ExportResult

    result = stop.result
    if isinstance(result, ExportResult):
        where = ("only whole chunks were committed" if to_db
                 else "stdout ends on a whole line")
        _echo_err(f"mpexport: {stop.signal_name}: stopped after {result.seconds:.1f}s; "
                  f"{len(result.completed)}/{result.chunks_total} chunks fetched, {where}")
    if to_db:
        _echo_err("to resume, run the same command again: loaded chunks are not fetched again")
    elif stop.remaining:
        _echo_err("to fetch what is missing, run:")
        _rerun_commands(stop.remaining, retry_args)


def _report(
    result: ExportResult, request: ExportRequest, retry_args: list[str],
    database: DuckDBSink | None = None,
) -> None:
    from mpexport.plan import merge_ranges

    done = len(result.completed)
    span = f"{request.from_date.isoformat()}..{request.to_date.isoformat()}"
    if database is None:
        _echo_err(
            f"mpexport: {result.events} events in {done}/{result.chunks_total} chunks, "
            f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f}s ({span})"
        )
    else:
        stats = database.stats
        skipped = f", {len(result.skipped)} already loaded" if result.skipped else ""
        replaced = f", {stats.rows_replaced} replaced" if stats.rows_replaced else ""
        _echo_err(
            f"mpexport: loaded {stats.rows_inserted} events into {database.db_path} "
            f"table {database.table} ({stats.duplicates_skipped} duplicates skipped{replaced}); "
            f"{done}/{result.chunks_total} chunks{skipped}, {result.bytes / 1e6:.1f} MB, "
            f"{result.seconds:.1f}s ({span})"
        )
    if not result.failed:
        return
    _echo_err(f"mpexport: {len(result.failed)} chunks failed after their retries:")
    for failure in result.failed:
        _echo_err(f"  {failure.chunk.label()}: {failure.reason}")
    _echo_err("retry just those with:")
    _rerun_commands(merge_ranges([f.chunk for f in result.failed]), retry_args)


@cli.command("fake-server", context_settings=CONTEXT)
@click.option("--port", type=int, default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 = any).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the event data.")
@click.option("--events-per-day", type=int, default=500, show_default=True,
              help="Average events per day.")
@click.option("--ttfb", type=float, default=0.0, show_default=True,
              help="Seconds before the first byte of each response.")
@click.option("--bandwidth", type=int, default=None,
              help="Bytes per second per connection (default unlimited).")
def fake_server_command(
    port: int, seed: int, events_per_day: int, ttfb: float, bandwidth: int | None
) -> None:
    """Serve a Mixpanel-compatible export API on loopback, for trying mpexport.

    Prints its URL and demo credentials; Ctrl-C stops it.

    \b
    Example:
      mpexport fake-server --port 8765 &
      MP_USERNAME=... MP_SECRET=... MP_PROJECT_ID=... \\
        mpexport export --api-url http://127.0.0.1:8765 --from -30 --to yesterday
    """
    from mpexport.fakeserver import (
        DEMO_API_SECRET,
        DEMO_PROJECT_ID,
        DEMO_SECRET,
        DEMO_USERNAME,
        Dataset,
        FakeMixpanelServer,
        ServerConfig,
    )

    config = ServerConfig(dataset=Dataset(seed=seed, events_per_day=events_per_day),
                          ttfb=ttfb, bandwidth=bandwidth)
    server = FakeMixpanelServer(config, port=port)
    _echo_err(f"mpexport fake server listening on {server.url}")
    _echo_err("demo credentials (not secret; they only open this server):")
    _echo_err(f"  export MP_USERNAME={DEMO_USERNAME} MP_SECRET={DEMO_SECRET} "
              f"MP_PROJECT_ID={DEMO_PROJECT_ID}")
    _echo_err(f"  or the legacy form: export MP_API_SECRET={DEMO_API_SECRET}")
    _echo_err(f"  mpexport export --api-url {server.url} --from -7 --to yesterday | head")
    server.serve_forever()


@cli.command("demo", context_settings=CONTEXT)
@click.option("--days", type=int, default=60, show_default=True, help="Days to export.")
@click.option("--events-per-day", type=int, default=2000, show_default=True,
              help="Average events per day on the built-in server.")
@click.option("--output", "output", default="demo.duckdb", show_default=True,
              type=click.Path(dir_okay=False),
              help="DuckDB file the demo loads (created if missing).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: on when stderr is a terminal].")
def demo_command(days: int, events_per_day: int, output: str, progress: bool | None) -> None:
    """Run the main job against the built-in server: no credentials, loopback only.

    Starts the Mixpanel-compatible server on 127.0.0.1 with some faults
    switched on (resets, truncated bodies, 5xx, 429), exports the last DAYS
    days in parallel into a DuckDB file, and checks the table holds exactly
    the server's events, each once. Run it twice: the second run finds every
    chunk already loaded and fetches nothing.
    """
    from mpexport.demo import run_demo

    code = run_demo(days=days, events_per_day=events_per_day, output=output,
                    progress=progress, run=_run_with_progress, echo=_echo_err)
    if code:
        raise SystemExit(code)


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head`): point stdout at devnull so the
    # interpreter's final flush does not complain, and end quietly.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place where exceptions become exit codes."""
    try:
        returned = cli.main(args=argv, prog_name="mpexport", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        # One line, as for every other error: what is wrong and where help is.
        command = exc.ctx.command_path if exc.ctx else "mpexport"
        _echo_err(f"mpexport: error: {exc.format_message()} (see '{command} --help')")
        return int(ExitCode.USAGE)
    except click.ClickException as exc:
        _echo_err(f"mpexport: error: {exc.format_message()}")
        return int(ExitCode.USAGE)
    except click.Abort:
        _echo_err("mpexport: interrupted")
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except (BrokenPipeError, OutputClosed):
        _quiet_broken_pipe()
        return int(ExitCode.OK)
    except KeyboardInterrupt:
        _echo_err("mpexport: interrupted")
        return int(ExitCode.INTERRUPTED)
    except Interrupted as exc:
        if _State.debug:
            traceback.print_exc()
        return int(exc.exit_code)
    except MpexportError as exc:
        if _State.debug:
            traceback.print_exc()
        _echo_err(f"mpexport: error: {exc.one_line()}")
        return int(exc.exit_code)
    except Exception as exc:
        if _State.debug:
            traceback.print_exc()
        _echo_err(f"mpexport: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for a traceback, and please report it)")
        return int(exit_code_for(exc))
    # click returns the exit code of --help/--version instead of raising.
    return returned if isinstance(returned, int) else int(ExitCode.OK)
