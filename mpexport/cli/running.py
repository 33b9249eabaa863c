"""What a fetching command does around its run, events or profiles.

It turns the parsed command line into the library's options, shows progress
while the run goes, and turns what the run returned into the exit code (the
plan printed, or the summary line and the failures told).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mpexport.cli.options import configure_logging, echo_err, print_plan, progress_mode
from mpexport.errors import ExitCode

if TYPE_CHECKING:
    from mpexport.cli.progress import StderrProgress
    from mpexport.cli.summary import Report
    from mpexport.model import RunOutcome

    Result = TypeVar("Result", bound=RunOutcome[Any])

P = TypeVar("P", bound="StderrProgress")

DISPLAY_ONLY = frozenset({"progress", "quiet", "verbose", "summary_json"})
"""Parameters that change what is printed, not what is fetched or stored."""

COMMANDLINE = click.core.ParameterSource.COMMANDLINE


def given_on_command_line(name: str) -> bool:
    """True when the user typed the option ``name`` (not a default, not an environment variable)."""
    return click.get_current_context().get_parameter_source(name) is COMMANDLINE


def library_values(options: dict[str, Any], *, repeated: str, database: bool) -> dict[str, Any]:
    """The parsed command line as the library's keyword values.

    Display-only parameters go, ``db`` and ``output`` become paths (``--parquet``
    may be a URL: it stays text), the ``repeated`` option a tuple. Without a
    ``database`` to write, ``$MPEXPORT_MEMORY_LIMIT`` is dropped: it is for
    runs that load DuckDB only, and would be refused as an option that needs one.
    """
    values = {name: value for name, value in options.items() if name not in DISPLAY_ONLY}
    for name in ("db", "output"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    values[repeated] = tuple(values.get(repeated, ()))
    if not database and not given_on_command_line("memory_limit"):
        values["memory_limit"] = None
    return values


@contextmanager
def progress_shown(options: dict[str, Any], display: Callable[..., P]) -> Iterator[P]:
    """Logging as the flags ask, and the run's progress ``display`` on stderr, closed at the end."""
    import sys

    progress = display(sys.stderr, mode=progress_mode(options))
    # -v's request lines come from the workers while the bars are drawn.
    configure_logging(options["verbose"], options["quiet"], write=progress.write)
    try:
        yield progress
    finally:
        progress.close()


def ended(result: Result, report: Report[Result], quiet: bool, summary: Callable[[], str],
          tell_failures: Callable[[], None]) -> int:
    """The exit code of a run that returned; a dry run's plan, or the summary, printed.

    The summary line (unless ``quiet``) comes from ``summary``; failures after
    their retries are told by ``tell_failures`` and make the run partial.
    """
    if result.plan:
        print_plan(result.plan)
        return int(ExitCode.OK)
    report.result = result
    if not quiet:
        echo_err(summary())
    if result.failed:
        tell_failures()
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)
