"""``sync --verify``, ``export --verify``: check settled days, refetch what differs, check again.

After a run that loaded a table or a lake, the settled days (older than the
lookback window) are compared: an export's range, or for a sync every day
the store holds up to its ``--to``, so a cron job finds a day broken long
ago too. They are compared with Mixpanel's counts; the days that
differ are fetched again as ``--refresh`` fetches them (one export of just
those days, deduplicated against what is stored), and compared once more.
Only a day that still differs then is a failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mpexport.model import Chunk, ExportResult
from mpexport.options import Command, RunOptions
from mpexport.startup import RunSetup
from mpexport.verify.model import VerifyProgress, VerifyResult
from mpexport.verify.options import VerifyOptions

if TYPE_CHECKING:
    from mpexport.events import ProgressCallback


@dataclass
class HealResult:
    """What the check after a run did: the first check, the refetches, the second check."""

    first: VerifyResult | None = None  # None: no settled day in the range
    refetched: list[tuple[dt.date, dt.date]] = field(default_factory=list)
    exports: list[ExportResult] = field(default_factory=list)
    second: VerifyResult | None = None

    @property
    def final(self) -> VerifyResult | None:
        """The last check made."""
        return self.second or self.first

    @property
    def ok(self) -> bool:
        """True when every settled day matches Mixpanel in the end."""
        final = self.final
        return final is None or final.matches


def verify_options(options: RunOptions) -> VerifyOptions:
    """The check of what ``options`` loaded: the same store, project, credentials and pace."""
    return VerifyOptions(
        retries=options.retries, qps_limit=options.qps_limit,
        hourly_limit=options.hourly_limit, region=options.region, api_url=options.api_url,
        project_id=options.project_id, profile=options.profile, db=options.db,
        table=options.table, parquet=None if options.db is not None else options.parquet,
        project_timezone=options.project_timezone, lookback=options.lookback)


def differing_ranges(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """``days`` as ranges of consecutive days, in order."""
    from mpexport.plan import merge_ranges

    return merge_ranges([Chunk(0, day, day) for day in days])


def verify_and_heal(command: Command, options: RunOptions, loaded: ExportResult, *,
                    setup: RunSetup,
                    progress: ProgressCallback | None = None,
                    verify_progress: VerifyProgress | None = None) -> HealResult:
    """Check the settled days, refetch those that differ, check them again.

    The days are those ``loaded`` covered (``command`` export), or every
    day the store holds up to its end (sync).

    ``options`` are the run's (a database or a lake); ``setup`` the run's
    environment, credentials, guard and settings. ``progress`` hears the
    refetches' events, ``verify_progress`` the checks'.
    """
    from mpexport.runner import run
    from mpexport.verify.runner import run_verify, with_range

    healed = HealResult()
    if loaded.from_date is None or loaded.to_date is None:
        return healed
    check = verify_options(options)
    from mpexport.dates import today_in

    settled_before = today_in(options.project_timezone) - dt.timedelta(days=options.lookback)
    last = min(loaded.to_date, settled_before - dt.timedelta(days=1))
    if loaded.from_date > last and command == "export":
        return healed
    # A sync's store may begin long before this run's days: from its first day.
    start = loaded.from_date if command == "export" else None
    healed.first = run_verify(dataclasses.replace(check, from_date=start, to_date=last),
                              progress=verify_progress, setup=setup)
    if healed.first.from_date is None:
        healed.first = None  # nothing stored in the settled days
        return healed
    if healed.first.matches or healed.first.failed:
        return healed
    healed.refetched = differing_ranges(healed.first.differing_days)
    for start, end in healed.refetched:
        again = dataclasses.replace(options, from_date=start, to_date=end, refresh=True,
                                    replace=False)
        healed.exports.append(run(
            "export", again, credentials=setup.credentials, progress=progress,
            guard=setup.guard, settings=setup.settings, spool_dir=setup.spool_dir,
            share_hour=setup.share_hour, environment=setup.environment))
    first_day, last_day = healed.refetched[0][0], healed.refetched[-1][1]
    # The first check's names: a name the refetch left missing whole still counts.
    again_check = dataclasses.replace(check, events=tuple(healed.first.names))
    healed.second = run_verify(with_range(again_check, first_day, last_day),
                               progress=verify_progress, setup=setup)
    return healed
