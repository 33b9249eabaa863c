"""Which queries a check takes: event names grouped per query, days split per query.

Each query counts several event names over several days, so a check of a
year of a project with a few dozen events is a handful of queries, well
inside the Query API's 60 an hour. Names are grouped so that their JSON
array stays short enough for a URL; days are split into spans of at most
``days_per_query``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from mpexport.mixpanel.event_counts import MAX_NAMES_CHARS, MAX_NAMES_PER_QUERY, CountQuery
from mpexport.verify.options import MAX_DAYS_PER_QUERY


def name_groups(names: Sequence[str]) -> list[tuple[str, ...]]:
    """``names`` in groups that fit one query's URL, in order."""
    groups: list[tuple[str, ...]] = []
    group: list[str] = []
    chars = 2  # the array's brackets
    for name in names:
        size = len(json.dumps(name, ensure_ascii=False)) + 1
        if group and (len(group) >= MAX_NAMES_PER_QUERY or chars + size > MAX_NAMES_CHARS):
            groups.append(tuple(group))
            group, chars = [], 2
        group.append(name)
        chars += size
    if group:
        groups.append(tuple(group))
    return groups


def day_spans(first: dt.date, last: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    """``first..last`` as consecutive spans of at most ``days`` days."""
    spans = []
    start = first
    while start <= last:
        end = min(last, start + dt.timedelta(days=days - 1))
        spans.append((start, end))
        start = end + dt.timedelta(days=1)
    return spans


def plan_queries(first: dt.date, last: dt.date, names: Sequence[str],
                 days_per_query: int | None = None) -> list[CountQuery]:
    """Every query of a check of ``names`` over ``first..last``, in date order."""
    days = days_per_query or MAX_DAYS_PER_QUERY
    groups = name_groups(names)
    queries: list[CountQuery] = []
    for start, end in day_spans(first, last, days):
        for group in groups:
            queries.append(CountQuery(len(queries), start, end, group))
    return queries
