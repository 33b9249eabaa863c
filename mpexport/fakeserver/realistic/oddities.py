"""Odd-but-legal events: each kind in ``ODDITY_KINDS`` made from a regular line.

Old Mixpanel data has all of these; an exporter must pass each through
byte-exact or at least without choking on it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from mpexport.fakeserver.events import Props
from mpexport.fakeserver.realistic.values import (
    MAX_STRING_BYTES,
    invalid_utf8_value,
    json_fragment,
    lone_surrogate_value,
    rand_int,
)

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
# Not an oddity kind: a near-1 MB event is built by RealisticDays from the pools.
BIG_EVENT = "big_event"

# Only the header fields are edited, and the first match is always in the header
# because nothing before it can hold these keys.
_DISTINCT_ID = re.compile(rb'"distinct_id":"(?:[^"\\]|\\.)*"')
_NO_DISTINCT_ID = re.compile(rb',"distinct_id":"(?:[^"\\]|\\.)*"')
_NO_INSERT_ID = re.compile(rb',"\$insert_id":"[^"]*"')
_NO_PROCESSING_TIME = re.compile(rb',"mp_processing_time_ms":\d+')


def odd_line(rng: random.Random, kind: str, line: bytes) -> bytes:
    """``line`` (a regular line ending in ``}}\\n``) turned into an oddity of ``kind``."""
    edit = _HEADER_EDITS.get(kind)
    if edit is not None:
        return edit(rng, line)
    return line[:-3] + _ODD_TAILS[kind](rng) + b"}}\n"


def _distinct_number(rng: random.Random, line: bytes) -> bytes:
    return _DISTINCT_ID.sub(b'"distinct_id":%d' % rand_int(rng, 1, 10**9), line, count=1)


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


# Properties appended at the end of the line, after every regular property.
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
