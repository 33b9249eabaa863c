"""Exception types raised by the library, and the exit codes they map to.

The library raises these; only :func:`exit_code_for` (used by the CLI) turns
them into process exit codes, so the mapping lives in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in the README and ``--help``."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    CREDENTIALS = 3
    LOCKED = 4
    INTERRUPTED = 130
    TERMINATED = 143


class MpexportError(Exception):
    """Base class of every error mpexport reports to the user.

    ``hint`` says how to fix it; the CLI prints ``message`` and ``hint`` on
    one line.
    """

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint as one line for stderr."""
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class UsageError(MpexportError):
    """Bad command-line input or library arguments."""

    exit_code = ExitCode.USAGE


class BadParametersError(MpexportError):
    """The API refused the query's parameters (HTTP 400): retrying cannot help."""

    exit_code = ExitCode.USAGE


class CredentialsError(MpexportError):
    """Missing, wrong or insufficient credentials (HTTP 401/402/403)."""

    exit_code = ExitCode.CREDENTIALS


class DatabaseLockedError(MpexportError):
    """Another run holds the output database."""

    exit_code = ExitCode.LOCKED


class OutputClosed(MpexportError):
    """The reader of stdout went away (``| head``): stop quietly, successfully."""

    exit_code = ExitCode.OK

    def __init__(self) -> None:
        super().__init__("the output was closed by its reader")


class Interrupted(MpexportError):
    """The run was stopped by SIGINT or SIGTERM."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        # What was done before the stop (an ExportResult), set by the pipeline,
        # and the (from, to) date ranges still to fetch, set by the runner.
        self.result: object | None = None
        self.remaining: list[tuple[dt.date, dt.date]] = []
        # A chunk only partly on stdout (whole lines) when the stop came.
        self.partial: tuple[dt.date, dt.date] | None = None
        self.exit_code = (
            ExitCode.TERMINATED if signal_name == "SIGTERM" else ExitCode.INTERRUPTED
        )


def exit_code_for(error: BaseException) -> ExitCode:
    """Map any exception to the exit code the CLI returns for it."""
    if isinstance(error, MpexportError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    # An unexpected bug: not a usage error, not a partial export. 1 is the
    # conventional "something failed" code and the least misleading here.
    return ExitCode.PARTIAL
