"""One query of the Query API's aggregate event counts: GET, read whole, retried.

``GET {query host}/api/query/events`` with ``type=general`` and ``unit=day``
counts each of several event names per day of a range, as Mixpanel's
reports do (copies sharing event, distinct_id, time and ``$insert_id``
count once). The answer is one small JSON document::

    {"data": {"series": ["2024-01-01", ...],
              "values": {"Purchase": {"2024-01-01": 12, ...}, ...}},
     "legend_size": 2}

A day Mixpanel has no event of a name for may be missing from ``values``
or be 0; both read as 0. A document that does not parse whole, or lacks a
day or a name that was asked for in ``series``, is a retry, as a cut
export body is. Errors are classified by the transport's rules, shared with
export and engage (400 bad parameters, 401/403 credentials, 429 waits, 5xx
retried); the retry loop is the transport's too.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint
from mpexport.mixpanel.transport import (
    FetchSettings,
    GaveUp,
    RequestGate,
    RetryableError,
    fail_for_status,
    read_blocks,
    send,
    with_retries,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger("mpexport.http")

EVENTS_PATH = "/api/query/events"
# Event names per query: the names travel in the URL as a JSON array, and
# proxies refuse URLs much past 8 KB; this many names of any usual length fit.
MAX_NAMES_PER_QUERY = 50
MAX_NAMES_CHARS = 3000

DayCounts = dict[tuple[dt.date, str], int]


@dataclass(frozen=True)
class CountQuery:
    """One request: the daily counts of ``events`` from ``from_date`` to ``to_date``."""

    index: int
    from_date: dt.date
    to_date: dt.date
    events: tuple[str, ...]

    def label(self) -> str:
        """``2024-01-01..2024-01-31, 12 events``: the query in messages."""
        span = self.from_date.isoformat()
        if self.to_date != self.from_date:
            span += f"..{self.to_date.isoformat()}"
        return f"{span}, {len(self.events)} events"


def events_url(endpoint: Endpoint) -> str:
    """The full URL of the aggregate event counts endpoint."""
    return endpoint.base_url + EVENTS_PATH


def count_params(query: CountQuery, credentials: Credentials) -> dict[str, str]:
    """The query string of ``query``: ``project_id`` with a service account or a token only."""
    params = {
        "event": json.dumps(list(query.events), ensure_ascii=False),
        "type": "general",
        "unit": "day",
        "from_date": query.from_date.isoformat(),
        "to_date": query.to_date.isoformat(),
    }
    if credentials.sends_project_id:
        params["project_id"] = str(credentials.project_id)
    return params


def parse_counts(body: bytes, query: CountQuery) -> DayCounts:
    """The counts of a whole answer to ``query``; raise :class:`RetryableError` if it is not."""
    try:
        document: Any = json.loads(body)
        values = document["data"]["values"]
        if not isinstance(values, dict):
            raise TypeError("values is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise RetryableError(f"incomplete or invalid counts: {exc}") from None
    counts: DayCounts = {}
    for name in query.events:
        per_day = values.get(name) or {}
        if not isinstance(per_day, dict):
            raise RetryableError(f"the counts of {name!r} are not an object")
        day = query.from_date
        while day <= query.to_date:
            raw = per_day.get(day.isoformat(), 0)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                raise RetryableError(f"the count of {name!r} on {day} is not a number: {raw!r}")
            counts[(day, name)] = int(raw)
            day += dt.timedelta(days=1)
    return counts


def fetch_counts_once(session: requests.Session, endpoint: Endpoint, credentials: Credentials,
                      query: CountQuery, settings: FetchSettings, stop: threading.Event,
                      on_bytes: Callable[[int], None]) -> DayCounts:
    """Make one attempt at ``query``; return its counts, read and checked whole."""
    target = f"GET {endpoint.host}{EVENTS_PATH} {query.label()}"
    fail = functools.partial(fail_for_status, api="event counts", kind=credentials.kind)
    with send(session, "GET", events_url(endpoint), target=target, settings=settings,
              fail=fail, params=count_params(query, credentials),
              auth=credentials.auth()) as response:
        body = b"".join(read_blocks(response, stop, on_bytes, decode=True))
    return parse_counts(body, query)


@dataclass(frozen=True)
class FetchedCounts:
    """A query that was answered whole, and how many attempts it took."""

    query: CountQuery
    counts: DayCounts
    attempts: int


@dataclass(frozen=True)
class CountFailure:
    """A query that still failed after its retry budget."""

    query: CountQuery
    reason: str
    attempts: int


def fetch_counts(session: requests.Session, endpoint: Endpoint, credentials: Credentials,
                 query: CountQuery, settings: FetchSettings, stop: threading.Event,
                 on_bytes: Callable[[int], None],
                 on_retry: Callable[[CountQuery, int, str, float], None],
                 rng: random.Random, gate: RequestGate | None = None,
                 ) -> FetchedCounts | CountFailure:
    """Fetch ``query`` with the transport's retries, each start through ``gate``.

    Fatal errors propagate; a spent retry budget gives a :class:`CountFailure`.
    """
    outcome = with_retries(
        lambda: fetch_counts_once(session, endpoint, credentials, query, settings, stop,
                                  on_bytes),
        settings=settings, rng=rng, gate=gate, stop=stop,
        on_retry=functools.partial(on_retry, query))
    if isinstance(outcome, GaveUp):
        return CountFailure(query, outcome.reason, outcome.attempts)
    return FetchedCounts(query, outcome.value, outcome.attempts)
