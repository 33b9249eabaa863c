"""The engage response document: accepted only whole, each profile kept as the API sent it.

A page is one JSON document, ``{"page": 0, "page_size": 1000, "session_id":
"...", "status": "ok", "total": 25500, "results": [{"$distinct_id": ...,
"$properties": {...}}, ...]}``. A response cut short (a reset, a proxy, a
clean end after half the bytes) is never a valid document, so parsing it
whole is the completeness check. The walk below parses it exactly once, with
the C scanner of :mod:`json` for every value, and notes where each profile's
text starts and ends: a profile goes out byte for byte as it came in (only
line breaks between its tokens are dropped, so that it fits on one line).

Bytes that are not UTF-8 are carried through unchanged (``surrogateescape``).
The stored copy in DuckDB needs text its JSON reader accepts:
:func:`read_profile` gives a repaired ``$properties`` text for the rare
profile that holds lone surrogates or numbers JSON cannot carry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# A \uD800-\uDFFF escape, or a byte that was not UTF-8 (surrogateescape): either
# may leave a lone surrogate that DuckDB refuses.
_MAYBE_LONE = re.compile(r"\\u[dD][89abcdefABCDEF]|[\ud800-\udfff]")
_LONE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


class InvalidPage(Exception):
    """The body is not a whole engage page: the page must be fetched again."""


@dataclass(frozen=True)
class EngagePage:
    """A verified page: its header fields and its profiles, one line each as sent."""

    page: int
    page_size: int
    session_id: str
    total: int | None
    profiles: list[bytes]  # each ends with b"\n"
    bytes: int  # size of the document

    @property
    def count(self) -> int:
        """Profiles on this page."""
        return len(self.profiles)


@dataclass(frozen=True)
class ProfileRecord:
    """What the database keeps of one profile line."""

    distinct_id: str
    properties: str  # JSON text: as sent, or repaired when DuckDB could not read it
    last_seen: str | None
    repaired: bool


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(text: str, pos: int, char: str, where: str) -> int:
    if pos >= len(text):
        raise InvalidPage(f"the document ends early ({where})")
    if text[pos] != char:
        raise InvalidPage(f"expected {char!r} {where}, found {text[pos:pos + 20]!r}")
    return pos + 1


def _value(text: str, pos: int, decoder: json.JSONDecoder = _DECODER) -> tuple[Any, int]:
    try:
        return decoder.raw_decode(text, pos)
    except ValueError as exc:  # JSONDecodeError, or a cut number
        raise InvalidPage(f"not valid JSON: {exc}") from None


def _members(
    text: str,
    pos: int,
    on_member: Callable[[str, int], int | None],
    decoder: json.JSONDecoder = _DECODER,
) -> int:
    """Walk the object at ``pos``; return the position after its ``}``.

    ``on_member(key, value_start)`` may consume the value itself and return
    where it ends; when it returns None the value is parsed here and skipped.
    """
    pos = _expect(text, _skip(text, pos), "{", "at the start of an object")
    pos = _skip(text, pos)
    if text.startswith("}", pos):
        return pos + 1
    while True:
        if not text.startswith('"', pos):
            raise InvalidPage(f"expected a member name, found {text[pos:pos + 20]!r}")
        key, pos = _value(text, pos, decoder)
        pos = _expect(text, _skip(text, pos), ":", f"after the name {key!r}")
        pos = _skip(text, pos)
        end = on_member(key, pos)
        pos = end if end is not None else _value(text, pos, decoder)[1]
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            continue
        return _expect(text, pos, "}", "at the end of an object")


def _one_line(span: str) -> bytes:
    # JSON strings cannot hold a raw line break, so these are only whitespace
    # between tokens: dropping them changes no value.
    if "\n" in span or "\r" in span:
        span = span.replace("\r", "").replace("\n", "")
    return span.encode("utf-8", "surrogateescape") + b"\n"


def _profiles(text: str, pos: int, out: list[bytes]) -> int:
    """Walk the ``results`` array at ``pos`` into ``out``; return the position after it."""
    pos = _skip(text, _expect(text, pos, "[", "for results"))
    if text.startswith("]", pos):
        return pos + 1
    while True:
        start = pos
        seen: dict[str, Any] = {}

        def member(key: str, at: int, seen: dict[str, Any] = seen) -> int:
            value, end = _value(text, at)
            seen[key] = value
            return end

        pos = _members(text, pos, member)
        if not isinstance(seen.get("$distinct_id"), (str, int)):
            raise InvalidPage(f"profile {len(out)} of the page has no $distinct_id")
        if "$properties" in seen and not isinstance(seen["$properties"], dict):
            raise InvalidPage(f"profile {len(out)} of the page has $properties that are not "
                              "an object")
        out.append(_one_line(text[start:pos]))
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            continue
        return _expect(text, pos, "]", "at the end of results")


def _int(fields: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidPage(f"{name} is {value!r}, not a count")
    return value


def parse_page(body: bytes) -> EngagePage:
    """Verify ``body`` is one whole engage page; raise :class:`InvalidPage` if not."""
    text = body.decode("utf-8", "surrogateescape")
    fields: dict[str, Any] = {}
    profiles: list[bytes] = []
    found = []

    def member(key: str, at: int) -> int | None:
        if key == "results":
            found.append(True)
            # Walked profile by profile: never the page as one big parsed list.
            return _profiles(text, at, profiles)
        value, end = _value(text, at)
        fields[key] = value
        return end

    try:
        end = _members(text, 0, member)
    except IndexError:
        raise InvalidPage("the document ends early") from None
    if _skip(text, end) != len(text):
        raise InvalidPage("bytes after the end of the document")
    status = fields.get("status", "ok")
    if status != "ok":
        raise InvalidPage(f"status {status!r}: {fields.get('error', '(no error given)')}")
    if not found:
        raise InvalidPage("the document has no results")
    session_id = fields.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidPage(f"session_id is {session_id!r}")
    page = _int(fields, "page")
    page_size = _int(fields, "page_size")
    assert page is not None and page_size is not None
    if page_size < 1:
        raise InvalidPage("page_size is 0")
    if len(profiles) > page_size:
        raise InvalidPage(f"{len(profiles)} profiles on a page of {page_size}")
    return EngagePage(page, page_size, session_id, _int(fields, "total", required=False),
                      profiles, len(body))


def _clean(value: Any) -> Any:
    """``value`` with lone surrogates replaced and numbers JSON cannot carry as null."""
    if isinstance(value, str):
        return _LONE.sub(_REPLACEMENT, value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def read_profile(line: bytes) -> ProfileRecord:
    """The database's fields of one profile line written by :func:`parse_page`."""
    text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
    odd: list[str] = []

    def constant(name: str) -> float:
        odd.append(name)  # NaN, Infinity: Python reads them, DuckDB does not
        return math.nan

    def number(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value):
            odd.append(raw)  # 1e999
        return value

    decoder = json.JSONDecoder(parse_constant=constant, parse_float=number)
    seen: dict[str, tuple[Any, int, int]] = {}

    def member(key: str, at: int) -> int:
        value, end = _value(text, at, decoder)
        seen[key] = (value, at, end)
        return end

    try:
        _members(text, 0, member, decoder)
    except IndexError:
        raise InvalidPage("the line ends early") from None
    distinct, _, _ = seen["$distinct_id"]
    properties, start, end = seen.get("$properties", ({}, 0, 0))
    raw = text[start:end] if end else "{}"
    repaired = bool(odd) or bool(_MAYBE_LONE.search(raw) and _has_lone(properties))
    if repaired:
        raw = json.dumps(_clean(properties), ensure_ascii=False)
    last_seen = properties.get("$last_seen")
    distinct_id = distinct if isinstance(distinct, str) else json.dumps(distinct)
    return ProfileRecord(
        distinct_id=_LONE.sub(_REPLACEMENT, distinct_id),
        properties=raw,
        last_seen=_LONE.sub(_REPLACEMENT, last_seen) if isinstance(last_seen, str) else None,
        repaired=repaired,
    )


def distinct_id_of(line: bytes) -> str:
    """A profile line's ``$distinct_id`` exactly as :func:`read_profile` gives it.

    NDJSON output and the database tell profiles apart by the same text, so
    both keep the same profiles. Only the id is kept; other values are
    skipped (parsed, as JSON cannot be skipped without reading it).
    """
    text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
    found: list[Any] = []

    def member(key: str, at: int) -> int | None:
        if key != "$distinct_id":
            return None
        value, end = _value(text, at)
        found.append(value)  # the last of repeated names wins, as in read_profile
        return end

    try:
        _members(text, 0, member)
    except IndexError:
        raise InvalidPage("the line ends early") from None
    if not found:
        raise InvalidPage("a profile line has no $distinct_id")
    distinct = found[-1]
    distinct_id = distinct if isinstance(distinct, str) else json.dumps(distinct)
    return _LONE.sub(_REPLACEMENT, distinct_id)


def _has_lone(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_LONE.search(value))
    if isinstance(value, list):
        return any(_has_lone(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone(k) or _has_lone(v) for k, v in value.items())
    return False
