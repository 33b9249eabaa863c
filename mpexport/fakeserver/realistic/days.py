"""``RealisticDays``: a day's lines assembled from the pools, in serving order.

The hot loop of the realistic profile: a line is one bytes %-format of a
few per-event values (cut from bulk random bits) and pre-rendered fragments.
"""

from __future__ import annotations

import binascii
import bisect
import calendar
import datetime as dt
import itertools
import random
import struct
from collections.abc import Iterator

from mpexport.fakeserver.events import EVENT_NAMES, EVENT_WEIGHTS
from mpexport.fakeserver.realistic.oddities import BIG_EVENT, ODDITY_KINDS, odd_line
from mpexport.fakeserver.realistic.pools import Pools

DAY_MS = 86_400_000
SESSION_MS = 30 * 60 * 1000
# Mixpanel says "1 MB"; staying under 10**6 bytes satisfies either reading of it.
MAX_EVENT_BYTES = 1_000_000
# A near-1 MB event lands in [_BIG_TARGET - 8 KB, _BIG_TARGET].
_BIG_TARGET = MAX_EVENT_BYTES - 1_000
# About 3% of events carry one list or object value of up to 8 KB.
_COLLECTION_PER_1024 = 31

# The header every regular line starts with; fragments each begin with a comma.
_LINE = (
    b'{"event":%s,"properties":{"time":%d,"distinct_id":%s,"$insert_id":"%s",'
    b'"mp_processing_time_ms":%d,"$mp_api_timestamp_ms":%d,"$session_id":"%s-%x"'
    b"%s%s%s%s}}\n"
)
_EVENT_PREFIX = b'{"event":'

_DayLines = tuple[list[str], list[bytes]]


def _weighted_slots(size: int) -> list[int]:
    """Event-name indices for ``size`` equal slices of the weights' total."""
    cumulative = list(itertools.accumulate(weight for _, weight in EVENT_WEIGHTS))
    return [bisect.bisect_right(cumulative, (j + 0.5) * cumulative[-1] / size) for j in range(size)]


# A 10-bit random field picks an event name with (nearly) the small profile's weights.
_SLOTS = _weighted_slots(1024)
# Processing delay by a 12-bit field: mostly seconds, a long tail of hours (offline phones).
_DELAYS = [300 + int(((j + 0.5) / 4096) ** 8 * 7_200_000) for j in range(4096)]


def _insert_ids(raw: bytes) -> tuple[Iterator[tuple[bytes]], Iterator[tuple[bytes]]]:
    """Per-event ``$insert_id`` candidates from 16 random bytes each.

    Web SDKs send 32 lower-case hex digits; mobile SDKs an upper-case UUID of
    36 characters, Mixpanel's maximum. Both come as whole-day blobs built by
    C-level (strided) copies, then cut into records by struct.
    """
    count = len(raw) // 16
    web = binascii.hexlify(raw)
    upper = web.upper()
    uuid = bytearray(b"-" * (36 * count))
    src = dst = 0
    for width in (8, 4, 4, 4, 12):
        for j in range(width):
            uuid[dst + j :: 36] = upper[src + j :: 32]
        src += width
        dst += width + 1
    return struct.iter_unpack("32s", web), struct.iter_unpack("36s", uuid)


def occurrences(count: int, every: int) -> int:
    """How many times a 1-in-``every`` rarity occurs among ``count`` events.

    At least once when ``count`` is at least ``every / 2`` (so a 1-in-2000
    oddity shows up in every day of 1000+ events); never when ``every`` <= 0.
    """
    if every <= 0 or 2 * count < every:
        return 0
    return max(1, round(count / every))


