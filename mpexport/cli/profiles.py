"""``mpexport profiles``: user and group profiles (the Query API's engage) as NDJSON or DuckDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mpexport.cli.options import (
    CONTEXT,
    CREDENTIALS,
    DESTINATION,
    OUTPUT,
    PACING,
    PROFILES_CHOSEN,
    PROFILES_EPILOG,
    GroupedCommand,
    echo_err,
    option,
    output_options,
    run_reporting,
    server_options,
)
from mpexport.cli.running import ended, library_values, progress_shown
from mpexport.errors import Interrupted
from mpexport.options import HOURLY_LIMIT_ENV, QPS_LIMIT_ENV
from mpexport.profile_export.options import ProfileOptions

if TYPE_CHECKING:
    from mpexport.cli.profiles_report import ProfileReport
    from mpexport.profile_export.model import ProfileResult

_D = ProfileOptions()


@click.command("profiles", cls=GroupedCommand, context_settings=CONTEXT,
               epilog=PROFILES_EPILOG)
@option("--where", group=PROFILES_CHOSEN, metavar="EXPR",
        help="Only profiles matching Mixpanel's expression, e.g. "
             "'properties[\"plan\"] == \"pro\"' (the table is upserted, not replaced).")
@option("--cohort", "cohort_id", group=PROFILES_CHOSEN, type=int, metavar="ID",
        help="Only the members of this cohort (the table is upserted, not replaced).")
@option("--group-id", "group_id", group=PROFILES_CHOSEN, metavar="KEY",
        help="Group profiles of this group key (Mixpanel's data_group_id) instead of "
             "users.")
@option("--property", "properties", group=PROFILES_CHOSEN, multiple=True, metavar="NAME",
        help="Keep only this property (repeat for several) [default: all].")
@option("--workers", group=PACING, type=int, default=_D.workers, show_default=True,
        help="Pages fetched at once after page 0 (Mixpanel's Query API allows 5).")
@option("--retries", group=PACING, type=int, default=_D.retries, show_default=True,
        help="Further attempts of a failing page (429s do not count).")
@option("--qps-limit", group=PACING, type=float, default=_D.qps_limit, show_default=True,
        envvar=QPS_LIMIT_ENV,
        help="Request starts per second, shared by runs on this machine (per API and "
             "project) [env MPEXPORT_QPS_LIMIT].")
@option("--hourly-limit", group=PACING, type=int, default=_D.hourly_limit, show_default=True,
        envvar=HOURLY_LIMIT_ENV,
        help="Queries per rolling hour, shared by runs on this machine (per API and "
             "project) [env MPEXPORT_HOURLY_LIMIT].")
@server_options
@option("--profile", group=CREDENTIALS, metavar="NAME",
        help="Saved credentials profile to use (see 'mpexport config init').")
@option("-o", "--output", group=DESTINATION, metavar="FILE", type=click.Path(dir_okay=False),
        help="Write the NDJSON to FILE instead of stdout (put in place whole).")
@option("--db", group=DESTINATION, metavar="FILE", type=click.Path(dir_okay=False),
        help="Load into this DuckDB file instead of writing NDJSON.")
@option("--table", group=DESTINATION, metavar="NAME",
        help="With --db: the table [default: profiles, or group_profiles with "
             "--group-id].")
@option("--memory-limit", group=DESTINATION, metavar="SIZE", envvar="MPEXPORT_MEMORY_LIMIT",
        help="With --db: the loader's memory budget [default: 256MB on 2 cores, "
             "more with more cores; env MPEXPORT_MEMORY_LIMIT].")
@option("--wait-lock", group=DESTINATION, type=float, default=_D.wait_lock, metavar="SECONDS",
        help="With --db: wait this long for another run holding the database "
             "[default: exit 4 at once].")
@option("--allow-empty", group=DESTINATION, is_flag=True,
        help="With --db: let a full export that lists no profiles empty a table that "
             "holds some [default: such a run exits 1 and keeps the table].")
@option("--dry-run", group=OUTPUT, is_flag=True,
        help="Print the query, the pages and how long the hourly budget makes them "
             "take; fetch nothing.")
@output_options
def profiles_command(**options: Any) -> None:
    """Export user profiles (or group profiles) as NDJSON on stdout, or into DuckDB.

    Page 0 opens a Mixpanel session and tells how many profiles there are;
    the other pages are fetched in parallel (5 at once by default), each
    verified whole, within the Query API's limits (60 queries an hour: a
    million profiles take about 17 hours). Each profile appears once, as
    Mixpanel lists it: {"$distinct_id": ..., "$properties": {...}} per line,
    written when every page has arrived.

    With --db, profiles go into a table (distinct_id, properties as sent,
    last_seen, exported_at): a full export replaces the table's snapshot in
    one transaction, a --where or --cohort export upserts its profiles by
    distinct_id. Group profiles go to group_profiles, with a group_key column.
    A full export that lists no profiles keeps a table that holds some and
    exits 1, unless --allow-empty.

    Stopped or failed runs keep their pages: run the same command again and
    only the missing pages are fetched while Mixpanel keeps the session; if
    it expired, or the stored pages are over 24 hours old, the export starts
    again from page 0 (and says so).

    \b
    Examples:
      mpexport profiles --output profiles.ndjson
      mpexport profiles --where 'properties["plan"] == "pro"' --db crm.duckdb
      mpexport profiles --group-id company_id --property '$name' --db crm.duckdb
    """
    raise SystemExit(_execute(options))


def profile_options(options: dict[str, Any]) -> ProfileOptions:
    """The :class:`ProfileOptions` of the parsed command line (the library's input)."""
    database = options["db"] is not None
    return ProfileOptions(**library_values(options, repeated="properties", database=database))


def _execute(options: dict[str, Any]) -> int:
    """Run; write the summary JSON whatever happens; return the exit code."""
    from mpexport.cli.profiles_report import ProfileReport

    run_opts = profile_options(options)
    output = str(run_opts.db or run_opts.output or "stdout")
    report = ProfileReport(output, table=run_opts.table_name if run_opts.db else None)
    return run_reporting(report, options["summary_json"],
                         lambda: _run(run_opts, options, report))


def _run(run_opts: ProfileOptions, options: dict[str, Any], report: ProfileReport) -> int:
    from mpexport.cli.profiles_report import PageProgress
    from mpexport.environment import Environment
    from mpexport.interrupt import InterruptGuard
    from mpexport.profile_export.runner import run_profiles
    from mpexport.startup import RunSetup

    with progress_shown(options, PageProgress) as progress:
        try:
            environment = Environment.from_process()
            with InterruptGuard(stderr=environment.stderr).installed() as guard:
                result = run_profiles(run_opts, progress=progress,
                                      setup=RunSetup(environment, guard=guard))
        except Interrupted as stop:
            progress.close()
            _report_interrupted(stop, run_opts, report)
            raise

    def tell_failures() -> None:
        echo_err(f"mpexport: {len(result.failed)} pages failed after their retries:")
        for failure in result.failed:
            echo_err(f"  page {failure.page}: {failure.reason}")
        echo_err(_resume_hint(run_opts, result))

    return ended(result, report, options["quiet"], report.summary_line, tell_failures)


def _resume_hint(run_opts: ProfileOptions, result: ProfileResult) -> str:
    if not result.pages_total:
        return ("mpexport: page 0, which opens Mixpanel's session, did not arrive; run the "
                "same command again")
    if result.pages_written:  # stopped while writing to stdout or a device
        return (f"mpexport: {run_opts.output or 'stdout'} holds the first "
                f"{result.pages_written} of {result.pages_total} pages; the pages are kept: "
                "run the same command again to write every profile again")
    where = "nothing was written to the table" if run_opts.db else (
        f"nothing was written to {run_opts.output or 'stdout'}")
    return (f"mpexport: {result.pages_stored} of {result.pages_total} pages are stored and "
            f"{where}; run the same command again to fetch only the missing pages while "
            "Mixpanel keeps the session")


def _report_interrupted(stop: Interrupted, run_opts: ProfileOptions,
                        report: ProfileReport) -> None:
    from mpexport.profile_export.model import ProfileResult

    result = stop.result
    if not isinstance(result, ProfileResult):
        echo_err(f"mpexport: {stop.signal_name}: stopped before anything was fetched")
        return
    report.result = result
    echo_err(f"mpexport: {stop.signal_name}: stopped after {result.seconds:.1f}s")
    echo_err(_resume_hint(run_opts, result))
