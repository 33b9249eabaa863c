"""``sync --verify`` and ``export --verify`` on the command line: the check after the load.

The work is :func:`mpexport.verify.heal.verify_and_heal`'s; here it is shown
(the verdicts, the table, the refetches) and recorded in the summary JSON
under ``verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpexport.cli.options import echo_err
from mpexport.cli.report import RunReport
from mpexport.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from mpexport.model import ExportResult
    from mpexport.options import Command, RunOptions
    from mpexport.verify.heal import HealResult


@dataclass
class HealedRunReport(RunReport):
    """An export's or sync's report with what its check found."""

    healed: HealResult | None = None

    def to_json(self, code: int) -> dict[str, Any]:
        """The run's summary JSON, with ``verify``: the last check, and the days refetched."""
        from mpexport.cli.verify_report import verify_fields

        summary = super().to_json(code)
        healed = self.healed
        summary["verify"] = None if healed is None else {
            **verify_fields(healed.final),
            "checked": healed.first is not None,
            "first_differing_days": [d.isoformat() for d in healed.first.differing_days]
            if healed.first else [],
            "refetched": [{"from": a.isoformat(), "to": b.isoformat()}
                          for a, b in healed.refetched],
        }
        return summary


def check_verify(options: dict[str, Any]) -> None:
    """Refuse ``--verify`` where there is nothing it can compare."""
    if not options.get("verify"):
        return
    if options.get("db") is None and options.get("parquet") is None:
        raise UsageError("--verify needs --db FILE or --parquet DIR|URL",
                         "it compares what was loaded with Mixpanel's counts")
    if options.get("where") or options.get("limit") is not None:
        raise UsageError("--verify cannot be combined with --where or --limit",
                         "Mixpanel's counts are of every event of a name")


def heal(command: Command, run_opts: RunOptions, loaded: ExportResult,
         options: dict[str, Any], report: RunReport) -> int:
    """Check what the run loaded, refetch what differs, check again; return the exit code."""
    from mpexport.cli.export import retry_args
    from mpexport.cli.progress import BarProgress
    from mpexport.cli.running import progress_shown
    from mpexport.cli.verify import notes
    from mpexport.cli.verify_report import table_lines, tell, verdict
    from mpexport.environment import Environment
    from mpexport.interrupt import InterruptGuard
    from mpexport.startup import RunSetup
    from mpexport.verify.heal import verify_and_heal

    quiet = options["quiet"]
    environment = Environment.from_process()
    with progress_shown(options, BarProgress) as progress, \
            InterruptGuard(stderr=environment.stderr).installed() as guard:
        healed = verify_and_heal(command, run_opts, loaded,
                                 setup=RunSetup(environment, guard=guard),
                                 progress=progress, verify_progress=notes(quiet))
    if isinstance(report, HealedRunReport):
        report.healed = healed
    first = healed.first
    if first is None:
        if not quiet:
            echo_err("mpexport: verify: no settled day holds events yet (later days are "
                     f"inside the {run_opts.lookback}-day lookback); nothing compared")
        return int(ExitCode.OK)
    if healed.second is None:
        tell(first, run_opts.lookback, quiet, echo_err, _commands(first, options, retry_args))
        return int(ExitCode.OK if first.matches else ExitCode.PARTIAL)
    echo_err(verdict(first, run_opts.lookback))
    for line in table_lines(first):
        echo_err(line)
    added = sum(e.load.rows_inserted for e in healed.exports if e.load is not None)
    spans = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in healed.refetched)
    echo_err(f"mpexport: fetched {spans} again: {added} events added")
    second = healed.second
    tell(second, run_opts.lookback, False, echo_err, _commands(second, options, retry_args))
    return int(ExitCode.OK if healed.ok else ExitCode.PARTIAL)


def _commands(result: Any, options: dict[str, Any], retry_args: Any) -> list[list[str]]:
    """The commands that fetch ``result``'s differing days again, as this run was typed."""
    from mpexport.verify.heal import differing_ranges

    args = [a for a in retry_args(options) if a != "--verify"]
    if "--refresh" not in args:
        args.append("--refresh")
    return [["mpexport", "export", "--from", a.isoformat(), "--to", b.isoformat(), *args]
            for a, b in differing_ranges(result.differing_days)]
