"""What a run tells its user at the end: the summary line and the summary JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport import __version__
from mpexport.atomic import write_atomically
from mpexport.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from mpexport.model import ExportResult, LoadStats


@dataclass
class RunReport:
    """Everything known about a run so far; filled in as the run goes."""

    command: str
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    database: Path | None = None
    lake: str | None = None  # --parquet: a folder or a URL
    table: str | None = None
    result: ExportResult | None = None
    load: LoadStats | None = None
    error: str | None = None
    rerun: list[list[str]] = field(default_factory=list)

    def status(self, code: int) -> str:
        """``complete``, ``partial``, ``interrupted`` or ``failed``, from the exit code."""
        if code == ExitCode.OK:
            return "complete"
        if code == ExitCode.PARTIAL and self.result is not None and self.error is None:
            return "partial"
        if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
            return "interrupted"
        return "failed"

    def to_json(self, code: int) -> dict[str, Any]:
        """The machine-readable summary (``--summary-json``)."""
        result, load = self.result, self.load
        failed = result.failed if result else []
        summary: dict[str, Any] = {
            "status": self.status(code),
            "exit_code": code,
            "command": self.command,
            "version": __version__,
            "range": {
                "from": self.from_date.isoformat() if self.from_date else None,
                "to": self.to_date.isoformat() if self.to_date else None,
            },
            "output": str(self.database) if self.database else self.lake or "stdout",
            "lake": {"url": self.lake, "days_written": load.parquet_days if load else 0}
            if self.lake else None,
            "table": self.table,
            "chunks": {
                "total": result.chunks_total if result else 0,
                "ok": len(result.completed) if result else 0,
                "skipped": len(result.skipped) if result else 0,
                "failed": [
                    {"from": f.chunk.from_date.isoformat(), "to": f.chunk.to_date.isoformat(),
                     "reason": f.reason}
                    for f in failed
                ],
            },
            "events": load.rows_inserted if load else (result.events if result else 0),
            "events_received": result.events if result else 0,
            "duplicates": load.duplicates_skipped if load else None,
            "late_events": load.late_rows if load else None,
            "repaired_events": load.repaired if load else None,
            "replaced": load.rows_replaced if load else None,
            "updated": load.updated if load else None,
            "bytes": result.bytes if result else 0,
            "duration_seconds": round(result.seconds, 3) if result else None,
            "error": self.error,
            # POSIX-quoted; rerun_argv is the same commands as argument lists,
            # for any shell (cmd and PowerShell quote differently).
            "rerun": [shlex.join(c) for c in self.rerun],
            "rerun_argv": [list(c) for c in self.rerun],
        }
        return summary

    def write_json(self, target: str, code: int) -> None:
        """Write the summary JSON to a file (atomically) or, for ``-``, to stderr."""
        write_summary_json(target, self.to_json(code))


def check_summary_target(target: str) -> None:
    """Refuse a summary JSON path that cannot be written, before anything is fetched.

    A cron job that monitors the file would otherwise keep reading a stale one.
    """
    if target == "-":
        return
    path = Path(target)
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
    """Write a summary JSON to the file ``target`` (atomically) or, for ``-``, to stderr."""
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stderr.write(text)
        sys.stderr.flush()
        return
    write_atomically(Path(target), text.encode("utf-8"))


def summary_line(report: RunReport) -> str:
    """The one-line human summary of a finished run."""
    result, load = report.result, report.load
    assert result is not None
    span = ""
    if report.from_date and report.to_date:
        span = f" ({report.from_date.isoformat()}..{report.to_date.isoformat()})"
    done = f"{len(result.completed)}/{result.chunks_total} chunks"
    if result.skipped:
        done += f", {len(result.skipped)} already loaded"
    size = f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f}s"
    if load is None:
        return f"mpexport: {result.events} events in {done}, {size}{span}"
    extras = [f"{load.duplicates_skipped} duplicates skipped"]
    if report.command == "sync":
        extras.append(f"{load.late_rows} late events added")
    if load.rows_replaced:
        extras.append(f"{load.rows_replaced} replaced")
    if load.updated:
        # Stored events whose newer copy (a correction re-sent to Mixpanel) took their place.
        extras.append(f"{load.updated} updated")
    if load.repaired:
        # Stored with U+FFFD where DuckDB could not read the text; stdout keeps them as sent.
        extras.append(f"{load.repaired} repaired")
    if report.lake is not None:
        extras.append(f"{load.parquet_days} days written to the lake")
    if report.database is None:
        return (f"mpexport: wrote {load.rows_inserted} new events to {report.lake} "
                f"({', '.join(extras)}); {done}, {size}{span}")
    return (f"mpexport: loaded {load.rows_inserted} events into {report.database} table "
            f"{report.table} ({', '.join(extras)}); {done}, {size}{span}")
