"""The Query API's aggregate event counts (``GET /api/query/events``) over the held data.

``type=general``, ``unit=day``: for each name of the ``event`` JSON array,
the events per day from ``from_date`` to ``to_date``, counted as Mixpanel's
reports count them: copies sharing event, distinct_id, time and
``$insert_id`` once. A dataset's days are the project's days (for a project
created before 2023 its ``time`` values are the project's wall clock, so a
day's events are the project's day), so the counts are per dataset day.
Answers ``{"data": {"series": [days], "values": {name: {day: n}}},
"legend_size": names}``, under the Query API's limits, which it shares
with the engage endpoint (429 beyond them).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from mpexport.fakeserver.config import ServerConfig
from mpexport.fakeserver.dataset import Dataset, parse_line
from mpexport.fakeserver.ratelimit import RateLimiter
from mpexport.fakeserver.request import ApiError, auth_kind, authenticate, parse_query
from mpexport.fakeserver.stats import RequestRecord, ServerStats
from mpexport.fakeserver.wire import send_json, wait_or_abort

COUNTS_PATHS = ("/api/query/events", "/api/query/events/")
_FAULTS = {"http500": (500, "Internal server error"), "http429": (429, "")}


def day_counts(dataset: Dataset, day: dt.date, until: dt.datetime | None = None) -> Counter[str]:
    """Events per name on ``day``, copies of one event counted once.

    ``until``: only the events the export serves, those stamped by that instant.
    """
    seen: set[tuple[str, str, Any, str]] = set()
    counts: Counter[str] = Counter()
    for line in dataset.lines_for_day(day, time_in_ms=True, until=until):
        event = parse_line(line)
        props = event.get("properties") or {}
        key = (str(event.get("event")), json.dumps(props.get("distinct_id")),
               props.get("time"), json.dumps(props.get("$insert_id")))
        if key not in seen:
            seen.add(key)
            counts[key[0]] += 1
    return counts


class CountsEndpoint:
    """Serves ``COUNTS_PATHS`` for one ``FakeMixpanelServer``.

    ``limiter`` is the Query API's (the engage endpoint's). The first attempt
    of the Nth distinct query gets ``config.counts_faults[N % len]``.
    """

    def __init__(self, config: ServerConfig, stats: ServerStats, stopping: threading.Event,
                 limiter: RateLimiter) -> None:
        self.config = config
        self.stats = stats
        self.stopping = stopping
        self.limiter = limiter
        self._lock = threading.Lock()
        self._numbers: dict[tuple[tuple[str, str], ...], int] = {}
        self._attempts: Counter[tuple[tuple[str, str], ...]] = Counter()
        self._cache: dict[tuple[dt.date, int], Counter[str]] = {}

    def handle(self, handler: BaseHTTPRequestHandler, path: str, query_string: str) -> None:
        """Answer one request to a counts path."""
        params = dict(parse_qsl(query_string, keep_blank_values=True))
        record = self.stats.add(RequestRecord(arrival=self.config.clock(), path=path,
                                              params=params))

        def refuse(status: int, error: str, headers: dict[str, str] | None = None) -> None:
            record.status, record.error = status, error
            record.bytes_sent = send_json(handler, status, {"request": path, "error": error},
                                          headers)

        record.auth = auth_kind(handler.headers.get("Authorization"))
        try:
            authenticate(self.config, handler.headers.get("Authorization"), params)
            names, first, last = self._parse(params)
        except ApiError as exc:
            refuse(exc.status, exc.error)
            return
        retry = {} if self.config.retry_after is None else {
            "Retry-After": str(self.config.retry_after)}
        refusal = self.limiter.try_acquire()
        if refusal is not None:
            refuse(429, refusal.error, retry)
            return
        try:
            wait_or_abort(self.stopping, self.config.ttfb)
            fault = self._fault(params)
            record.fault = fault
            if fault is not None:
                status, error = _FAULTS[fault]
                refuse(status, error or "Query rate limit exceeded", retry)
                return
            body = self._answer(names, first, last)
        finally:
            # Released before the answer is written: a client that asks again
            # as soon as it has read it must not count as concurrent with itself.
            self.limiter.release()
        record.status = 200
        record.bytes_sent = send_json(handler, 200, body)

    def _parse(self, params: dict[str, str]) -> tuple[list[str], dt.date, dt.date]:
        if params.get("type", "general") != "general":
            raise ApiError(400, "only type=general is served here")
        if params.get("unit", "day") != "day":
            raise ApiError(400, "only unit=day is served here")
        raw = params.get("event")
        try:
            names = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not names or not all(
                isinstance(n, str) for n in names):
            raise ApiError(400, f"event must be a JSON array of event names, got {raw!r}")
        query = parse_query(self.config, params)  # from_date/to_date, as export checks them
        return names, query.from_date, query.to_date

    def _fault(self, params: dict[str, str]) -> str | None:
        faults = self.config.counts_faults
        if not faults:
            return None
        key = tuple(sorted(params.items()))
        with self._lock:
            number = self._numbers.setdefault(key, len(self._numbers))
            self._attempts[key] += 1
            first = self._attempts[key] == 1
        return faults[number % len(faults)] if first else None

    def _day(self, day: dt.date) -> Counter[str]:
        dataset = self.config.dataset
        until = self.config.served_until()
        if until is not None and day >= until.date():
            # Counted afresh: the clock moves on, and the day with it.
            return day_counts(dataset, day, until)
        key = (day, dataset.late_count(day))
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = day_counts(dataset, day)
            with self._lock:
                self._cache[key] = hit
        return hit

    def _answer(self, names: list[str], first: dt.date, last: dt.date) -> dict[str, Any]:
        days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
        per_day = {day: self._day(day) for day in days}
        values = {name: {day.isoformat(): per_day[day][name] for day in days} for name in names}
        return {"data": {"series": [day.isoformat() for day in days], "values": values},
                "legend_size": len(names)}
