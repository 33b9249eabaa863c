"""Low-level response writing: chunk framing, throttling, gzip, aborting."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler

from mpexport.fakeserver.config import CUT_FAULT_KINDS
from mpexport.fakeserver.stats import RequestRecord


class Aborted(Exception):
    """The server is closing; the response was abandoned mid-way."""


def wait_or_abort(stopping: threading.Event, seconds: float) -> None:
    """Sleep ``seconds`` unless the server starts closing, then raise ``Aborted``."""
    if seconds > 0 and stopping.wait(seconds):
        raise Aborted()
    if stopping.is_set():
        raise Aborted()


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, object],
    headers: dict[str, str] | None = None,
) -> int:
    """Send a complete (Content-Length framed) JSON response; return its body size."""
    body = json.dumps(payload).encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
    return len(body)


def new_gzip(level: int) -> zlib._Compress:
    """A streaming gzip compressor (wbits=31 writes the gzip header and trailer)."""
    return zlib.compressobj(level, zlib.DEFLATED, 31)


class ChunkedWriter:
    """Writes a chunked body, optionally throttled to ``bandwidth`` bytes/second.

    ``record.bytes_sent`` is updated *before* each write so that a client which
    has read the whole response always sees final stats.
    """

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        record: RequestRecord,
        stopping: threading.Event,
        bandwidth: int | None,
    ) -> None:
        self.handler = handler
        self.record = record
        self.stopping = stopping
        self.bandwidth = bandwidth
        self._started = time.monotonic()
        self._sent = 0

    def write(self, data: bytes) -> None:
        """Send ``data`` as one or more chunks (never an empty chunk)."""
        if not data:
            return
        if self.bandwidth is None:
            self._send_chunk(data)
            return
        # Slices of ~1/20 s keep the rate smooth without a syscall per byte.
        step = max(1, self.bandwidth // 20)
        for start in range(0, len(data), step):
            self._send_chunk(data[start : start + step])
            due = self._started + self._sent / self.bandwidth
            wait_or_abort(self.stopping, due - time.monotonic())

    def _send_chunk(self, piece: bytes) -> None:
        if self.stopping.is_set():
            raise Aborted()
        self.record.bytes_sent += len(piece)
        self._sent += len(piece)
        self.handler.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))

    def finish(self) -> None:
        """Send the zero-size chunk that ends the body cleanly."""
        self.handler.wfile.write(b"0\r\n\r\n")


def _linger_abort() -> bytes:
    """SO_LINGER on with a 0 s timeout, so that closing the socket sends a RST."""
    # Winsock's struct linger is two u_shorts, POSIX's two ints (Linux refuses
    # a shorter value with EINVAL).
    return struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)


def abort_connection(handler: BaseHTTPRequestHandler, rst: bool) -> None:
    """Drop the connection without ending the chunked body.

    With ``rst`` the socket is closed with SO_LINGER 0, which sends a TCP RST;
    otherwise a FIN (shutdown), which the client sees as a premature EOF.
    After a RST the socket is closed: the server's own clean-up (``finish``,
    ``shutdown_request``) must treat the connection as finished.
    """
    handler.close_connection = True
    conn = handler.connection
    if not rst:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _linger_abort())
    # close() releases the handle only once no makefile() wrapper is open, and
    # rfile is one (wfile writes to the socket directly): without this the RST
    # would wait for the handler's finish(). Not os.close(conn.detach()): on
    # Windows a socket handle is no file descriptor, and that leaked the socket.
    handler.rfile.close()
    with contextlib.suppress(OSError):
        conn.close()


# The 502 of the report that motivated these faults: a proxy's HTML page whose
# Content-Length said 4041 bytes, cut after 200.
ERROR_PAGE_BYTES = 4041
CUT_AFTER_BYTES = 200


def error_page(status: int, reason: str, size: int = ERROR_PAGE_BYTES) -> bytes:
    """An HTML error page of exactly ``size`` bytes, like a load balancer's."""
    head = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n"
    ).encode("ascii")
    tail = b"</body>\r\n</html>\r\n"
    # Proxies pad their pages (old browsers hid short ones); pad with a comment.
    filler = size - len(head) - len(tail) - len(b"<!--  -->\r\n")
    return head + b"<!-- " + b"p" * max(0, filler) + b" -->\r\n" + tail


def send_cut_response(
    handler: BaseHTTPRequestHandler,
    record: RequestRecord,
    kind: str,
    rst: bool,
    error_status: int = 502,
) -> None:
    """Serve one of the ``CUT_FAULT_KINDS``: a response cut by a reset at ``kind``'s point.

    The error kinds send ``error_status``. ``record`` gets the status line's
    code (0 if none was sent) and the body bytes sent, before the connection
    is dropped.
    """
    if kind not in CUT_FAULT_KINDS:
        raise ValueError(f"not a cut fault: {kind!r}")
    if kind == "reset_before_status":
        abort_connection(handler, rst)
        return
    status = 200 if kind == "reset_in_200_headers" else error_status
    reason = handler.responses.get(status, ("Error",))[0]
    record.status = status
    handler.send_response(status)
    if kind in ("reset_in_error_headers", "reset_in_200_headers"):
        # Cut before any framing header (Content-Length, Transfer-Encoding):
        # the worst case, where the client cannot tell that a body was due.
        handler.send_header("Content-Type", "text/html" if status != 200 else "application/json")
        handler.flush_headers()  # no blank line: the headers never end
        abort_connection(handler, rst)
        return
    page = error_page(status, reason)
    piece = page[:CUT_AFTER_BYTES]
    handler.send_header("Content-Type", "text/html")
    if kind == "reset_in_error_body":
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        wire = piece
    else:  # reset_in_chunked_error_body
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        # One chunk announced whole, cut inside its data.
        wire = b"%x\r\n%b" % (len(page), piece)
    record.bytes_sent = len(piece)
    handler.wfile.write(wire)
    abort_connection(handler, rst)
