"""What an export or sync tells its user at the end: the summary line and the summary JSON."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.cli.summary import Report, loaded_line, traffic
from mpexport.model import ExportResult

if TYPE_CHECKING:
    from mpexport.model import LoadStats


@dataclass
class RunReport(Report[ExportResult]):
    """Everything known about an export or sync so far; filled in as the run goes."""

    command: str
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    database: Path | None = None
    lake: str | None = None  # --parquet: a folder or a URL
    table: str | None = None
    load: LoadStats | None = None
    rerun: list[list[str]] = field(default_factory=list)

    def to_json(self, code: int) -> dict[str, Any]:
        """The machine-readable summary (``--summary-json``)."""
        result, load = self.result, self.load
        failed = result.failed if result else []
        summary: dict[str, Any] = {
            **self.head(code, self.command),
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
    # The NDJSON's size: the bytes written to stdout or --output, or loaded
    # (the bar counts them as received, compressed: several times fewer).
    size = traffic(result.bytes, result.seconds, "written" if load is None else "of NDJSON")
    if load is None:
        return f"mpexport: {result.events} events in {done}, {size}{span}"
    # Copies of events the table holds already (a re-read day, a resent event).
    extras = [f"{load.duplicates_skipped} already stored"]
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
    return loaded_line(load.rows_inserted, "events", report.database, str(report.table), extras,
                       f"{done}, {size}{span}")
