"""The 200 response of an export: normal streaming and the body-level faults."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from mpexport.fakeserver.stats import RequestRecord
from mpexport.fakeserver.wire import ChunkedWriter, abort_connection, new_gzip

TRUNCATING_FAULTS = frozenset(
    {
        "reset",
        "gzip_cut",
        "terminated_early_line",
        "export_terminated_early_line",
        "terminated_early_inline",
    }
)


@dataclass
class BodyContext:
    """Everything a body writer needs besides the lines."""

    handler: BaseHTTPRequestHandler
    record: RequestRecord
    stopping: threading.Event
    bandwidth: int | None
    accepts_gzip: bool
    gzip_threshold: int
    gzip_level: int
    slice_bytes: int
    reset_with_rst: bool
    release: Callable[[], None]


def _slices(batches: Iterable[list[bytes]], size: int) -> Iterator[tuple[bytes, int]]:
    """Join lines into (slice, line count) pairs of at least ``size`` bytes (but the last)."""
    pending: list[bytes] = []
    pending_bytes = 0
    for batch in batches:
        for line in batch:
            pending.append(line)
            pending_bytes += len(line)
            if pending_bytes >= size:
                yield b"".join(pending), len(pending)
                pending, pending_bytes = [], 0
    if pending:
        yield b"".join(pending), len(pending)


def _start(ctx: BodyContext, gzipped: bool) -> ChunkedWriter:
    ctx.record.status = 200
    ctx.record.gzip = gzipped
    ctx.handler.send_response(200)
    ctx.handler.send_header("Content-Type", "application/json; charset=utf-8")
    ctx.handler.send_header("Transfer-Encoding", "chunked")
    if gzipped:
        ctx.handler.send_header("Content-Encoding", "gzip")
    ctx.handler.end_headers()
    return ChunkedWriter(ctx.handler, ctx.record, ctx.stopping, ctx.bandwidth)


def _finish(ctx: BodyContext, writer: ChunkedWriter) -> None:
    # Release the rate-limit slot before the last byte: a client that starts its
    # next request as soon as this one ends must not see itself as concurrent.
    ctx.release()
    writer.finish()


def stream_lines(
    ctx: BodyContext, batches: Iterable[list[bytes]], count_lines: bool = True
) -> None:
    """Stream the lines, gzipped incrementally when asked for and above the threshold."""
    slices = _slices(batches, ctx.slice_bytes)
    first = next(slices, None)
    # A first slice below slice_bytes is the whole body, so this decides on the total.
    gzipped = ctx.accepts_gzip and first is not None and len(first[0]) > ctx.gzip_threshold
    writer = _start(ctx, gzipped)
    compressor = new_gzip(ctx.gzip_level) if gzipped else None
    for piece, count in _chain([first] if first is not None else [], slices):
        if count_lines:
            ctx.record.lines_sent += count
        writer.write(compressor.compress(piece) if compressor else piece)
    if compressor is not None:
        writer.write(compressor.flush())
    _finish(ctx, writer)


def _chain(
    head: list[tuple[bytes, int]], rest: Iterator[tuple[bytes, int]]
) -> Iterator[tuple[bytes, int]]:
    yield from head
    yield from rest


def _cut_inline(line: bytes) -> bytes:
    # Cut on a character boundary so the marker, not a broken UTF-8 sequence, is
    # what the client trips over.
    text = line.decode("utf-8").rstrip("\n")
    return text[: len(text) // 2].encode("utf-8") + b"terminated early"


def truncated_body(kind: str, lines: list[bytes]) -> bytes:
    """The (uncompressed) body of a cleanly-ended truncated response."""
    half = len(lines) // 2
    head = b"".join(lines[:half])
    if kind == "terminated_early_line":
        return head + b"terminated early\n"
    if kind == "export_terminated_early_line":
        return head + b"export terminated early\n"
    if half < len(lines):
        return head + _cut_inline(lines[half])
    return head + b"terminated early"


def serve_fault_body(ctx: BodyContext, kind: str, lines: list[bytes]) -> None:
    """Serve one of the ``TRUNCATING_FAULTS`` for a query whose full answer is ``lines``."""
    if kind == "gzip_cut" and ctx.accepts_gzip:
        # Always gzip here, even a tiny body: the fault is only visible inside gzip.
        compressor = new_gzip(ctx.gzip_level)
        stream = compressor.compress(b"".join(lines)) + compressor.flush()
        # Skip the 10-byte header, stop before the 8-byte trailer: inside deflate data.
        cut = max(11, 10 + (len(stream) - 18) // 2)
        writer = _start(ctx, gzipped=True)
        ctx.record.lines_sent = len(lines) // 2
        writer.write(stream[:cut])
        _finish(ctx, writer)
        return
    if kind == "reset":
        body = b"".join(lines)
        gzipped = ctx.accepts_gzip and len(body) > ctx.gzip_threshold
        if gzipped:
            compressor = new_gzip(ctx.gzip_level)
            body = compressor.compress(body) + compressor.flush()
        writer = _start(ctx, gzipped)
        ctx.record.lines_sent = len(lines) // 2
        writer.write(body[: len(body) // 2])
        ctx.release()
        abort_connection(ctx.handler, ctx.reset_with_rst)
        return
    if kind == "gzip_cut":
        kind = "terminated_early_inline"
    ctx.record.lines_sent = len(lines) // 2
    stream_lines(ctx, [[truncated_body(kind, lines)]], count_lines=False)