class RealisticDays:
    """Renders realistic days for one Dataset; pools are built on creation.

    Pure function of the constructor arguments and each call's arguments, so
    identical across processes.
    """

    def __init__(
        self, seed: int, events_per_day: int, oddity_every: int, big_event_every: int
    ) -> None:
        self.seed = seed
        self.events_per_day = events_per_day
        self.oddity_every = oddity_every
        self.big_event_every = big_event_every
        # About 20 events a user a day; the bound keeps pool building under ~0.3 s.
        n_users = min(20_000, max(200, events_per_day // 20))
        self.pools = Pools(random.Random(f"{seed}:realistic:pools"), n_users)
        # Indexed by the 10-bit event-name field of the hot loop.
        self._slot_names = [EVENT_NAMES[i] for i in _SLOTS]
        self._slot_json = [self.pools.name_json[name] for name in self._slot_names]
        self._slot_extras = [self.pools.extras[name] for name in self._slot_names]

    def base_day(self, day: dt.date, time_in_ms: bool) -> _DayLines:
        """The day's regular, odd, big and duplicate events, in serving order."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}:realistic")
        count = max(1, round(self.events_per_day * rng.uniform(0.8, 1.2)))
        start_ms = calendar.timegm(day.timetuple()) * 1000
        div = 1 if time_in_ms else 1000
        names, lines = self._regular(rng, count, start_ms, div)
        n_big = occurrences(count, self.big_event_every)
        n_odd = occurrences(count, self.oddity_every)
        kinds = [BIG_EVENT] * n_big + [kind for _ in range(n_odd) for kind in ODDITY_KINDS]
        # Distinct positions; a day with fewer events than kinds gets only the first kinds.
        slots = rng.sample(range(count), min(count, len(kinds)))
        for index, kind in zip(slots, kinds, strict=False):
            names[index], lines[index] = self._special(rng, kind, start_ms, div)
        return self._with_duplicates(rng, names, lines)

    def late_event(
        self, day: dt.date, i: int, delay_ms: int, time_in_ms: bool
    ) -> tuple[str, bytes]:
        """Late event ``i`` of ``day``: depends only on (seed, day, i)."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}:realistic:late:{i}")
        start_ms = calendar.timegm(day.timetuple()) * 1000
        names, lines = self._regular(rng, 1, start_ms, 1 if time_in_ms else 1000, delay_ms)
        return names[0], lines[0]

    def _regular(
        self, rng: random.Random, count: int, start_ms: int, div: int, late_ms: int = 0
    ) -> _DayLines:
        # The hot loop. Randomness comes in bulk (a C-level draw and unpack)
        # and is cut into bit fields, since each int(rng.random() * n) costs
        # ~10% of an event's budget. Any change to the fields or their order
        # changes every day's bytes.
        words = struct.iter_unpack("<QQ", rng.randbytes(16 * count))
        web_ids, app_ids = _insert_ids(rng.randbytes(16 * count))
        pools = self.pools
        names_by_slot, json_by_slot = self._slot_names, self._slot_json
        extras_by_slot = self._slot_extras
        u_distinct, u_session, u_web, u_frag = (
            pools.user_distinct,
            pools.user_session,
            pools.user_web,
            pools.user_frag,
        )
        n_users = len(u_frag)
        web_ctx, app_ctx, collections = pools.web_ctx, pools.app_ctx, pools.collections
        delays = _DELAYS
        line = _LINE
        names: list[str] = []
        lines: list[bytes] = []
        add_name, add_line = names.append, lines.append
        for (x, y), (web_id,), (app_id,) in zip(words, web_ids, app_ids, strict=True):
            k = x & 1023
            u = ((x >> 10) & 0xFFFFFFFF) % n_users
            coll = collections[(x >> 52) & 63] if (x >> 42) & 1023 < _COLLECTION_PER_1024 else b""
            t = start_ms + ((y & 0xFFFFFFFF) * DAY_MS >> 32)
            delay = delays[(y >> 32) & 4095] + late_ms
            if u_web[u]:
                insert_id = web_id
                ctx = web_ctx[(y >> 44) & 1023]
            else:
                insert_id = app_id
                ctx = app_ctx[(y >> 44) & 1023]
            add_name(names_by_slot[k])
            add_line(
                line
                % (
                    json_by_slot[k],
                    t // div,
                    u_distinct[u],
                    insert_id,
                    t + delay,
                    t + (delay >> 3),
                    u_session[u],
                    t // SESSION_MS,
                    u_frag[u],
                    ctx,
                    extras_by_slot[k][y >> 58],
                    coll,
                )
            )
        return names, lines

    def _special(self, rng: random.Random, kind: str, start_ms: int, div: int) -> tuple[str, bytes]:
        names, lines = self._regular(rng, 1, start_ms, div)
        name, line = names[0], lines[0]
        if kind == BIG_EVENT:
            return name, self._big(line, div)
        return name, odd_line(rng, kind, line)

    def _big(self, line: bytes, div: int) -> bytes:
        # Size from the millisecond rendering (3 more time digits), so the
        # seconds and milliseconds renderings carry the same properties.
        size = len(line) + (3 if div == 1000 else 0)
        bulk = self.pools.bulk
        parts = [line[:-3]]
        i = 0
        while size + len(bulk[i % len(bulk)]) + 12 <= _BIG_TARGET:
            value = bulk[i % len(bulk)]
            parts.append(b',"bulk_%03d":%s' % (i, value))
            size += len(value) + 12
            i += 1
        parts.append(b"}}\n")
        return b"".join(parts)

    def _with_duplicates(
        self, rng: random.Random, names: list[str], lines: list[bytes]
    ) -> _DayLines:
        count = len(lines)
        extra: list[tuple[int, str, bytes]] = []
        # Same $insert_id with another event name: distinct events, must both survive.
        for _ in range(max(1, count // 200)):
            i = int(rng.random() * count)
            other = self._slot_names[int(rng.random() * len(_SLOTS))]
            while other == names[i]:
                other = self._slot_names[int(rng.random() * len(_SLOTS))]
            cut = len(_EVENT_PREFIX) + len(self.pools.name_json[names[i]])
            renamed = _EVENT_PREFIX + self.pools.name_json[other] + lines[i][cut:]
            extra.append((int(rng.random() * (count + 1)), other, renamed))
        # Exact duplicates: the very same bytes object, so no extra memory.
        for _ in range(max(1, count // 100)):
            i = int(rng.random() * count)
            extra.append((int(rng.random() * (count + 1)), names[i], lines[i]))
        # Splicing at sorted positions is O(n) list copies in C; a shuffle of
        # a million-line day would cost more than rendering it.
        extra.sort(key=lambda item: item[0])
        out_names: list[str] = []
        out_lines: list[bytes] = []
        prev = 0
        for pos, name, line in extra:
            out_names.extend(names[prev:pos])
            out_lines.extend(lines[prev:pos])
            out_names.append(name)
            out_lines.append(line)
            prev = pos
        out_names.extend(names[prev:])
        out_lines.extend(lines[prev:])
        return out_names, out_lines
