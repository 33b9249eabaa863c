"""Deterministic event data: what the fake server holds for each UTC day."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from mpexport.fakeserver.events import TRICKY_TEXT, Props, long_text, make_event, pick_event_name
from mpexport.fakeserver.where import Predicate, compile_where

_LATE_DELAY_MS = 3 * 86_400_000
# ensure_ascii=False writes U+2028/U+2029 and emoji raw, as Mixpanel does.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# (name, lines) for one day in one time unit; names parallel lines for the event filter.
_DayData = tuple[list[str], list[bytes]]


def _render(name: str, props: Props, time_in_ms: bool) -> bytes:
    if not time_in_ms:
        props = dict(props)
        props["time"] = props["time"] // 1000
    return (_ENCODER.encode({"event": name, "properties": props}) + "\n").encode("utf-8")


class Dataset:
    """The events a fake Mixpanel project holds, generated from ``seed``.

    Every day is a pure function of (seed, day, constructor arguments, number of
    late events added to that day), identical across processes.

    ``quiet_every``: days whose ordinal is a multiple of it have no events.
    ``long_values``: each non-quiet day has one event with a 20-100 kB string.
    ``cache_bytes``: bound on the rendered lines kept in memory (LRU by day).
    """

    def __init__(
        self,
        seed: int = 0,
        events_per_day: int = 200,
        quiet_every: int = 0,
        long_values: bool = True,
        cache_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self.seed = seed
        self.events_per_day = events_per_day
        self.quiet_every = quiet_every
        self.long_values = long_values
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._late: dict[dt.date, int] = {}
        self._cache: OrderedDict[tuple[dt.date, bool, int], tuple[_DayData, int]] = OrderedDict()
        self._cached_bytes = 0

    def is_quiet(self, day: dt.date) -> bool:
        """True when ``day`` is a quiet day (no regular events)."""
        return self.quiet_every > 0 and day.toordinal() % self.quiet_every == 0

    def late_count(self, day: dt.date) -> int:
        """How many late events have been added to ``day``."""
        with self._lock:
            return self._late.get(day, 0)

    def add_late_events(self, day: dt.date, count: int) -> None:
        """Add ``count`` late events to ``day``; earlier lines stay as they were.

        Late event ``i`` of a day depends only on (seed, day, i), so adding 3
        then 2 gives the same lines as adding 5.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._late[day] = self._late.get(day, 0) + count

    def _base_events(self, day: dt.date) -> list[tuple[str, Props]]:
        if self.is_quiet(day) or self.events_per_day <= 0:
            return []
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        day_start = calendar.timegm(day.timetuple())
        count = max(1, round(self.events_per_day * rng.uniform(0.8, 1.2)))
        events = [make_event(rng, day_start) for _ in range(count)]
        events[0][1]["comment"] = TRICKY_TEXT
        if self.long_values:
            events[rng.randrange(count)][1]["payload"] = long_text(rng)
        # Same $insert_id with another event name: distinct events, must both survive.
        for _ in range(max(1, count // 200)):
            name, props = events[rng.randrange(count)]
            other = pick_event_name(rng)
            while other == name:
                other = pick_event_name(rng)
            events.append((other, dict(props)))
        # Exact duplicates: the very same event object, hence the same bytes.
        for _ in range(max(1, count // 100)):
            events.append(events[rng.randrange(count)])
        rng.shuffle(events)
        return events

    def _late_events(self, day: dt.date, count: int) -> list[tuple[str, Props]]:
        day_start = calendar.timegm(day.timetuple())
        return [
            make_event(
                random.Random(f"{self.seed}:{day.isoformat()}:late:{i}"), day_start, _LATE_DELAY_MS
            )
            for i in range(count)
        ]

    def _day_data(self, day: dt.date, time_in_ms: bool) -> _DayData:
        late = self.late_count(day)
        key = (day, time_in_ms, late)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit[0]
        events = self._base_events(day) + self._late_events(day, late)
        data: _DayData = (
            [name for name, _ in events],
            [_render(name, props, time_in_ms) for name, props in events],
        )
        # ~60 bytes of object overhead per line on top of its payload.
        size = sum(len(line) for line in data[1]) + 60 * len(events)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = (data, size)
                self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                _, (_, old_size) = self._cache.popitem(last=False)
                self._cached_bytes -= old_size
        return data

    def warm(self, from_date: dt.date, to_date: dt.date, time_in_ms: bool = False) -> int:
        """Render and cache the days of a range ahead of time; return the line count.

        Generation costs ~20 us per event, so benchmarks call this first to time
        the exporter rather than the data generator.
        """
        total = 0
        day = from_date
        while day <= to_date:
            total += len(self._day_data(day, time_in_ms)[1])
            day += dt.timedelta(days=1)
        return total

    def lines_for_day(self, day: dt.date, time_in_ms: bool = False) -> list[bytes]:
        """The exact NDJSON lines held for the UTC ``day``, in serving order."""
        return list(self._day_data(day, time_in_ms)[1])

    def iter_range(
        self,
        from_date: dt.date,
        to_date: dt.date,
        events: Sequence[str] | None = None,
        where: str | None = None,
        limit: int | None = None,
        time_in_ms: bool = False,
    ) -> Iterator[list[bytes]]:
        """Yield the query's lines one day at a time (same order as ``lines_for_range``).

        Raises ``WhereError`` (a ``ValueError``) for an unsupported ``where``.
        """
        predicate: Predicate | None = compile_where(where) if where is not None else None
        wanted = set(events) if events is not None else None
        remaining = limit
        day = from_date
        while day <= to_date and (remaining is None or remaining > 0):
            names, lines = self._day_data(day, time_in_ms)
            day += dt.timedelta(days=1)
            if wanted is not None or predicate is not None:
                lines = [
                    line
                    for name, line in zip(names, lines, strict=True)
                    if (wanted is None or name in wanted)
                    and (predicate is None or predicate(_properties(line)))
                ]
            if remaining is not None:
                lines = lines[:remaining]
                remaining -= len(lines)
            if lines:
                yield lines

    def lines_for_range(
        self,
        from_date: dt.date,
        to_date: dt.date,
        events: Sequence[str] | None = None,
        where: str | None = None,
        limit: int | None = None,
        time_in_ms: bool = False,
    ) -> list[bytes]:
        """Exactly the lines a query with these parameters returns, in serving order."""
        out: list[bytes] = []
        for batch in self.iter_range(from_date, to_date, events, where, limit, time_in_ms):
            out.extend(batch)
        return out


def _properties(line: bytes) -> dict[str, Any]:
    props = json.loads(line)["properties"]
    assert isinstance(props, dict)
    return props
