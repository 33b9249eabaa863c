"""``mpexport verify``: compare a table or a lake with Mixpanel's own daily counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mpexport.cli.options import (
    CONTEXT,
    CREDENTIALS_HELP,
    date_help,
    echo_err,
    output_options,
    run_reporting,
    server_options,
)
from mpexport.errors import ExitCode
from mpexport.options import HOURLY_LIMIT_ENV, PROJECT_TIMEZONE_ENV, QPS_LIMIT_ENV
from mpexport.verify.options import VerifyOptions

if TYPE_CHECKING:
    from mpexport.cli.verify_report import VerifyReport
    from mpexport.verify.model import VerifyEvent, VerifyResult

_D = VerifyOptions()

EXIT_CODES = """\b
Exit codes:
  0    every count matches Mixpanel's
  1    a count differs (the table and the refetch command say where), or a
       query failed after its retries
  2    bad usage or parameters (also HTTP 400 from Mixpanel)
  3    credentials or permission (missing, or HTTP 401/402/403)
  4    a run is writing the database, or another program has it open
  70   internal error (a bug: please report it, with --debug's traceback)
  130  interrupted (Ctrl-C)"""


@click.command("verify", context_settings=CONTEXT, epilog=CREDENTIALS_HELP + "\n\n" + EXIT_CODES)
@click.option("--db", metavar="FILE", type=click.Path(dir_okay=False),
              help="The DuckDB file to check (opened read-only).")
@click.option("--table", default=_D.table, show_default=True, help="With --db: the table.")
@click.option("--parquet", metavar="DIR|URL",
              help="Check this Parquet lake (a folder or s3://, gs://, az://) instead.")
@click.option("--from", "from_date", metavar="DATE",
              help=date_help("First") + " [default: the first day stored]")
@click.option("--to", "to_date", metavar="DATE",
              help=date_help("Last") + " [default: the last day stored]")
@click.option("--event", "events", multiple=True, metavar="NAME",
              help="Also compare this event name where none is stored (repeat for several) "
                   "[default: the names stored].")
@click.option("--days-per-query", type=int, default=None, metavar="DAYS",
              help="Days one query counts [default: up to 92, planned].")
@click.option("--lookback", type=int, default=_D.lookback, show_default=True, metavar="DAYS",
              help="Days before today whose differences are called still settling.")
@click.option("--retries", type=int, default=_D.retries, show_default=True,
              help="Further attempts of a failing query (429s do not count).")
@click.option("--qps-limit", type=float, default=_D.qps_limit, show_default=True,
              envvar=QPS_LIMIT_ENV,
              help="Request starts per second, shared by runs on this machine "
                   "[env MPEXPORT_QPS_LIMIT].")
@click.option("--hourly-limit", type=int, default=_D.hourly_limit, show_default=True,
              envvar=HOURLY_LIMIT_ENV,
              help="Queries per rolling hour, shared by runs on this machine (the Query "
                   "API allows 60) [env MPEXPORT_HOURLY_LIMIT].")
@server_options
@click.option("--profile", metavar="NAME",
              help="Saved credentials profile to use (see 'mpexport config init').")
@click.option("--project-timezone", metavar="TZ", envvar=PROJECT_TIMEZONE_ENV,
              help="For projects created before 2023: their IANA time zone; days are "
                   "then the zone's [default: UTC].")
@click.option("--dry-run", is_flag=True,
              help="Print the queries the check takes and how long the budget makes them; "
                   "fetch nothing.")
@output_options
def verify_command(**options: Any) -> None:
    """Check a DuckDB table or a Parquet lake against Mixpanel's own daily counts.

    For each day and event name stored, the stored events are counted and
    compared with the Query API's aggregate event counts (which count copies
    of one event once, as the table does). Several event names and days go
    in each query, paced within the Query API's limits (60 queries an hour,
    5 at once) and the hour shared with earlier runs. Prints a one-line
    verdict; when a count differs, a table of the differences (worst first)
    and the command that fetches those days again. Differences on the last
    --lookback days are called still settling: late events may still come.
    Event names never stored are not checked.

    \b
    Examples:
      mpexport verify --db events.duckdb
      mpexport verify --db events.duckdb --from 2024-01-01 --to 2024-03-31
      mpexport verify --parquet s3://bucket/events --summary-json verify.json
      mpexport verify --db events.duckdb --dry-run
    """
    raise SystemExit(_execute(options))


def _execute(options: dict[str, Any]) -> int:
    from mpexport.cli.verify_report import VerifyReport

    report = VerifyReport(output=options["db"] or options["parquet"] or "",
                          table=options["table"] if options["db"] else None)
    return run_reporting(report, options["summary_json"], lambda: _run(options, report))


def verify_options(options: dict[str, Any]) -> VerifyOptions:
    """The :class:`VerifyOptions` of the parsed command line (the library's input)."""
    from mpexport.cli.running import DISPLAY_ONLY

    values = {k: v for k, v in options.items() if k not in DISPLAY_ONLY}
    values["db"] = Path(values["db"]) if values.get("db") else None
    values["events"] = tuple(values.get("events", ()))
    return VerifyOptions(**values)


def notes(quiet: bool) -> Any:
    """The progress callback of a check: its notes, retries and waits on stderr."""
    from mpexport.cli.progress import describe, failed_note, retry_note
    from mpexport.verify.model import QueryFailed, QueryRetry

    def tell(event: VerifyEvent) -> None:
        if isinstance(event, QueryRetry):
            text: str | None = retry_note(f"query {event.query.label()}", event.attempt,
                                          event.reason, event.delay)
        elif isinstance(event, QueryFailed):
            failure = event.failure
            text = failed_note(f"query {failure.query.label()}", failure.attempts,
                               failure.reason)
        else:
            text = describe(event)
        if text and not quiet:
            echo_err(text)

    return tell


def store_flags(options: dict[str, Any]) -> list[str]:
    """The flags a refetch needs to reach the same store and project (as typed)."""
    from mpexport.cli.running import given_on_command_line

    flags: list[str] = []
    if options.get("db"):
        flags += ["--db", str(options["db"])]
        if given_on_command_line("table"):
            flags += ["--table", options["table"]]
    elif options.get("parquet"):
        flags += ["--parquet", options["parquet"]]
    for name, flag in (("api_url", "--api-url"), ("region", "--region"),
                       ("project_id", "--project-id"), ("profile", "--profile"),
                       ("project_timezone", "--project-timezone")):
        if options.get(name) is not None and given_on_command_line(name):
            flags += [flag, str(options[name])]
    return flags


def _run(options: dict[str, Any], report: VerifyReport) -> int:
    from mpexport.cli.options import configure_logging, print_plan
    from mpexport.cli.verify_report import refetch_commands, tell
    from mpexport.environment import Environment
    from mpexport.interrupt import InterruptGuard
    from mpexport.startup import RunSetup
    from mpexport.verify.heal import differing_ranges
    from mpexport.verify.runner import run_verify

    configure_logging(options["verbose"], options["quiet"])
    checked = verify_options(options)
    environment = Environment.from_process()
    with InterruptGuard(stderr=environment.stderr).installed() as guard:
        result = run_verify(checked, progress=notes(options["quiet"]),
                            setup=RunSetup(environment, guard=guard))
    if result.plan:
        print_plan(result.plan)
        return int(ExitCode.OK)
    report.result = result
    report.rerun = refetch_commands(differing_ranges(result.differing_days),
                                    store_flags(options))
    tell(result, checked.lookback, options["quiet"], echo_err, report.rerun)
    return int(ExitCode.OK if result.matches else ExitCode.PARTIAL)


def exit_code(result: VerifyResult) -> int:
    """0 when every count matches, else 1."""
    return int(ExitCode.OK if result.matches else ExitCode.PARTIAL)
