"""Incremental sync: the range a sync covers, and which loaded days it skips.

A file's (or a lake's) sync covers every day from its *origin* to ``--to``.
The origin is the ``--from`` of its first sync, recorded in the manifest
before anything is fetched, and moved only by a later explicit ``--from``. So
a first sync cut short (a day that kept failing, a kill, a reboot after a
later chunk committed) leaves days the next sync fetches, whatever order the
chunks committed in; and ``--from`` repeated by a cron line skips what is
loaded and settled, as no ``--from`` does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from typing import Protocol

from mpexport.errors import UsageError
from mpexport.request import ExportRequest, loaded_note


class HoldsDays(Protocol):
    """What a sync needs of its database or lake: the days it holds and where its range begins."""

    def covered_days(self) -> set[dt.date]:
        """The days loaded whole (by the manifest)."""
        ...

    def sync_from(self) -> dt.date | None:
        """The recorded first day of the sync's range (None: never recorded)."""
        ...

    def record_sync_from(self, day: dt.date) -> None:
        """Record ``day`` as the first day of the sync's range, before anything is fetched."""
        ...


@dataclasses.dataclass(frozen=True)
class SyncRange:
    """What one sync fetches.

    ``origin`` is where the sync's range begins (what the manifest records);
    ``start``..``end`` the days it reads, less ``settled`` (loaded days older
    than the lookback window, not read again); ``complete`` the last day of
    the unbroken run of loaded days from ``start`` (a chunk boundary), if any.
    """

    origin: dt.date
    start: dt.date
    end: dt.date
    settled: frozenset[dt.date]
    complete: dt.date | None


def sync_range(
    covered: Collection[dt.date],
    to_date: dt.date,
    lookback: int,
    *,
    recorded_from: dt.date | None = None,
    from_date: dt.date | None = None,
    refresh: bool = False,
) -> SyncRange:
    """The range of a sync of a store holding ``covered`` days.

    The origin is ``from_date`` when given, else ``recorded_from``, else (a
    file written before origins were recorded) its first loaded day; a store
    with none of these needs ``from_date``. Every day from the origin to
    ``to_date`` that is not loaded is read, and so are the ``lookback`` days
    before the newest loaded day of that range (late events land there);
    older loaded days are settled, unless ``refresh`` says to read
    everything again. Raises :class:`UsageError` for a negative lookback, a
    missing first ``--from``, and a ``to_date`` before the origin that no
    ``from_date`` asked for.
    """
    if lookback < 0:
        raise UsageError(f"--lookback must be 0 or more days, not {lookback}")
    origin = from_date or recorded_from or (min(covered) if covered else None)
    if origin is None:
        raise first_sync_error()
    if from_date is None and to_date < origin:
        raise UsageError(
            f"--to {to_date.isoformat()} is before the first synced day of this table, "
            f"{origin.isoformat()}",
            "pass --from as well to sync earlier days",
        )
    origin = min(origin, to_date)
    settled = frozenset() if refresh else settled_days(covered, origin, to_date, lookback)
    start = origin
    while start in settled:
        start += dt.timedelta(days=1)
    complete = None
    if start in covered:
        complete = start
        while complete + dt.timedelta(days=1) in covered:
            complete += dt.timedelta(days=1)
    return SyncRange(origin=origin, start=start, end=to_date,
                     settled=frozenset(d for d in settled if d >= start), complete=complete)


def settled_days(covered: Collection[dt.date], start: dt.date, to_date: dt.date,
                 lookback: int) -> frozenset[dt.date]:
    """Loaded days of ``start..to_date`` that a sync need not read again.

    A sync re-reads the ``lookback`` days before the newest loaded day (late
    events land there) and every day not loaded yet. A day that keeps
    failing leaves a gap that every sync reads; without this, every later
    sync would refetch everything after the gap, more each day.
    """
    loaded = [d for d in covered if start <= d <= to_date]
    if not loaded:
        return frozenset()
    recent = max(loaded) - dt.timedelta(days=lookback)
    return frozenset(d for d in loaded if d < recent)


def sync_request(
    request: ExportRequest,
    store: HoldsDays,
    explicit_from: bool,
    lookback: int,
    *,
    refresh: bool = False,
    record: bool = True,
    notes: list[str] | None = None,
) -> ExportRequest:
    """The request of an incremental sync: its range from what ``store`` holds.

    With ``record`` (every run but a dry run) an explicit ``--from`` that
    moves the origin is recorded before anything is fetched, so a run cut
    short leaves its range behind for the next sync. A ``--from`` that moves
    the start later says so in ``notes``: days before it are no longer
    checked, and a crontab with a relative ``--from`` would move it daily.
    """
    notes = notes if notes is not None else []
    recorded = store.sync_from()
    chosen = sync_range(
        store.covered_days(), request.to_date, lookback, recorded_from=recorded,
        from_date=request.from_date if explicit_from else None, refresh=refresh,
    )
    if record and chosen.origin != recorded:
        store.record_sync_from(chosen.origin)
    # Loaded days before the lookback are not read again: those before the
    # start and the settled ones after it (a gap that kept failing).
    note = loaded_note((chosen.start - chosen.origin).days + len(chosen.settled))
    if note is not None:
        notes.append(note)
    if recorded is not None and chosen.origin > recorded:
        notes.append(
            f"this sync's range now starts at {chosen.origin.isoformat()} (it started at "
            f"{recorded.isoformat()}); days before it are no longer checked")
    return dataclasses.replace(
        request, from_date=chosen.start, to_date=chosen.end,
        boundaries=(chosen.complete,) if chosen.complete is not None else (),
        skip_days=chosen.settled,
    )


def first_sync_error() -> UsageError:
    """The error of a first sync without ``--from`` (also raised before a new file is made)."""
    return UsageError("this database has no synced days yet, so the first sync needs --from",
                      "e.g. --from 2024-01-01")
