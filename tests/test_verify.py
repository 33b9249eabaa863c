"""Verification: complete bodies pass, every truncation the API produces fails."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpexport.mixpanel.verify import MAX_LINE_BYTES, BodyVerifier, IncompleteBody

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {"event": st.text(min_size=1), "properties": st.dictionaries(st.text(), json_values)}
)
bodies = st.lists(records, min_size=1, max_size=12).map(
    lambda rs: b"".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in rs
    )
)
MARKERS = [b"terminated early\n", b"export terminated early\n", b"terminated early"]


def verify(body: bytes, gzipped: bool, block: int = 7, max_line: int = MAX_LINE_BYTES) -> int:
    verifier = BodyVerifier(gzipped, max_line)
    decoded = bytearray()
    for start in range(0, len(body), block):
        decoded += verifier.feed(body[start : start + block])
    result = verifier.finish()
    assert result.bytes == len(decoded)
    assert result.sha256 == hashlib.sha256(decoded).hexdigest()
    return result.lines


@given(bodies, st.integers(min_value=1, max_value=50))
def test_complete_bodies_pass(body: bytes, block: int) -> None:
    assert verify(body, False, block) == body.count(b"\n")
    assert verify(gzip.compress(body), True, block) == body.count(b"\n")


def test_empty_body_passes() -> None:
    assert verify(b"", False) == 0
    assert verify(gzip.compress(b""), True) == 0


@given(bodies, st.data())
def test_plain_truncation_mid_line_fails(body: bytes, data: st.DataObject) -> None:
    # A cut that does not fall on a line boundary leaves a partial last line.
    cut = data.draw(st.integers(min_value=1, max_value=len(body) - 1))
    if body[cut - 1 : cut] == b"\n":
        cut -= 1
    with pytest.raises(IncompleteBody):
        verify(body[:cut], False)


@given(bodies, st.data())
@settings(max_examples=200)
def test_gzip_truncation_fails(body: bytes, data: st.DataObject) -> None:
    # Any prefix of a gzip stream, even one ending on a line boundary of the
    # decoded text, misses the gzip trailer.
    wire = gzip.compress(body)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    with pytest.raises(IncompleteBody):
        verify(wire[:cut], True)


@given(bodies, st.sampled_from(MARKERS), st.data(), st.booleans())
def test_terminated_early_markers_fail(
    body: bytes, marker: bytes, data: st.DataObject, gzipped: bool
) -> None:
    lines = body.splitlines(keepends=True)
    keep = data.draw(st.integers(min_value=0, max_value=len(lines)))
    prefix = b"".join(lines[:keep])
    if marker.endswith(b"\n"):
        truncated = prefix + marker
    else:
        # the inline form: glued inside the next record, no newline
        partial = lines[keep][: data.draw(st.integers(0, len(lines[keep]) - 1))] if keep < len(
            lines
        ) else b""
        truncated = prefix + partial + marker
    wire = gzip.compress(truncated) if gzipped else truncated
    with pytest.raises(IncompleteBody):
        verify(wire, gzipped)


def test_blank_line_and_garbage_fail() -> None:
    good = b'{"event":"a","properties":{}}\n'
    for bad in (good + b"\n" + good, b"garbage\n" + good, good + b'{"event":\n'):
        with pytest.raises(IncompleteBody):
            verify(bad, False)


def test_unicode_line_separators_are_not_line_breaks() -> None:
    record = {"event": "x\u2028y", "properties": {"v": "a\u2029b\u0085c"}}
    body = json.dumps(record, ensure_ascii=False).encode() + b"\n"
    assert verify(body, False) == 1


def test_multi_member_gzip_passes() -> None:
    body = b'{"event":"a","properties":{}}\n'
    assert verify(gzip.compress(body) + gzip.compress(body), True) == 2


def test_trailing_garbage_after_gzip_fails() -> None:
    body = b'{"event":"a","properties":{}}\n'
    with pytest.raises(IncompleteBody):
        verify(gzip.compress(body) + b"\x00junk", True)


def test_corrupt_gzip_fails() -> None:
    wire = bytearray(gzip.compress(b'{"event":"a","properties":{}}\n' * 50))
    wire[20] ^= 0xFF
    with pytest.raises(IncompleteBody):
        verify(bytes(wire), True)


def test_raw_deflate_is_not_accepted_as_gzip() -> None:
    with pytest.raises(IncompleteBody):
        verify(zlib.compress(b'{"a":1}\n'), True)


def _record_of(size: int) -> bytes:
    """A one-line JSON record of exactly ``size`` bytes, newline excluded."""
    head, tail = b'{"event":"a","properties":{"v":"', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_lines_up_to_the_bound_pass_one_more_byte_fails(gzipped: bool, block: int) -> None:
    bound = 200
    first = _record_of(50) + b"\n"
    for last in (_record_of(bound), _record_of(bound + 1)):
        body = first + last + b"\n"
        wire = gzip.compress(body) if gzipped else body
        if len(last) <= bound:
            assert verify(wire, gzipped, block, max_line=bound) == 2
        else:
            with pytest.raises(IncompleteBody, match=f"longer than {bound} bytes"):
                verify(wire, gzipped, block, max_line=bound)


def test_a_body_without_newlines_fails_once_past_the_bound() -> None:
    # It fails while streaming, not at the end: the buffer never outgrows the bound.
    verifier = BodyVerifier(False, max_line=1000)
    verifier.feed(b"{" + b"x" * 998)
    verifier.feed(b"x")  # 1000 bytes: still a possible line
    with pytest.raises(IncompleteBody, match="longer than 1000 bytes"):
        verifier.feed(b"x")


def test_default_bound_is_64_mib_of_one_line() -> None:
    # 64 times Mixpanel's 1 MB limit on an event.
    assert MAX_LINE_BYTES == 64 * 1024 * 1024
    verifier = BodyVerifier(False)
    verifier.feed(_record_of(1000) + b"\n")
    block = b"x" * (1024 * 1024)
    for _ in range(64):
        verifier.feed(block)
    with pytest.raises(IncompleteBody):
        verifier.feed(b"x")
