"""What a verify run reports as it goes (progress events) and when it ends (the result)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from mpexport.events import BytesReceived, Notice, WaitingForBudget
from mpexport.mixpanel.event_counts import CountFailure, CountQuery
from mpexport.model import RunOutcome


@dataclass(frozen=True)
class QueryRetry:
    """An attempt at ``query`` failed; it is tried again after ``delay`` seconds."""

    query: CountQuery
    attempt: int
    reason: str
    delay: float


@dataclass(frozen=True)
class QueryFailed:
    """A query failed after its whole retry budget."""

    failure: CountFailure


VerifyEvent = Notice | BytesReceived | WaitingForBudget | QueryRetry | QueryFailed
VerifyProgress = Callable[[VerifyEvent], None]


@dataclass(frozen=True)
class Difference:
    """A day and event whose stored count is not Mixpanel's."""

    day: dt.date
    event: str
    stored: int
    mixpanel: int

    @property
    def difference(self) -> int:
        """Stored minus Mixpanel: below 0, events are missing; above, the store has more."""
        return self.stored - self.mixpanel


@dataclass
class VerifyResult(RunOutcome[CountFailure]):
    """What a check found: the library's return value and the CLI's summary.

    ``ok`` when every query was answered (the counts may still differ:
    :attr:`matches` says whether they do). ``settling_from`` is the first
    day of the lookback window: differences from then on may be late events
    Mixpanel has and the store has not received yet.
    """

    from_date: dt.date | None = None
    to_date: dt.date | None = None
    names: list[str] = field(default_factory=list)
    queries: int = 0
    compared: int = 0  # (day, event) pairs compared
    stored_total: int = 0
    mixpanel_total: int = 0
    differences: list[Difference] = field(default_factory=list)  # worst first
    settling_from: dt.date | None = None

    @property
    def matches(self) -> bool:
        """True when every query was answered and every count matched."""
        return self.ok and not self.differences

    @property
    def differing_days(self) -> list[dt.date]:
        """The days with a difference, in date order."""
        return sorted({d.day for d in self.differences})

    @property
    def settling_days(self) -> list[dt.date]:
        """The differing days inside the lookback window (still receiving late events)."""
        start = self.settling_from
        return [day for day in self.differing_days if start is not None and day >= start]
