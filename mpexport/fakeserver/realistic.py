"""Mixpanel-like event lines for ``Dataset(profile="realistic")``.

Shapes follow Mixpanel's documented limits: about 40 default SDK properties
and 1-2 KB a typical event, string values cut at 255 bytes, list and object
values up to 8 KB and at most 3 deep, events under 1 MB, plus the oddities
old data has (``ODDITY_KINDS``), including lines that are not valid UTF-8.

Benchmarks render millions of these, so everything that does not vary per
event is rendered once per Dataset into JSON fragments (bytes), and a line is
one bytes %-format of a few per-event values and those fragments: a few us an
event, where a dict plus json.dumps costs about 30 us.
"""

from __future__ import annotations

import binascii
import bisect
import calendar
import datetime as dt
import itertools
import json
import random
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

from mpexport.fakeserver.events import (
    APP_PLATFORMS,
    APP_VERSIONS,
    CARRIERS,
    EVENT_NAMES,
    EVENT_WEIGHTS,
    FEATURE_FLAGS,
    GEOS,
    HOSTS,
    LONG_TEXTS,
    MAX_STRING_BYTES,
    PATHS,
    PRODUCTS,
    REFERRERS,
    SCREENS,
    SEARCH_TERMS,
    SECTIONS,
    TITLES,
    UTM_SOURCES,
    UTM_TERMS,
    WEB_LIB_VERSIONS,
    WEB_PLATFORMS,
    Props,
    cut_text,
    event_properties,
    invalid_utf8_value,
    json_fragment,
    lone_surrogate_value,
)

__all__ = [
    "BIG_EVENT",
    "MAX_COLLECTION_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_STRING_BYTES",
    "ODDITY_KINDS",
    "RealisticDays",
]

DAY_MS = 86_400_000
SESSION_MS = 30 * 60 * 1000
# Mixpanel says "1 MB"; staying under 10**6 bytes satisfies either reading of it.
MAX_EVENT_BYTES = 1_000_000
# A near-1 MB event lands in [_BIG_TARGET - 8 KB, _BIG_TARGET].
_BIG_TARGET = MAX_EVENT_BYTES - 1_000
# About 3% of events carry one list or object value of up to 8 KB.
_COLLECTION_PER_1024 = 31
MAX_COLLECTION_BYTES = 8 * 1024

# Each kind is its own event, so a test can find it by its bytes alone.
ODDITY_KINDS: tuple[str, ...] = (
    "distinct_id_number",  # "distinct_id":123456789
    "distinct_id_missing",  # no distinct_id key
    "no_insert_id",  # no $insert_id key
    "no_processing_time",  # no mp_processing_time_ms key
    "nul_escape",  # "note":"...\u0000..." (the JSON escape, six ASCII bytes)
    "huge_integer",  # "order_number":<30 digits>, beyond 64 bits
    "empty_key",  # "":"..."
    "dotted_key",  # "a.b":... and "context.page.path":...
    "line_separator",  # raw U+2028 and U+2029 inside "comment"
    "invalid_utf8",  # "review_text" cut at 255 bytes inside a multi-byte character
    "lone_surrogate",  # "review_text" ending in the escape \ud83d or \ud83c, no low half
    "long_key",  # a property name of exactly 255 bytes
)
BIG_EVENT = "big_event"

# The header every regular line starts with; fragments each begin with a comma.
_LINE = (
    b'{"event":%s,"properties":{"time":%d,"distinct_id":%s,"$insert_id":"%s",'
    b'"mp_processing_time_ms":%d,"$mp_api_timestamp_ms":%d,"$session_id":"%s-%x"'
    b"%s%s%s%s}}\n"
)
_EVENT_PREFIX = b'{"event":'
# Only the header fields are edited, and the first match is always in the header
# because nothing before it can hold these keys.
_DISTINCT_ID = re.compile(rb'"distinct_id":"(?:[^"\\]|\\.)*"')
_NO_DISTINCT_ID = re.compile(rb',"distinct_id":"(?:[^"\\]|\\.)*"')
_NO_INSERT_ID = re.compile(rb',"\$insert_id":"[^"]*"')
_NO_PROCESSING_TIME = re.compile(rb',"mp_processing_time_ms":\d+')

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
        self.pools = _Pools(random.Random(f"{seed}:realistic:pools"), n_users)
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
        edit = _HEADER_EDITS.get(kind)
        if edit is not None:
            return name, edit(rng, line)
        return name, line[:-3] + _ODD_TAILS[kind](rng) + b"}}\n"

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


