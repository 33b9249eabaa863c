"""Deterministic event data: what the fake server holds for each UTC day."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from mpexport.fakeserver.events import TRICKY_TEXT, Props, long_text, make_event, pick_event_name
from mpexport.fakeserver.realistic import RealisticDays
from mpexport.fakeserver.where import Predicate, compile_where

Profile = Literal["small", "realistic"]
PROFILES: tuple[Profile, ...] = ("small", "realistic")

_LATE_DELAY_MS = 3 * 86_400_000
# How much later Mixpanel processed a re-sent copy than the copy before it,
# unless the caller says otherwise.
_RESEND_DELAY_MS = 60_000
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
    ``long_values``: each non-quiet day has one event with a 20-100 kB string
    (small profile only: realistic strings are cut at 255 bytes, as Mixpanel's are).
    ``cache_bytes``: bound on the rendered lines kept in memory (LRU by day; the
    most recent day is always kept). A realistic day takes ~1.6 kB an event, so
    a 1M-event day is ~1.6 GB: benchmarks that revisit such days should pass a
    ``cache_bytes`` above their whole range, or each visit renders the day again.

    ``profile``: ``"small"`` (the default; ~300-byte events, unchanged output)
    or ``"realistic"`` (Mixpanel-like events of 1-2 kB with ~45 properties, the
    255-byte cut, lines that are not valid UTF-8, lone surrogate escapes and
    the other oddities in ``realistic.ODDITY_KINDS``; see the ``realistic`` package).
    ``oddity_every``: realistic only; each oddity kind occurs about once per
    this many events, and at least once on a day with half that many events
    or more; 0 turns oddities off.
    ``big_event_every``: realistic only; near-1 MB events (still < 10**6
    bytes) occur about once per this many events, at least once on a day with
    half that many or more; 0 turns them off.
    """

    def __init__(
        self,
        seed: int = 0,
        events_per_day: int = 200,
        quiet_every: int = 0,
        long_values: bool = True,
        cache_bytes: int = 1024 * 1024 * 1024,
        profile: Profile = "small",
        oddity_every: int = 2000,
        big_event_every: int = 100_000,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        self.seed = seed
        self.events_per_day = events_per_day
        self.quiet_every = quiet_every
        self.long_values = long_values
        self.cache_bytes = cache_bytes
        self.profile = profile
        self.oddity_every = oddity_every
        self.big_event_every = big_event_every
        self._realistic_days: RealisticDays | None = None
        self._lock = threading.Lock()
        self._late: dict[dt.date, int] = {}
        # Per day, the rounds of re-sent copies: (events re-sent, delay in ms).
        self._resent: dict[dt.date, tuple[tuple[int, int], ...]] = {}
        self._cache: OrderedDict[
            tuple[dt.date, bool, int, tuple[tuple[int, int], ...]], tuple[_DayData, int]
        ] = OrderedDict()
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

    def resend_events(self, day: dt.date, count: int, later_by_ms: int = _RESEND_DELAY_MS) -> None:
        """Serve a corrected copy of ``count`` of the day's events, as ``/import`` re-sends them.

        Each copy keeps its event's Mixpanel key (event name, ``distinct_id``,
        ``time``, ``$insert_id``) and differs in its properties: ``corrected``
        is the round (1 for the first call on this day, 2 for the next, ...)
        and ``mp_processing_time_ms`` is ``later_by_ms`` after the copy
        before it (0 makes a copy processed at the same instant). The
        original lines stay where they were and the copies follow the day's
        own lines, as raw export lists both copies until Mixpanel compacts
        them. Which events are re-sent depends only on (seed, day), so every
        round re-sends the first ``count`` of the same shuffled events.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._resent[day] = (*self._resent.get(day, ()), (count, later_by_ms))

    def _with_resends(self, day: dt.date, data: _DayData, late: int,
                      rounds: tuple[tuple[int, int], ...]) -> _DayData:
        """``data`` with the copies of the re-send ``rounds`` after the day's own lines."""
        if not rounds:
            return data
        names, lines = list(data[0]), list(data[1])
        # Picked among the day's regular events only, so adding late events
        # does not change which events were re-sent; parsed lazily, as few
        # as the largest round needs.
        order = list(range(len(lines) - late))
        random.Random(f"{self.seed}:{day.isoformat()}:resend").shuffle(order)
        wanted = max(n for n, _ in rounds)
        picks: list[int] = []
        latest: dict[int, dict[str, Any]] = {}
        for i in order:
            if len(picks) == wanted:
                break
            event = _copyable(lines[i])
            if event is not None:
                picks.append(i)
                latest[i] = event
        for number, (count, later_by_ms) in enumerate(rounds, start=1):
            for i in picks[:count]:
                event = latest[i]
                props = dict(event["properties"])
                props["mp_processing_time_ms"] += later_by_ms
                props["corrected"] = number
                latest[i] = event = {"event": event["event"], "properties": props}
                names.append(event["event"])
                lines.append((_ENCODER.encode(event) + "\n").encode("utf-8"))
        return names, lines

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

    def _realistic(self) -> RealisticDays:
        with self._lock:
            # Built on first use: its pools take up to ~0.3 s.
            if self._realistic_days is None:
                self._realistic_days = RealisticDays(
                    self.seed, self.events_per_day, self.oddity_every, self.big_event_every
                )
            return self._realistic_days

    def _realistic_day(self, day: dt.date, late: int, time_in_ms: bool) -> _DayData:
        days = self._realistic()
        names: list[str] = []
        lines: list[bytes] = []
        if not self.is_quiet(day) and self.events_per_day > 0:
            names, lines = days.base_day(day, time_in_ms)
        for i in range(late):
            name, line = days.late_event(day, i, _LATE_DELAY_MS, time_in_ms)
            names.append(name)
            lines.append(line)
        return names, lines

    def _day_data(self, day: dt.date, time_in_ms: bool) -> _DayData:
        with self._lock:
            late = self._late.get(day, 0)
            rounds = self._resent.get(day, ())
        key = (day, time_in_ms, late, rounds)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit[0]
        data: _DayData
        if self.profile == "realistic":
            data = self._realistic_day(day, late, time_in_ms)
        else:
            events = self._base_events(day) + self._late_events(day, late)
            data = (
                [name for name, _ in events],
                [_render(name, props, time_in_ms) for name, props in events],
            )
        data = self._with_resends(day, data, late, rounds)
        # ~60 bytes of object overhead per line on top of its payload.
        size = sum(len(line) for line in data[1]) + 60 * len(data[1])
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

        Generation costs ~30 us an event (small profile) or a few us (realistic),
        so benchmarks call this first to time the exporter, not the generator.
        """
        total = 0
        day = from_date
        while day <= to_date:
            total += len(self._day_data(day, time_in_ms)[1])
            day += dt.timedelta(days=1)
        return total

    def lines_for_day(self, day: dt.date, time_in_ms: bool = False,
                      until: dt.datetime | None = None) -> list[bytes]:
        """The exact NDJSON lines held for the UTC ``day``, in serving order.

        ``until``: only events stamped by that instant (see ``iter_range``).
        """
        names, lines = self._day_data(day, time_in_ms)
        if until is not None and day >= until.date():
            names, lines = _stamped_by(until, names, lines, time_in_ms)
        return list(lines)

    def iter_range(
        self,
        from_date: dt.date,
        to_date: dt.date,
        events: Sequence[str] | None = None,
        where: str | None = None,
        limit: int | None = None,
        time_in_ms: bool = False,
        until: dt.datetime | None = None,
    ) -> Iterator[list[bytes]]:
        """Yield the query's lines one day at a time (same order as ``lines_for_range``).

        ``until``: leave out events stamped later than that instant (UTC; a
        second that has not ended yet counts as later), as Mixpanel holds
        nothing from the future: only the days from ``until``'s on change.
        Raises ``WhereError`` (a ``ValueError``) for an unsupported ``where``.
        """
        predicate: Predicate | None = compile_where(where) if where is not None else None
        wanted = set(events) if events is not None else None
        remaining = limit
        day = from_date
        while day <= to_date and (remaining is None or remaining > 0):
            names, lines = self._day_data(day, time_in_ms)
            if until is not None and day >= until.date():
                names, lines = _stamped_by(until, names, lines, time_in_ms)
            day += dt.timedelta(days=1)
            if wanted is not None or predicate is not None:
                lines = [
                    line
                    for name, line in zip(names, lines, strict=True)
                    if (wanted is None or name in wanted)
                    and (predicate is None or predicate(parse_line(line)["properties"]))
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
        until: dt.datetime | None = None,
    ) -> list[bytes]:
        """Exactly the lines a query with these parameters returns, in serving order."""
        out: list[bytes] = []
        for batch in self.iter_range(from_date, to_date, events, where, limit, time_in_ms,
                                     until=until):
            out.extend(batch)
        return out


def _stamped_by(until: dt.datetime, names: list[str], lines: list[bytes],
                time_in_ms: bool) -> _DayData:
    """The events of ``names``/``lines`` stamped in a second that ended by ``until``.

    Whole seconds, so that a query with ``time_in_ms`` and one without keep
    the same events. A line without an integer ``time`` is kept: what such a
    line means is the client's problem, not the clock's.
    """
    limit = calendar.timegm(until.utctimetuple())  # the second ``until`` is in has not ended
    kept_names: list[str] = []
    kept_lines: list[bytes] = []
    for name, line in zip(names, lines, strict=True):
        props = parse_line(line).get("properties")
        stamp = props.get("time") if isinstance(props, dict) else None
        if type(stamp) is int:
            seconds = stamp // 1000 if time_in_ms else stamp
            if seconds >= limit:
                continue
        kept_names.append(name)
        kept_lines.append(line)
    return kept_names, kept_lines


def _copyable(line: bytes) -> dict[str, Any] | None:
    """The event of a line that can be re-sent as a corrected copy, else None.

    The realistic profile's odd lines (invalid UTF-8, a lone surrogate, no
    processing time) are left alone: a copy written from their parsed value
    would differ in more than the correction.
    """
    try:
        event = json.loads(line)
        _ENCODER.encode(event).encode("utf-8")
    except ValueError:  # UnicodeError is one
        return None
    props = event.get("properties") if isinstance(event, dict) else None
    if not isinstance(props, dict) or type(props.get("mp_processing_time_ms")) is not int:
        return None
    return event  # type: ignore[no-any-return]


def parse_line(line: bytes) -> dict[str, Any]:
    """Parse one exported event line leniently: ``{"event": ..., "properties": {...}}``.

    Unlike ``json.loads(line)`` it accepts lines that are not valid UTF-8 (the
    realistic profile has some, as the real API does): each invalid byte
    sequence becomes U+FFFD. A lone surrogate escape such as ``\\ud83d``
    becomes a lone surrogate code point in the str (``"\\ud83d"`` in Python),
    which ``str.encode("utf-8")`` refuses without ``errors="surrogatepass"``.
    Integers of any size become ``int``; ``\\u0000`` becomes ``"\\x00"``.
    Raises ``ValueError`` when the line is not a JSON object.
    """
    event = json.loads(line.decode("utf-8", errors="replace"))
    if not isinstance(event, dict):
        raise ValueError("an event line must be a JSON object")
    return event
