"""Exception types raised by the library, and the exit codes they map to.

The library raises these; only :func:`exit_code_for` (used by the CLI) turns
them into process exit codes, so the mapping lives in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import sys

# Windows reports a pipe closed by its reader differently (see reader_gone).
ON_WINDOWS = sys.platform == "win32"


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in the README and ``--help``."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    CREDENTIALS = 3
    LOCKED = 4
    INTERNAL = 70  # a bug: sysexits' EX_SOFTWARE
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
        # The (from, to) days the failed run covered, when it got that far.
        self.run_range: tuple[dt.date, dt.date] | None = None

    def one_line(self) -> str:
        """The message and the hint as one line for stderr."""
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class UsageError(MpexportError):
    """Bad command-line input or library arguments."""

    exit_code = ExitCode.USAGE


class AccessDeniedError(UsageError):
    """The system refuses this user a file: read-only, or permissions. No wait can help.

    On Windows this is told apart from a file another program holds (exit 4,
    ``--wait-lock`` waits for it): see :func:`mpexport.filelock.why_refused`.
    """

    def __init__(self, path: object, message: str | None = None) -> None:
        super().__init__(
            message or f"access to {path} is denied",
            "the file may be read-only, or your account may not write it: "
            "clear its read-only attribute or fix its permissions")
        self.path = path


class FileInUseError(MpexportError):
    """Another program kept a file open that mpexport must replace, beyond the retries.

    On Windows a virus scan, the search indexer, OneDrive or an editor that
    has a file open stops its replace; the replace is retried for a few
    seconds first (:func:`mpexport.atomic.patiently`).
    """

    exit_code = ExitCode.LOCKED

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} is open in another program, which kept it past the retries",
                         "close what has it open (an editor, a sync client) and run the "
                         "same command again")
        self.path = path


class BadParametersError(MpexportError):
    """The API refused the query's parameters (HTTP 400): retrying cannot help."""

    exit_code = ExitCode.USAGE


class CredentialsError(MpexportError):
    """Missing, wrong or insufficient credentials (HTTP 401/402/403)."""

    exit_code = ExitCode.CREDENTIALS


class ProxyCredentialsError(CredentialsError):
    """The proxy between this machine and Mixpanel asked for credentials (HTTP 407).

    The request never reached Mixpanel; another attempt would be refused the same way.
    """


class UnavailableError(MpexportError):
    """Mixpanel did not answer usefully after the retries (network, 5xx, 429)."""

    exit_code = ExitCode.PARTIAL


class CertificateError(MpexportError):
    """The server's TLS certificate is not trusted here: retrying cannot change that.

    Typically a company proxy that inspects HTTPS, whose root certificate is
    in neither the system's store nor the bundle a variable names. The
    request never reached Mixpanel.
    """

    exit_code = ExitCode.PARTIAL


class SpoolFullError(MpexportError):
    """The spool folder's disk is full (or over quota): no smaller chunk or retry fits.

    ``folder`` is the folder the spool was made in (the temp folder).
    """

    exit_code = ExitCode.PARTIAL

    def __init__(self, folder: object, reason: str) -> None:
        super().__init__(
            f"no space left in {folder} for the spool files ({reason})",
            "free space there, or set TMPDIR (TEMP on Windows) to a folder on a disk "
            "with room for a few chunks")
        self.folder = folder


class LoaderError(MpexportError):
    """The DuckDB loader failed in a way no retry of the chunk can fix (disk full, a bug).

    The runner adds what was committed before it failed (``committed`` day
    ranges, ``chunks_committed``, the loader's ``load`` statistics) and the
    ``missing`` ranges a rerun loads.
    """

    exit_code = ExitCode.PARTIAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.committed: list[tuple[dt.date, dt.date]] = []
        self.missing: list[tuple[dt.date, dt.date]] = []
        self.chunks_committed = 0
        self.load: object | None = None


class ReaderMismatchError(LoaderError):
    """DuckDB's NDJSON reader gave counts that do not add up to a chunk's lines.

    The loader relies on two behaviours of the reader that DuckDB does not
    document: ``ignore_errors`` gives one row without properties for each
    line it refuses, and ``row_number() OVER ()`` follows the file. A DuckDB
    release that changes either would store a chunk with events missing or
    repaired in the wrong place; the chunk fails instead, before its commit.
    """


class EmptySnapshotError(MpexportError):
    """A full profiles export listed no profiles for a table that holds some.

    Replacing the snapshot would empty the table; an outage, a wrong project
    or lost permissions look the same, so it takes an explicit
    ``allow_empty`` (``--allow-empty``). The table is left unchanged.
    """

    exit_code = ExitCode.PARTIAL


class OutputFileError(MpexportError):
    """``--output FILE`` could not be put in place at the end of the run."""

    exit_code = ExitCode.PARTIAL


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
        # With a database: the loader's statistics (a LoadStats) at the stop.
        self.load: object | None = None
        self.exit_code = (
            ExitCode.TERMINATED if signal_name == "SIGTERM" else ExitCode.INTERRUPTED
        )


def reader_gone(error: BaseException) -> bool:
    """True when a write failed because the pipe's reader closed it (``| head``).

    POSIX says EPIPE (BrokenPipeError); Windows pipes say EINVAL.
    """
    if isinstance(error, BrokenPipeError):
        return True
    return ON_WINDOWS and isinstance(error, OSError) and error.errno == errno.EINVAL


def exit_code_for(error: BaseException) -> int:
    """Map any exception to the exit code the process ends with: the only such mapping.

    The CLI's summary JSON and its exit status both come from here, so they
    cannot disagree.
    """
    if isinstance(error, MpexportError):
        return int(error.exit_code)
    if isinstance(error, BrokenPipeError):
        return int(ExitCode.OK)  # the reader went away (`| head`): not a failure
    if isinstance(error, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else int(ExitCode.PARTIAL)
    if type(error).__module__.startswith("click"):
        return _click_exit_code(error)
    return int(ExitCode.INTERNAL)


def _click_exit_code(error: BaseException) -> int:
    import click

    if isinstance(error, click.exceptions.Exit):
        return int(error.exit_code)
    if isinstance(error, click.Abort):
        return int(ExitCode.INTERRUPTED)
    if isinstance(error, click.ClickException):
        return int(ExitCode.USAGE)  # click's own 1 would read as "partial" here
    return int(ExitCode.INTERNAL)