def _distinct_number(rng: random.Random, line: bytes) -> bytes:
    return _DISTINCT_ID.sub(b'"distinct_id":%d' % _int(rng, 1, 10**9), line, count=1)


def _drop(pattern: re.Pattern[bytes]) -> Callable[[random.Random, bytes], bytes]:
    return lambda rng, line: pattern.sub(b"", line, count=1)


_HEADER_EDITS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "distinct_id_number": _distinct_number,
    "distinct_id_missing": _drop(_NO_DISTINCT_ID),
    "no_insert_id": _drop(_NO_INSERT_ID),
    "no_processing_time": _drop(_NO_PROCESSING_TIME),
}


def _huge_integer(rng: random.Random) -> bytes:
    return b',"order_number":%d' % rng.randrange(10**29, 10**30)


def _props_tail(props: Props) -> Callable[[random.Random], bytes]:
    rendered = json_fragment(props)
    return lambda rng: rendered


_ODD_TAILS: dict[str, Callable[[random.Random], bytes]] = {
    "nul_escape": lambda rng: b',"note":"before\\u0000after"',
    "huge_integer": _huge_integer,
    "empty_key": _props_tail({"": "empty property name"}),
    "dotted_key": _props_tail({"a.b": "dotted", "context.page.path": "/pricing"}),
    "line_separator": _props_tail({"comment": "line one\u2028line two\u2029end"}),
    "invalid_utf8": lambda rng: b',"review_text":"' + invalid_utf8_value(rng) + b'"',
    "lone_surrogate": lambda rng: b',"review_text":"' + lone_surrogate_value(rng) + b'"',
    "long_key": _props_tail({("very_long_property_name_" * 11)[:MAX_STRING_BYTES]: True}),
}
assert set(_HEADER_EDITS) | set(_ODD_TAILS) == set(ODDITY_KINDS)


# --- pools: everything that does not vary per event, rendered once -------------------------

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ACCOUNT_PLANS = ("free", "pro", "enterprise", "trial")
_COLORS = ("black", "white", "rouge", "緑")
_SIZES = ("S", "M", "L", "XL")


def _pick(rng: random.Random, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.random() * len(seq))]


def _int(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low))


def _encoded_size(value: Any) -> int:
    return len(_ENCODER.encode(value).encode("utf-8"))


class _Pools:
    """Pre-rendered JSON fragments (each ``,"k":v...``) that events are assembled from."""

    def __init__(self, rng: random.Random, n_users: int) -> None:
        self.name_json = {name: _ENCODER.encode(name).encode("utf-8") for name in EVENT_NAMES}
        # Pool sizes match the bit fields that index them in RealisticDays._regular.
        self.extras = {
            name: [json_fragment(_extra(rng, name)) for _ in range(64)] for name in EVENT_NAMES
        }
        self.web_ctx = [json_fragment(_web_context(rng)) for _ in range(1024)]
        self.app_ctx = [json_fragment(_app_context(rng)) for _ in range(1024)]
        self.collections = [json_fragment(_collection(rng)) for _ in range(64)]
        self.bulk = [_bulk_value(rng) for _ in range(8)]
        web_devices = [json_fragment(_web_device(rng)) for _ in range(128)]
        app_devices = [json_fragment(_app_device(rng)) for _ in range(128)]
        geos = [json_fragment(_geo(geo)) for geo in GEOS]
        campaigns = [json_fragment(_campaign(rng)) for _ in range(128)]
        accounts = [json_fragment(_account(rng)) for _ in range(256)]
        # Parallel per-user lists: the hot loop indexes them without attribute lookups.
        self.user_distinct: list[bytes] = []
        self.user_session: list[bytes] = []
        self.user_web: list[bool] = []
        self.user_frag: list[bytes] = []
        for u in range(n_users):
            web = rng.random() < 0.7
            distinct, ids = _identity(rng, u, web)
            self.user_distinct.append(_ENCODER.encode(distinct).encode("utf-8"))
            self.user_session.append(b"%010x" % rng.getrandbits(40))
            self.user_web.append(web)
            self.user_frag.append(
                json_fragment(ids)
                + (web_devices if web else app_devices)[int(rng.random() * 128)]
                + geos[int(rng.random() * len(geos))]
                + campaigns[int(rng.random() * len(campaigns))]
                + accounts[int(rng.random() * len(accounts))]
            )


