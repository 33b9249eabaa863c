"""The ``mpexport`` command tree. Only argument handling lives here.

Every command calls the library; :func:`run` is the one place that turns
exceptions into exit codes and one-line messages.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Literal

import click

from mpexport import __version__
from mpexport.cli.config import check_command, config_group
from mpexport.cli.export import export_command, sync_command
from mpexport.cli.options import CONTEXT, EXIT_CODES_HELP, State, debug_option, echo_err
from mpexport.cli.profiles import profiles_command
from mpexport.cli.sql import sql_command
from mpexport.cli.verify import verify_command
from mpexport.errors import (
    ExitCode,
    Interrupted,
    MpexportError,
    OutputClosed,
    exit_code_for,
    reader_gone,
)

if TYPE_CHECKING:
    from mpexport.environment import Environment


def version_text(environment: Environment | None = None) -> str:
    """``mpexport X (Python Y, duckdb Z, requests W; loader budget ...)``: what a bug report needs.

    One line (scripts and the frozen build's tests read it so). The loader
    budget is the one a run on this machine (``environment``, the process's
    by default) chooses without ``--memory-limit``: the variable's or the
    machine's default, with its threads. Nothing heavy is imported: the
    versions come from the installed packages' metadata folders.
    """
    from mpexport.database import loader_budget
    from mpexport.environment import Environment

    parts = [f"Python {sys.version.split()[0]}"]
    parts += [f"{package} {installed_version(package)}" for package in ("duckdb", "requests")]
    environment = environment or Environment.from_process()
    budget = loader_budget(environment)
    return f"mpexport {__version__} ({', '.join(parts)}; loader budget {budget})"


def installed_version(package: str) -> str:
    """``package``'s version, from the name of its ``NAME-VERSION.dist-info`` folder.

    The first folder of ``sys.path`` that holds one wins, as for an import;
    scanning them costs far less than ``importlib.metadata`` (about 15 ms of
    start-up) or the package itself. Without such a folder (an egg install, a
    frozen build that carries the module alone): ``importlib.metadata``, then
    the module's ``__version__``.
    """
    prefix = f"{package}-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a missing folder
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix):-len(".dist-info")]
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        module = importlib.import_module(package)
        return str(getattr(module, "__version__", "unknown"))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


# Without a command: the help on stdout and exit 0, as gh and docker do.
@click.group(context_settings=CONTEXT, epilog=EXIT_CODES_HELP, invoke_without_command=True)
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version,
              help="Show the version (and Python's, duckdb's, requests', the loader's "
                   "memory budget on this machine) and exit.")
@debug_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Export raw events from Mixpanel, fast and exactly once.

    \b
    Quick start (no credentials needed):
      mpexport demo
    Real export to stdout:
      export MP_USERNAME=... MP_SECRET=... MP_PROJECT_ID=...
      mpexport export --from 2024-01-01 --to 2024-03-31 |
        jq -c 'select(.event=="Purchase")'
    Keep a DuckDB file current from cron (the first sync needs --from):
      mpexport sync --db events.duckdb --from 2024-01-01 --quiet
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


cli.add_command(export_command)
cli.add_command(sync_command)
cli.add_command(profiles_command)
cli.add_command(check_command)
cli.add_command(config_group)
cli.add_command(sql_command)
cli.add_command(verify_command)


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
@click.option("--data", "data", type=click.Choice(["small", "realistic"]), default="small",
              show_default=True,
              help="Event data: small (~300-byte events) or realistic (Mixpanel-like "
                   "1-2 kB events with the odd lines real exports hold).")
@click.option("--profiles", "profiles", type=click.IntRange(min=0), default=2500,
              show_default=True,
              help="User profiles the engage endpoint serves to `mpexport profiles` "
                   "(0: no engage endpoint, HTTP 404).")
@click.option("--groups", type=click.IntRange(min=0), default=50, show_default=True,
              help="Group profiles per group key (`mpexport profiles --group-id KEY`).")
def fake_server_command(
    port: int, seed: int, events_per_day: int, ttfb: float, bandwidth: int | None,
    data: Literal["small", "realistic"], profiles: int, groups: int,
) -> None:
    """Serve a Mixpanel-compatible API on loopback, for trying mpexport.

    Raw export, engage (profiles) and the daily event counts (verify). Today's
    events end at the present, as Mixpanel's do. Prints its URL and demo
    credentials; Ctrl-C stops it.

    \b
    Example:
      mpexport fake-server --port 8765 &
      MP_USERNAME=... MP_SECRET=... MP_PROJECT_ID=... \\
        mpexport export --api-url http://127.0.0.1:8765 --from -30 --to yesterday
    """
    from mpexport.fakeserver import (
        DEMO_API_SECRET,
        DEMO_OAUTH_TOKEN,
        DEMO_PROJECT_ID,
        DEMO_SECRET,
        DEMO_USERNAME,
        Dataset,
        FakeMixpanelServer,
        ProfileDataset,
        ServerConfig,
    )

    dataset = Dataset(seed=seed, events_per_day=events_per_day, profile=data)
    # No profiles means no engage endpoint at all, as before it was served.
    people = ProfileDataset(seed=seed, count=profiles, groups=groups) if profiles else None
    config = ServerConfig(dataset=dataset, ttfb=ttfb, bandwidth=bandwidth, profiles=people)
    server = FakeMixpanelServer(config, port=port)
    echo_err(f"mpexport fake server listening on {server.url}")
    echo_err("demo credentials (not secret; they only open this server):")
    echo_err(f"  export MP_USERNAME={DEMO_USERNAME} MP_SECRET={DEMO_SECRET} "
              f"MP_PROJECT_ID={DEMO_PROJECT_ID}")
    echo_err(f"  or an OAuth token: export MP_OAUTH_TOKEN={DEMO_OAUTH_TOKEN} "
             f"MP_PROJECT_ID={DEMO_PROJECT_ID}")
    echo_err(f"  or the legacy form: export MP_API_SECRET={DEMO_API_SECRET}")
    echo_err(f"  mpexport export --api-url {server.url} --from -7 --to yesterday | head")
    if people is not None:
        echo_err(f"  mpexport profiles --api-url {server.url} | head")
    server.serve_forever()


@cli.command("demo", context_settings=CONTEXT)
@click.option("--days", type=int, default=60, show_default=True, help="Days to export.")
@click.option("--events-per-day", type=int, default=2000, show_default=True,
              help="Average events per day on the built-in server.")
@click.option("--db", "output", default="demo.duckdb", show_default=True, metavar="FILE",
              type=click.Path(dir_okay=False),
              help="DuckDB file the demo loads (created if missing).")
# Its old name: --output is NDJSON everywhere else (export, profiles, sql).
@click.option("--output", "old_output", hidden=True, type=click.Path(dir_okay=False))
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: on when stderr is a terminal].")
def demo_command(days: int, events_per_day: int, output: str, old_output: str | None,
                 progress: bool | None) -> None:
    """Run the main job against the built-in server: no credentials, loopback only.

    Starts the Mixpanel-compatible server on 127.0.0.1 with some faults
    switched on (resets, truncated bodies, 5xx, 429), exports the last DAYS
    days in parallel into a DuckDB file, checks the table holds exactly
    the server's events, each once, and ends with a verify: the table's daily
    counts against the server's Query API (asked with an OAuth bearer token,
    the export with a service account). Run it twice: the second run finds every
    chunk already loaded and fetches nothing.
    """
    from mpexport.cli.demo import run_demo

    code = run_demo(days=days, events_per_day=events_per_day, output=old_output or output,
                    progress=progress, echo=echo_err)
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


def _tolerant_stderr() -> None:
    # Messages may carry any Unicode (event names, server errors); a console
    # on a legacy code page (Windows cp1252, a C locale) must not turn one into
    # a crash. stdout is untouched: data goes out as bytes.
    reconfigure = getattr(sys.stderr, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place where exceptions become messages and exit codes.

    The code itself always comes from :func:`~mpexport.errors.exit_code_for`,
    as the summary JSON's does.
    """
    _tolerant_stderr()
    args = sys.argv[1:] if argv is None else argv
    try:
        returned = cli.main(args=args, prog_name="mpexport", standalone_mode=False)
        # click returns the exit code of --help/--version instead of raising.
        code = returned if isinstance(returned, int) else int(ExitCode.OK)
    except BaseException as exc:  # every way out gets its code here
        if _stdout_closed_by_reader(exc):
            exc = OutputClosed()  # `| head` on Windows: EINVAL, not EPIPE
        code = exit_code_for(exc)
        _report(exc, code)
        if isinstance(exc, click.UsageError):
            _usage_summary(args, exc, code)
    try:
        # What click.echo buffered (a dry run's plan, --help) must meet a closed
        # pipe here: at interpreter exit the failed flush would turn 0 into 1.
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        _quiet_broken_pipe()
    return code


