"""Stored counts against Mixpanel's: the differences, worst first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from mpexport.verify.model import Difference

Counts = Mapping[tuple[dt.date, str], int]


def differences(stored: Counts, mixpanel: Counts,
                pairs: Iterable[tuple[dt.date, str]]) -> list[Difference]:
    """Each of ``pairs`` (day, event) whose counts differ; the largest gap first.

    A pair missing from either side counts 0 there: a day the store lacks
    entirely shows as all of Mixpanel's events missing.
    """
    found = [Difference(day, event, stored.get((day, event), 0), mixpanel.get((day, event), 0))
             for day, event in pairs
             if stored.get((day, event), 0) != mixpanel.get((day, event), 0)]
    return sorted(found, key=lambda d: (-abs(d.difference), d.day, d.event))
