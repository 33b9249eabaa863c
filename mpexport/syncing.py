"""Incremental sync: where a sync of a database starts, and which loaded days it skips."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from typing import Protocol

from mpexport.errors import UsageError
from mpexport.request import ExportRequest


class HoldsDays(Protocol):
    """What a sync needs of its database: the days it holds."""

    def covered_days(self) -> set[dt.date]:
        """The days loaded whole (by the manifest)."""
        ...


def sync_range(
    covered: Collection[dt.date],
    from_date: dt.date | None,
    to_date: dt.date,
    lookback: int,
) -> tuple[dt.date, dt.date, dt.date | None]:
    """Where an incremental sync starts and ends, and the last day already complete.

    The first sync needs ``from_date``. Later ones start ``lookback`` days
    before the end of the unbroken run of loaded days that begins at the
    first loaded day (so a day that failed earlier is fetched again too),
    but never before that first day: it is where the table's range begins
    (the ``--from`` of its first sync), and a short run of loaded days (a
    young file, a first run cut short) must not pull in days nobody asked
    for. An explicit ``from_date`` wins and moves that first day on purpose.
    Raises :class:`UsageError` when ``to_date`` ends before the first day
    and no ``from_date`` says to go there.
    """
    if lookback < 0:
        raise UsageError(f"--lookback must be 0 or more days, not {lookback}")
    if not covered:
        if from_date is None:
            raise UsageError(
                "this database has no synced days yet, so the first sync needs --from",
                "e.g. --from 2024-01-01",
            )
        return from_date, to_date, None
    days = set(covered)
    first = min(days)
    complete = first
    while complete + dt.timedelta(days=1) in days:
        complete += dt.timedelta(days=1)
    if from_date is not None:
        return min(from_date, to_date), to_date, complete
    if to_date < first:
        raise UsageError(
            f"--to {to_date.isoformat()} is before the first synced day of this table, "
            f"{first.isoformat()}",
            "pass --from as well to sync earlier days",
        )
    start = max(first, complete - dt.timedelta(days=lookback))
    return min(start, to_date), to_date, complete


def settled_days(covered: Collection[dt.date], start: dt.date, to_date: dt.date,
                 lookback: int) -> frozenset[dt.date]:
    """Loaded days of ``start..to_date`` that a sync need not read again.

    A sync re-reads the ``lookback`` days before the newest loaded day (late
    events land there) and every day not loaded yet. A day that keeps
    failing leaves a gap, and ``start`` stays before it; without this, every
    later sync would refetch everything after the gap, more each day.
    """
    loaded = [d for d in covered if start <= d <= to_date]
    if not loaded:
        return frozenset()
    recent = max(loaded) - dt.timedelta(days=lookback)
    return frozenset(d for d in loaded if d < recent)


def sync_request(
    request: ExportRequest, database: HoldsDays, explicit_from: bool, lookback: int
) -> ExportRequest:
    """The request of an incremental sync: its range from what ``database`` holds."""
    covered = database.covered_days()
    start, end, complete = sync_range(
        covered, request.from_date if explicit_from else None, request.to_date, lookback,
    )
    skip = frozenset() if explicit_from else settled_days(covered, start, end, lookback)
    return dataclasses.replace(
        request, from_date=start, to_date=end,
        boundaries=(complete,) if complete is not None else (),
        skip_days=skip,
    )
