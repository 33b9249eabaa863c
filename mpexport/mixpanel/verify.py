"""Streaming verification that an export body arrived whole.

Mixpanel can end a 200 response early and cleanly: with a ``terminated
early`` line, with the marker glued inside the last record, or with a gzip
stream cut before its end while the HTTP framing looks fine. A complete body
is empty, or whole JSON objects, one per line, ending with a newline, and, if
gzipped, a gzip stream that reached its end.

The per-line checks run as ``bytes.count`` calls over whole blocks (C speed):
every newline but the last must sit between a ``}`` and a ``{``. Only the last line is
parsed as JSON, because a truncated body shows its damage at the end and
parsing every line in Python would make verification the slowest step.

The last line is the only one kept in memory, so its length is bounded:
:data:`MAX_LINE_BYTES`, 64 times Mixpanel's 1 MB limit on an event. A line
longer than that is no export record (a wrong endpoint, a proxy's garbage, a
body with no newlines at all); it fails the body as incomplete, like any other
damage, instead of growing a buffer with the body.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

# Mixpanel events are at most 1 MB of JSON, but a line grows when Mixpanel
# adds properties (mp_processing_time_ms, geo fields) and with every escaped
# character; 64x leaves room for all of that and for any later change of limit.
MAX_LINE_BYTES = 64 * 1024 * 1024


class IncompleteBody(Exception):
    """The body is not a complete export: the chunk must be fetched again."""


@dataclass(frozen=True)
class VerifiedBody:
    """Facts about a body that passed verification."""

    lines: int
    bytes: int
    sha256: str


class BodyVerifier:
    """Decode (gunzip) and check a body block by block.

    ``feed`` returns the decoded bytes to store; ``finish`` raises
    :class:`IncompleteBody` unless the whole body was a complete export.
    ``feed`` raises it too, as soon as a line is longer than ``max_line``
    bytes (newline excluded).
    """

    def __init__(self, gzipped: bool, max_line: int = MAX_LINE_BYTES) -> None:
        self._gzipped = gzipped
        self._max_line = max_line
        self._decompressor = zlib.decompressobj(wbits=31) if gzipped else None
        self._hash = hashlib.sha256()
        self._bytes = 0
        self._newlines = 0
        self._separators = 0  # newlines between "}" and "{"
        self._first = b""
        self._last = b""
        self._edge = b""  # the last two bytes so far, for separators across blocks
        # The last line so far (with its newline once it has one). A bytearray
        # because a long line arrives over many blocks: += then copies each
        # block once, where bytes would copy the whole line every time.
        self._tail = bytearray()

    def feed(self, wire: bytes) -> bytes:
        """Take the next block as received; return its decoded bytes."""
        data = wire if self._decompressor is None else self._inflate(wire)
        if data:
            self._scan(data)
        return data

    def _inflate(self, wire: bytes) -> bytes:
        assert self._decompressor is not None
        if self._decompressor.eof:
            # Bytes after the end of the gzip stream: either another gzip
            # member (valid per RFC 1952) or garbage.
            if not wire:
                return b""
            self._decompressor = zlib.decompressobj(wbits=31)
        try:
            data = self._decompressor.decompress(wire)
        except zlib.error as exc:
            raise IncompleteBody(f"corrupt gzip stream: {exc}") from None
        unused = self._decompressor.unused_data
        if self._decompressor.eof and unused:
            data += self._inflate(unused)
        return data

    def _scan(self, data: bytes) -> None:
        if not self._first:
            self._first = data[:1]
        self._hash.update(data)
        self._bytes += len(data)
        self._newlines += data.count(b"\n")
        # One three-byte count instead of two two-byte ones ("}\n" and "\n{"):
        # this scan holds the GIL, and it was a quarter of a stdout export's CPU.
        self._separators += data.count(b"}\n{")
        if self._edge:
            # A separator split across blocks lies within these four bytes.
            self._separators += (self._edge + data[:2]).count(b"}\n{")
        self._edge = (self._edge + data)[-2:] if len(data) < 2 else data[-2:]
        if self._last == b"\n":
            self._tail.clear()  # the previous block ended a line: a new one starts
        self._last = data[-1:]
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            self._tail = bytearray(data[cut + 1 :])
        else:
            self._tail += data
        # Lines before the last are never held, so only the last one is bounded.
        line = len(self._tail) - (1 if self._last == b"\n" else 0)
        if line > self._max_line:
            raise IncompleteBody(
                f"a line longer than {self._max_line} bytes: not an export record"
            )

    def finish(self) -> VerifiedBody:
        """Check the body as a whole; raise :class:`IncompleteBody` if it is not."""
        if self._decompressor is not None:
            if not self._decompressor.eof:
                raise IncompleteBody("gzip stream ended before its end marker")
            if self._decompressor.unused_data:
                raise IncompleteBody("unexpected bytes after the gzip stream")
        if self._bytes == 0:
            return VerifiedBody(0, 0, self._hash.hexdigest())
        if self._last != b"\n":
            tail = self._tail.decode("utf-8", "replace")[-40:]
            raise IncompleteBody(f"body does not end with a newline (ends {tail!r})")
        if self._first != b"{":
            raise IncompleteBody("body does not start with a JSON object")
        if self._separators != self._newlines - 1:
            raise IncompleteBody(
                "a line is not a JSON object (a 'terminated early' marker or a blank line)"
            )
        try:
            record = json.loads(self._tail)
        except ValueError:
            raise IncompleteBody("the last line is not valid JSON") from None
        if not isinstance(record, dict):
            raise IncompleteBody("the last line is not a JSON object")
        return VerifiedBody(self._newlines, self._bytes, self._hash.hexdigest())