def _stdout_closed_by_reader(exc: BaseException) -> bool:
    """An EINVAL is a closed pipe only if stdout itself fails now (Windows reports both so).

    Elsewhere EINVAL means a bad argument (an invalid file name on Windows):
    a real error, never a quiet success.
    """
    if isinstance(exc, BrokenPipeError) or not reader_gone(exc):
        return False
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def _report(exc: BaseException, code: int) -> None:
    """The one line on stderr for an error (and its traceback with --debug)."""
    if isinstance(exc, (click.exceptions.Exit, SystemExit)):
        return
    if isinstance(exc, click.UsageError):
        # What is wrong and where help is.
        command = exc.ctx.command_path if exc.ctx else "mpexport"
        echo_err(f"mpexport: error: {exc.format_message()} (see '{command} --help')")
        return
    if isinstance(exc, click.ClickException):
        echo_err(f"mpexport: error: {exc.format_message()}")
        return
    if isinstance(exc, (OutputClosed, BrokenPipeError)):
        _quiet_broken_pipe()
        return
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        echo_err("mpexport: interrupted")
        return
    if State.debug:
        traceback.print_exc()
    if isinstance(exc, Interrupted):
        return  # the runner already said what was stopped and how to resume
    if isinstance(exc, MpexportError):
        echo_err(f"mpexport: error: {exc.one_line()}")
        return
    echo_err(f"mpexport: internal error: {type(exc).__name__}: {exc} (exit {code}; run "
             "with --debug for a traceback, and please report it)")


def _usage_summary(args: list[str], exc: click.UsageError, code: int) -> None:
    """A usage error stops click before the command runs: write its summary JSON here."""
    target = None
    for i, arg in enumerate(args):
        if arg == "--summary-json" and i + 1 < len(args):
            target = args[i + 1]
        elif arg.startswith("--summary-json="):
            target = arg.split("=", 1)[1]
    if not target:
        return
    from mpexport.cli.report import RunReport

    command = exc.ctx.info_name if exc.ctx and exc.ctx.info_name else "mpexport"
    report = RunReport(command=command, error=exc.format_message())
    try:
        report.write_json(target, code)
    except OSError as error:
        echo_err(f"mpexport: could not write the summary JSON: {error}")
