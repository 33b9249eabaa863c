"""What a check tells its user: the verdict line, the table of differences, the refetch command.

Shared by ``mpexport verify`` and ``sync --verify``/``export --verify``; the
summary JSON's fields are :class:`VerifyReport`'s.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpexport.cli.summary import Report
from mpexport.verify.model import VerifyResult

# Rows of the table shown; the summary JSON lists every difference.
TABLE_ROWS = 50


def counted(number: int, word: str, plural: str | None = None) -> str:
    """``1 day``, ``2 days``."""
    return f"{number} {word if number == 1 else plural or word + 's'}"


def verdict(result: VerifyResult, lookback: int) -> str:
    """The one-line verdict of a check."""
    span = f"{result.from_date}..{result.to_date}"
    if result.matches:
        return (f"mpexport: verified: {span} matches Mixpanel, {result.compared} counts of "
                f"{len(result.names)} events compared ({result.stored_total} events, "
                f"{counted(result.queries, 'query', 'queries')})")
    if not result.differences:
        return (f"mpexport: {len(result.failed)} of {result.queries} queries failed; "
                f"{result.compared} counts compared, all equal")
    missing = sum(-d.difference for d in result.differences if d.difference < 0)
    extra = sum(d.difference for d in result.differences if d.difference > 0)
    days = result.differing_days
    line = (f"mpexport: DIFFERS: {counted(len(result.differences), 'count')} on "
            f"{counted(len(days), 'day')} of "
            f"{span} differ from Mixpanel ({missing} events missing, {extra} extra)")
    settling = result.settling_days
    if settling:
        those = counted(len(settling), "of those days is", "of those days are")
        line += (f"; {those} still settling (inside the {lookback}-day lookback: late "
                 "events may still arrive)")
    return line


def table_lines(result: VerifyResult) -> list[str]:
    """The differences, worst first, as aligned columns (the first :data:`TABLE_ROWS`)."""
    rows = [("day", "event", "stored", "Mixpanel", "difference")]
    for d in result.differences[:TABLE_ROWS]:
        rows.append((d.day.isoformat(), d.event, str(d.stored), str(d.mixpanel),
                     f"{d.difference:+d}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                 *(cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
    hidden = len(result.differences) - TABLE_ROWS
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (the summary JSON lists them all)")
    return lines


def refetch_commands(ranges: list[tuple[dt.date, dt.date]], store: list[str]) -> list[list[str]]:
    """``mpexport export`` commands that fetch ``ranges`` again into ``store`` (its flags)."""
    return [["mpexport", "export", "--from", start.isoformat(), "--to", end.isoformat(),
             *store, "--refresh"] for start, end in ranges]


def tell(result: VerifyResult, lookback: int, quiet: bool, echo: Callable[[str], None],
         commands: list[list[str]]) -> None:
    """The verdict (unless ``quiet`` and all match), the table and the refetch commands."""
    from mpexport.cli.shell import quoted_commands

    if result.differences or not quiet:
        echo(verdict(result, lookback))
    for failure in result.failed:
        echo(f"  query {failure.query.label()} failed after {failure.attempts} attempts: "
             f"{failure.reason}")
    if not result.differences:
        return
    for line in table_lines(result):
        echo(line)
    if commands:
        echo("fetch those days again with:")
        for line in quoted_commands(commands):
            echo(line)


@dataclass
class VerifyReport(Report[VerifyResult]):
    """Everything known about a check so far; filled in as it goes."""

    output: str = ""
    table: str | None = None
    rerun: list[list[str]] = field(default_factory=list)

    def to_json(self, code: int) -> dict[str, Any]:
        """The machine-readable summary (``--summary-json``)."""
        return {**self.head(code, "verify"), "output": self.output, "table": self.table,
                **verify_fields(self.result), "error": self.error,
                "rerun": [shlex.join(c) for c in self.rerun],
                "rerun_argv": [list(c) for c in self.rerun]}


def verify_fields(result: VerifyResult | None) -> dict[str, Any]:
    """A check's fields of a summary JSON (also ``verify`` in a sync's)."""
    if result is None:
        return {"range": {"from": None, "to": None}, "matches": False, "differing_days": [],
                "differences": [], "settling_days": [], "queries": 0, "failed_queries": []}
    return {
        "range": {"from": result.from_date.isoformat() if result.from_date else None,
                  "to": result.to_date.isoformat() if result.to_date else None},
        "matches": result.matches,
        "events": len(result.names),
        "queries": result.queries,
        "compared": result.compared,
        "stored": result.stored_total,
        "mixpanel": result.mixpanel_total,
        "differing_days": [day.isoformat() for day in result.differing_days],
        "settling_days": [day.isoformat() for day in result.settling_days],
        "differences": [{"day": d.day.isoformat(), "event": d.event, "stored": d.stored,
                         "mixpanel": d.mixpanel, "difference": d.difference}
                        for d in result.differences],
        "failed_queries": [{"from": f.query.from_date.isoformat(),
                            "to": f.query.to_date.isoformat(), "events": list(f.query.events),
                            "reason": f.reason} for f in result.failed],
        "duration_seconds": round(result.seconds, 3),
    }
