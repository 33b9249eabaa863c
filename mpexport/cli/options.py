"""Pieces every command shares: help texts, option groups, stderr output."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mpexport.mixpanel.regions import REGIONS
from mpexport.options import (
    HOURLY_LIMIT_ENV,
    PROJECT_TIMEZONE_ENV,
    QPS_LIMIT_ENV,
    RunOptions,
)

if TYPE_CHECKING:
    from mpexport.cli.summary import Report

F = TypeVar("F", bound=Callable[..., Any])

# The rows every command shares; each command's table adds its own 0 and 1.
_USAGE = """\
  2    bad usage or parameters (also HTTP 400 from Mixpanel)"""
_CREDENTIALS = """\
  3    credentials or permission (missing, or HTTP 401/402/403)"""
_LOCKED = """\
  4    the database is locked by another run"""
_INTERNAL = """\
  70   internal error (a bug: please report it, with --debug's traceback)"""
_STOPPED = """\
  130  interrupted (Ctrl-C, Ctrl-Break, SIGINT); 143 terminated (SIGTERM,
       POSIX only)"""


def exit_codes(*rows: str) -> str:
    """A ``--help`` exit-code table of ``rows`` (each as click prints it: not rewrapped)."""
    return "\n".join(["\b", "Exit codes:", *rows])


EXIT_CODES_HELP = exit_codes("""\
  0    complete (each command's --help lists its own codes)
  1    failed after retries: chunks or pages, the loader, check's request,
       or writing the output (stderr names them and the command that resumes)""",
                             _USAGE, _CREDENTIALS, _LOCKED, _INTERNAL, _STOPPED)
"""The exit codes of every command, for ``mpexport --help``."""

EXPORT_EXIT_CODES = exit_codes("""\
  0    complete: every chunk arrived whole
  1    failed after retries: some chunks, the loader, or writing the output
       (stderr names them and the command that resumes)""",
                               _USAGE, _CREDENTIALS, _LOCKED, _INTERNAL, _STOPPED)

PROFILES_EXIT_CODES = exit_codes("""\
  0    complete: every page arrived and the profiles were written
  1    failed after retries: some pages, the table or the output (stderr says
       what; a rerun fetches only the missing pages), or a full export that
       listed no profiles kept a table that holds some (see --allow-empty)""",
                                 _USAGE, _CREDENTIALS, _LOCKED, _INTERNAL, _STOPPED)

CHECK_EXIT_CODES = exit_codes("""\
  0    the credentials can export the project
  1    Mixpanel did not answer the check after its retries (network, 5xx)""",
                              """\
  2    bad usage (an unknown profile, a bad --region or --api-url)
  3    no credentials, or refused in every region (HTTP 401/402/403)""",
                              _INTERNAL, """\
  130  interrupted (Ctrl-C, Ctrl-Break, SIGINT)""")

CREDENTIALS_HELP = """\b
Credentials come from the environment or a profile, never the command line:
  MP_USERNAME, MP_SECRET, MP_PROJECT_ID   a service account (recommended)
  MP_OAUTH_TOKEN, MP_PROJECT_ID           an OAuth bearer token (it expires)
  MP_API_SECRET                           a legacy project secret
  --profile NAME                          saved by 'mpexport config init'"""
FETCH_EPILOG = CREDENTIALS_HELP + "\n\n" + EXPORT_EXIT_CODES
"""The ``--help`` epilog of export and sync."""

PROFILES_EPILOG = CREDENTIALS_HELP + "\n\n" + PROFILES_EXIT_CODES
"""The ``--help`` epilog of profiles."""

# 80 columns at most, whatever the terminal: help reads like gh's and the
# README shows it as printed.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 80}

# The headings of a command's options in --help, in this order (gh and rclone
# group theirs so); options of no heading come last, under "Options".
RANGE = "Range and filters"
PROFILES_CHOSEN = "Which profiles"
DESTINATION = "Destination"
PACING = "Pacing"
CREDENTIALS = "Credentials and project"
OUTPUT = "Output and logging"
HEADINGS = (RANGE, PROFILES_CHOSEN, DESTINATION, PACING, CREDENTIALS, OUTPUT)


class GroupedOption(click.Option):
    """An option that names the heading it is listed under in ``--help`` (``help_group``)."""

    def __init__(self, *args: Any, help_group: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_group = help_group


def option(*names: str, group: str, **settings: Any) -> Callable[[F], F]:
    """``click.option`` listed under the heading ``group`` of a :class:`GroupedCommand`."""
    return click.option(*names, cls=GroupedOption, help_group=group, **settings)


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options under headings, not as one list.

    Each option's heading is its ``help_group`` (see :func:`option`); ``-h``
    goes with output and logging, anything else under "Options".
    """

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write one section per heading, in the order of :data:`HEADINGS`."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            group = getattr(param, "help_group", None)
            if group is None and set(param.opts) & set(ctx.help_option_names):
                group = OUTPUT
            sections.setdefault(group or "Options", []).append(record)
        for heading in (*HEADINGS, "Options"):
            if heading in sections:
                with formatter.section(heading):
                    formatter.write_dl(sections[heading])


_DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("mpexport_debug", default=False)


class RunState:
    """The switches of the current CLI invocation, set by options (read by the error handler).

    They belong to one invocation: the outermost command resets them when it
    parses its options, so a second ``cli.run()`` in the same process (tests,
    a notebook) does not inherit the first one's ``--debug``. Kept in a
    context variable, so threads running the CLI do not share them either.
    """

    @property
    def debug(self) -> bool:
        """``--debug`` was given (on the group or on the command)."""
        return _DEBUG.get()

    @debug.setter
    def debug(self, value: bool) -> None:
        _DEBUG.set(value)

    def reset(self) -> None:
        """Back to the defaults, for the start of an invocation."""
        _DEBUG.set(False)


State = RunState()
"""The current invocation's switches (an instance: nothing is kept on a class)."""


def echo_err(text: str) -> None:
    """One line on stderr."""
    click.echo(text, err=True)


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    # --debug sits on the group and on each command; the outermost context
    # starts the invocation, so it sets the switch, and an inner one can
    # only add to it (``mpexport --debug export`` keeps it on).
    if ctx.parent is None:
        State.debug = value
    elif value:
        State.debug = True
    return value


def debug_option(function: F) -> F:
    """``--debug``: tracebacks for errors (on the group and on each command)."""
    return option("--debug", group=OUTPUT, is_flag=True, expose_value=False, is_eager=True,
                  callback=_set_debug, help="Show tracebacks for errors.")(function)


def _compose(function: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        function = option(function)
    return function


def date_help(which: str) -> str:
    """Help text of a date option."""
    return f"{which} day, inclusive: YYYY-MM-DD, today, yesterday or -N (N days ago)."


def server_options(function: F) -> F:
    """Where Mixpanel is and which project, the same for events and profiles."""
    return _compose(function, [
        option("--region", group=CREDENTIALS,
               type=click.Choice(REGIONS, case_sensitive=False), default=None,
               help="Data residency region [default: MP_REGION with MP_* credentials, "
                    "the profile's region with a profile, else us]."),
        option("--api-url", group=CREDENTIALS, metavar="URL",
               help="Replace scheme and host (a proxy or the built-in server)."),
        option("--project-id", group=CREDENTIALS, type=int,
               help="Project id [env MP_PROJECT_ID]."),
    ])


def fetch_options(function: F) -> F:
    """Options of every command that fetches: filters, speed, region, credentials."""
    return _compose(function, [
        option("--workers", group=PACING, type=int, default=RunOptions.workers,
               show_default=True,
               help="Parallel requests (1 = sequential; never more than chunks)."),
        option("--chunk-days", group=PACING, type=int, default=None,
               help="Days per request [default: planned to fit the hourly budget and "
                    "balance the workers]."),
        option("--retries", group=PACING, type=int, default=RunOptions.retries,
               show_default=True,
               help="Further attempts of a failing chunk before it counts as failed "
                    "(429s do not count)."),
        option("--qps-limit", group=PACING, type=float, default=RunOptions.qps_limit,
               show_default=True,
               envvar=QPS_LIMIT_ENV,
               help="Request starts per second, shared by runs on this machine "
                    "[env MPEXPORT_QPS_LIMIT]."),
        option("--hourly-limit", group=PACING, type=int, default=RunOptions.hourly_limit,
               show_default=True,
               envvar=HOURLY_LIMIT_ENV,
               help="Request starts per rolling hour, shared by runs on this machine "
                    "[env MPEXPORT_HOURLY_LIMIT]."),
        option("--event", "events", group=RANGE, multiple=True, metavar="NAME",
               help="Only this event (repeat for several)."),
        option("--where", group=RANGE, metavar="EXPR",
               help='Mixpanel filter, e.g. \'properties["$os"]=="Linux"\'.'),
        option("--limit", group=RANGE, type=int,
               help="Cap on events per request (at most 100000)."),
        server_options,
        option("--profile", group=CREDENTIALS, metavar="NAME",
               help="Saved profile to use (see 'mpexport config init') [default: "
                    "$MPEXPORT_PROFILE, the config's default_profile, else 'default']."),
        option("--project-timezone", group=RANGE, metavar="TZ", envvar=PROJECT_TIMEZONE_ENV,
               help="For projects created before 2023: their IANA time zone. Dates "
                    "and stored times are then read in it [default: UTC]."),
    ])


def output_options(function: F) -> F:
    """Options about what a run prints on stderr."""
    return _compose(function, [
        option("--progress/--no-progress", group=OUTPUT, default=None,
               help="Progress bars on stderr [default: on when stderr is a terminal; "
                    "otherwise a status line every few seconds]."),
        option("-q", "--quiet", group=OUTPUT, is_flag=True, help="Print errors only."),
        option("-v", "--verbose", group=OUTPUT, is_flag=True,
               help="Log each request (method, host, path, parameters, status, timing)."),
        option("--summary-json", group=OUTPUT, metavar="FILE",
               help="Write a machine-readable summary to FILE (- for stderr)."),
        debug_option,
    ])


def database_options(function: F) -> F:
    """Options of commands that load into DuckDB."""
    return _compose(function, [
        option("--table", group=DESTINATION, default=RunOptions.table, show_default=True,
               metavar="NAME", help="Table to load into."),
        option("--parquet", "parquet", group=DESTINATION, metavar="DIR|URL",
               help="Write a day-partitioned Parquet dataset (date=YYYY-MM-DD) to a "
                    "folder or to s3://, gs:// or az:// (credentials from AWS_*, "
                    "GOOGLE_*, AZURE_* variables); without --db it is the output."),
        option("--memory-limit", group=DESTINATION, metavar="SIZE",
               envvar="MPEXPORT_MEMORY_LIMIT",
               help="Memory budget of the DuckDB loader, e.g. 512MB or 2GB; a smaller "
                    "one loads the same data more slowly (at least 96MB) "
                    "[default: 256MB on 2 cores, more with more cores and memory "
                    "(mpexport --version says); env MPEXPORT_MEMORY_LIMIT]."),
        option("--wait-lock", group=DESTINATION, type=float, default=RunOptions.wait_lock,
               metavar="SECONDS",
               help="If another run holds the database or the lake, wait this long for it "
                    "[default: exit 4 at once]."),
    ])


def configure_logging(verbose: bool, quiet: bool,
                      write: Callable[[str], None] | None = None) -> None:
    """Send the ``mpexport`` logger to stderr with our prefix, at the level the flags ask.

    Warnings show unless ``-q``; ``-v`` adds each request. With ``write``
    (a progress display's), each line goes through it, above the bars.
    """
    import logging
    import sys

    class LineHandler(logging.Handler):
        """Each record as one line, written by ``write`` (from any thread)."""

        def emit(self, record: logging.LogRecord) -> None:
            assert write is not None
            try:
                write(self.format(record))
            except Exception:
                self.handleError(record)

    logger = logging.getLogger("mpexport")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr) if write is None else LineHandler()
    handler.setFormatter(logging.Formatter("mpexport: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


def progress_mode(options: dict[str, Any]) -> str:
    """``quiet``, ``bars`` or ``lines`` from ``-q`` and ``--progress/--no-progress``."""
    import sys

    if options["quiet"]:
        return "quiet"
    if options["progress"] is None:
        return "bars" if sys.stderr.isatty() else "lines"
    return "bars" if options["progress"] else "lines"


def print_plan(lines: Iterable[str]) -> None:
    """A dry run's plan on stdout (it is the requested output); `| head` ends it quietly."""
    import sys

    from mpexport.errors import OutputClosed, reader_gone

    try:
        for line in lines:
            click.echo(line)
        sys.stdout.flush()
    except OSError as error:
        # Raised as our own error: click would turn a broken pipe into exit 1.
        if reader_gone(error):
            raise OutputClosed() from error
        raise


def run_reporting(report: Report[Any], summary_json: str | None,
                  body: Callable[[], int]) -> int:
    """Run ``body``; write the summary JSON whatever happens; return the exit code.

    The code comes from :func:`~mpexport.errors.exit_code_for`, as the
    process's does, so the two cannot disagree.
    """
    from mpexport.cli.summary import check_summary_target
    from mpexport.errors import ExitCode, MpexportError, exit_code_for

    if summary_json:
        check_summary_target(summary_json)
    code = int(ExitCode.OK)
    written = True
    try:
        code = body()
    except BaseException as exc:
        code = exit_code_for(exc)
        report.error = exc.one_line() if isinstance(exc, MpexportError) else str(exc) or None
        raise
    finally:
        if summary_json:
            try:
                report.write_json(summary_json, code)
            except OSError as exc:  # never hide the run's own outcome behind this
                echo_err(f"mpexport: could not write the summary JSON: {exc}")
                written = False
    if not written and code == ExitCode.OK:
        # Whoever reads that file would see a stale run as this one.
        return int(ExitCode.PARTIAL)
    return code