def _uuid(rng: random.Random) -> str:
    x = f"{rng.getrandbits(128):032X}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _identity(rng: random.Random, u: int, web: bool) -> tuple[str, Props]:
    if web:
        # The JS SDK's device id: time, random, user-agent hash, screen, time.
        stamp = f"{0x18C000000000 + rng.getrandbits(36):x}"
        device_id = f"{stamp}-{rng.getrandbits(56):014x}-26001b51-1fa400-{stamp}"
    else:
        device_id = _uuid(rng)
    props: Props = {"$device_id": device_id}
    if rng.random() < 0.8:
        style = int(rng.random() * 4)
        user_id = (f"u-{u}", str(1_000_000 + 7 * u), f"user{u}@example.com", _uuid(rng).lower())[
            style
        ]
        props["$user_id"] = user_id
        props["$distinct_id_before_identity"] = "$device:" + device_id
        distinct = user_id
    else:
        distinct = "$device:" + device_id
    props["$had_persisted_distinct_id"] = rng.random() < 0.6
    return distinct, props


def _web_device(rng: random.Random) -> Props:
    browser, versions, os_name, os_versions, device, screens = _pick(rng, WEB_PLATFORMS)
    width, height = _pick(rng, screens)
    lib = _pick(rng, WEB_LIB_VERSIONS)
    props: Props = {
        "$mp_api_endpoint": "api-js.mixpanel.com",
        "mp_lib": "web",
        "$lib_version": lib,
        "mp_sent_by_lib_version": lib,
        "$browser": browser,
        "$browser_version": _pick(rng, versions),
        "$os": os_name,
        "$os_version": _pick(rng, os_versions),
        "$screen_height": height,
        "$screen_width": width,
    }
    if device:
        props["$device"] = device
    return props


def _app_device(rng: random.Random) -> Props:
    lib, lib_version, os_name, os_versions, maker, models, (width, height) = _pick(
        rng, APP_PLATFORMS
    )
    model, device = _pick(rng, models)
    app_version, build = _pick(rng, APP_VERSIONS)
    return {
        "$mp_api_endpoint": "api.mixpanel.com",
        "mp_lib": lib,
        "$lib_version": lib_version,
        "$os": os_name,
        "$os_version": _pick(rng, os_versions),
        "$manufacturer": maker,
        "$model": model,
        "$device": device,
        "$carrier": _pick(rng, CARRIERS),
        "$wifi": rng.random() < 0.6,
        "$app_version_string": app_version,
        "$app_build_number": build,
        "$screen_height": height,
        "$screen_width": width,
    }


def _geo(geo: tuple[str, str, str, str, str]) -> Props:
    city, region, country, timezone, language = geo
    return {
        "$city": city,
        "$region": region,
        "mp_country_code": country,
        "$timezone": timezone,
        "$language": language,
    }


def _campaign(rng: random.Random) -> Props:
    roll = rng.random()
    if roll < 0.4:
        return {"$initial_referrer": "$direct", "$initial_referring_domain": "$direct"}
    referrer, domain, _ = _pick(rng, REFERRERS)
    props: Props = {"$initial_referrer": referrer, "$initial_referring_domain": domain}
    if roll < 0.8:
        source, medium, campaigns = _pick(rng, UTM_SOURCES)
        props.update(
            utm_source=source,
            utm_medium=medium,
            utm_campaign=_pick(rng, campaigns),
            utm_content=f"variant_{_int(rng, 1, 9)}",
        )
        term = _pick(rng, UTM_TERMS)
        if term:
            props["utm_term"] = term
    return props


def _account(rng: random.Random) -> Props:
    return {
        "account_plan": _pick(rng, _ACCOUNT_PLANS),
        "account_id": f"acc_{rng.getrandbits(32):08x}",
        "ab_group": _pick(rng, ("A", "B", "control")),
        "signup_source": _pick(rng, ("organic", "paid", "referral", "sales")),
        "is_employee": rng.random() < 0.02,
        "company_size": _pick(rng, (1, 10, 50, 250, 1000, 10_000)),
        "feature_flags": sorted(rng.sample(FEATURE_FLAGS, _int(rng, 0, 4))),
        "user_tier": _pick(rng, ("bronze", "silver", "gold", "platinum")),
    }


