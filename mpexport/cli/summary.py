"""The summary every fetching command gives: its status, its JSON's common fields, its file.

``export``, ``sync`` (:mod:`mpexport.cli.report`) and ``profiles``
(:mod:`mpexport.cli.profiles_report`) each add their own fields to what is here.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mpexport import __version__
from mpexport.atomic import refuse_planted_link, write_atomically
from mpexport.errors import ExitCode, UsageError

R = TypeVar("R")  # the run's result: an ExportResult or a ProfileResult


@dataclass(kw_only=True)
class Report(Generic[R]):
    """What the CLI knows of a run so far, filled in as it goes: the result or the error."""

    result: R | None = None
    error: str | None = None

    def status(self, code: int) -> str:
        """``complete``, ``partial``, ``interrupted`` or ``failed``, from the exit code."""
        if code == ExitCode.OK:
            return "complete"
        if code == ExitCode.PARTIAL and self.result is not None and self.error is None:
            return "partial"
        if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
            return "interrupted"
        return "failed"

    def head(self, code: int, command: str) -> dict[str, Any]:
        """The fields every summary JSON begins with."""
        return {"status": self.status(code), "exit_code": code, "command": command,
                "version": __version__}

    def to_json(self, code: int) -> dict[str, Any]:
        """The machine-readable summary (``--summary-json``)."""
        raise NotImplementedError

    def write_json(self, target: str, code: int) -> None:
        """Write the summary JSON to a file (atomically) or, for ``-``, to stderr."""
        write_summary_json(target, self.to_json(code))


def traffic(bytes_received: int, seconds: float, what: str = "") -> str:
    """``1.2 MB written, 3.4s``: what a run received, and how long it took (for its summary line).

    ``what`` says which bytes those are, beside the bar's compressed ones.
    """
    return f"{bytes_received / 1e6:.1f} MB{' ' + what if what else ''}, {seconds:.1f}s"


def loaded_line(rows: int, what: str, database: object, table: str, extras: list[str],
                tail: str) -> str:
    """The summary line of a run that loaded ``rows`` of ``what`` into a DuckDB table."""
    return (f"mpexport: loaded {rows} {what} into {database} table {table} "
            f"({', '.join(extras)}); {tail}")


def check_summary_target(target: str) -> None:
    """Refuse a summary JSON path that cannot be written, before anything is fetched.

    A cron job that monitors the file would otherwise keep reading a stale one.
    """
    if target == "-":
        return
    path = Path(target)
    refuse_planted_link(path)
    folder = path.parent
    hint = "create the folder or choose another --summary-json path"
    if not folder.is_dir():
        raise UsageError(f"cannot write --summary-json {path}: the folder {folder} does not exist",
                         hint)
    if path.is_dir():
        raise UsageError(f"cannot write --summary-json {path}: it is a folder",
                         "name a file in it instead")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write --summary-json {path}: the folder {folder} is not "
                         "writable", hint)


def write_summary_json(target: str, summary: dict[str, Any]) -> None:
    """Write a summary JSON to the file ``target`` (atomically) or, for ``-``, to stderr.

    A file another program holds for a moment (a monitoring agent reading
    the last one, a virus scan) is waited for, a few seconds at most
    (:func:`mpexport.atomic.replacing`).
    """
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stderr.write(text)
        sys.stderr.flush()
        return
    write_atomically(Path(target), text.encode("utf-8"))