def _web_context(rng: random.Random) -> Props:
    host = _pick(rng, HOSTS)
    url = host + _pick(rng, PATHS)
    roll = rng.random()
    if roll < 0.05:
        # Tracking parameters push some URLs past the cut; ASCII, so it stays valid.
        url = cut_text(f"{url}?utm_source=x&fbclid=IwAR{rng.getrandbits(1200):0300x}")
    elif roll < 0.3:
        url += f"?ref=nav&id={_int(rng, 1, 100_000)}"
    props: Props = {"$current_url": url}
    roll = rng.random()
    if roll < 0.5:
        props["$referrer"] = _pick(rng, HOSTS) + _pick(rng, PATHS)
        props["$referring_domain"] = host.removeprefix("https://")
    elif roll < 0.8:
        referrer, domain, engine = _pick(rng, REFERRERS)
        props["$referrer"] = referrer
        props["$referring_domain"] = domain
        if engine:
            props["$search_engine"] = engine
    # A few titles hit the 255-byte cut, on a character boundary.
    title = cut_text(_pick(rng, LONG_TEXTS) * 20) if rng.random() < 0.05 else _pick(rng, TITLES)
    props["page_title"] = title
    props["app_section"] = _pick(rng, SECTIONS)
    return props


def _app_context(rng: random.Random) -> Props:
    return {
        "screen_name": _pick(rng, SCREENS),
        "previous_screen": _pick(rng, SCREENS),
        "app_section": _pick(rng, SECTIONS),
    }


def _extra(rng: random.Random, name: str) -> Props:
    props = event_properties(rng, name)
    props["duration_ms"] = _int(rng, 0, 30_000)
    return props


def _cart_item(rng: random.Random) -> Any:
    return {
        "sku": f"SKU-{_int(rng, 0, 100_000)}",
        "name": _pick(rng, PRODUCTS),
        "price": round(rng.uniform(0.5, 500.0), 2),
        "quantity": _int(rng, 1, 5),
        "options": {"color": _pick(rng, _COLORS), "size": _pick(rng, _SIZES)},
    }


def _form_field(rng: random.Random) -> Any:
    return (f"field_{rng.getrandbits(32):08x}", {"valid": rng.random() < 0.9, "length": 12})


# (property name, one item, the value from the items); values nest at most 3 deep.
_SHAPES: tuple[tuple[str, Callable[[random.Random], Any], Callable[[list[Any]], Any]], ...] = (
    ("cart_items", _cart_item, list),
    ("viewed_product_ids", lambda rng: _int(rng, 1, 10**7), list),
    ("recent_searches", lambda rng: _pick(rng, SEARCH_TERMS + PRODUCTS), list),
    ("form_state", _form_field, lambda items: {"step": 2, "fields": dict(items)}),
    (
        "search_filters",
        lambda rng: _pick(rng, PRODUCTS),
        lambda items: {"brands": items, "price": {"min": 0, "max": 500}},
    ),
)


def _collection(rng: random.Random) -> Props:
    """One list or object property of 256 bytes to 8 KB (its JSON value's size)."""
    key, make_item, wrap = _pick(rng, _SHAPES)
    target = _int(rng, 256, MAX_COLLECTION_BYTES + 1)
    items: list[Any] = []
    size = 64  # room for the wrapper around the items
    while True:
        item = make_item(rng)
        size += _encoded_size(item) + 1
        if size > target:
            break
        items.append(item)
    while _encoded_size(wrap(items)) > MAX_COLLECTION_BYTES:
        items.pop()
    return {key: wrap(items)}


def _bulk_value(rng: random.Random) -> bytes:
    """A JSON list of ~8 KB (the per-value limit): a near-1 MB event is ~120 of them."""
    lines = [
        f"{i:03d} INFO worker={_int(rng, 1, 64)} {rng.getrandbits(704):0176x}" for i in range(40)
    ]
    value = _ENCODER.encode(lines).encode("utf-8")
    assert len(value) <= MAX_COLLECTION_BYTES
    return value
