"""The HTTP server: routing, auth, limits, faults and the export response."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mpexport.fakeserver.body import TRUNCATING_FAULTS, BodyContext, serve_fault_body, stream_lines
from mpexport.fakeserver.config import CUT_FAULT_KINDS, ServerConfig
from mpexport.fakeserver.counts import COUNTS_PATHS, CountsEndpoint
from mpexport.fakeserver.engage import ENGAGE_PATHS, EngageEndpoint
from mpexport.fakeserver.faults import FaultPlanner
from mpexport.fakeserver.ratelimit import RateLimiter
from mpexport.fakeserver.request import ApiError, ExportQuery, auth_kind, authenticate, parse_query
from mpexport.fakeserver.stats import RequestRecord, ServerStats
from mpexport.fakeserver.wire import Aborted, send_cut_response, send_json, wait_or_abort

EXPORT_PATHS = ("/api/2.0/export", "/api/2.0/export/")
_ERROR_FAULTS: dict[str | None, tuple[int, str]] = {
    "http500": (500, "Internal server error"),
    "http502": (502, "Bad Gateway"),
    "http503": (503, "Service Unavailable"),
}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # close() must not wait for slow in-flight responses; they are aborted instead.
    block_on_close = False
    app: FakeMixpanelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a killed exporter, `| head`) is routine for
        # this server, not an error worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        # A RST fault has already closed the socket (wire.abort_connection):
        # the connection is finished, and a shutdown() there could only fail.
        if isinstance(request, socket.socket) and request.fileno() == -1:
            return
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers, chunks and the final chunk are separate small writes; without
        # NODELAY, Nagle plus delayed ACKs adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.app._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self.connection, add=False)

    def do_GET(self) -> None:
        try:
            self.server.app._handle(self)
        except (Aborted, OSError):
            self.close_connection = True

    def do_POST(self) -> None:
        # The engage endpoint is POST (form-encoded); every path shares routing.
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""


class FakeMixpanelServer:
    """A local Mixpanel export API. Use as a context manager or ``start``/``close``."""

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.stats = ServerStats()
        self.limiter = RateLimiter(
            config.project_id,
            config.clock,
            qps_limit=config.qps_limit,
            hourly_limit=config.hourly_limit,
            concurrency_limit=config.concurrency_limit,
        )
        self.planner = FaultPlanner(
            config.faults,
            config.fault_attempts,
            config.fail_dates,
            config.fault_rate,
            config.fault_seed,
        )
        self._stopping = threading.Event()
        self.engage = EngageEndpoint(config, self.stats, self._stopping)
        # The Query API's limits hold for its endpoints together: one limiter.
        self.counts = CountsEndpoint(config, self.stats, self._stopping, self.engage.limiter)
        self._serving = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = self._httpd.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def start(self) -> FakeMixpanelServer:
        """Serve in a daemon thread (once; later calls do nothing); returns self."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self.serve_forever, name="fake-mixpanel", daemon=True
        )
        self._thread.start()
        # So that a close() right after start() finds the loop and stops it.
        self._serving.wait(timeout=5)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``close`` is called."""
        self._serving.set()
        try:
            # A short poll interval keeps close() prompt.
            self._httpd.serve_forever(poll_interval=0.05)
        finally:
            self._serving.clear()

    def close(self) -> None:
        """Stop accepting, abort in-flight responses and release the port."""
        self._stopping.set()
        # shutdown() waits for a serve_forever loop, so only call it when one runs.
        if self._serving.is_set():
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        with self._conn_lock:
            live = list(self._connections)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeMixpanelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        if split.path in ENGAGE_PATHS:
            self.engage.handle(handler, split.path, split.query)
            return
        if split.path in COUNTS_PATHS and handler.command == "GET":
            self.counts.handle(handler, split.path, split.query)
            return
        if handler.command != "GET":
            # Only the engage endpoint reads a request body: after an unread
            # one, the connection cannot carry another request.
            handler.close_connection = True
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        record = self.stats.add(
            RequestRecord(arrival=self.config.clock(), path=split.path, params=params)
        )

        def refuse(status: int, error: str, headers: dict[str, str] | None = None) -> None:
            record.status, record.error = status, error
            record.bytes_sent = send_json(
                handler, status, {"request": handler.path, "error": error}, headers
            )

        if split.path not in EXPORT_PATHS:
            refuse(404, f"unknown path: {split.path}")
            return
        record.auth = auth_kind(handler.headers.get("Authorization"))
        try:
            authenticate(self.config, handler.headers.get("Authorization"), params)
            query = parse_query(self.config, params)
        except ApiError as exc:
            refuse(exc.status, exc.error)
            return
        retry = (
            {} if self.config.retry_after is None else {"Retry-After": str(self.config.retry_after)}
        )
        refusal = self.limiter.try_acquire()
        if refusal is not None:
            refuse(429, refusal.error, retry)
            return
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self.limiter.release()

        try:
            fault = self.planner.choose(params, query.dates())
            record.fault = fault
            wait_or_abort(self._stopping, self.config.ttfb)
            if fault in _ERROR_FAULTS:
                release()
                refuse(*_ERROR_FAULTS[fault])
            elif fault == "http429":
                release()
                refuse(429, self._rate_error(), retry)
            elif fault in CUT_FAULT_KINDS:
                assert fault is not None
                release()
                send_cut_response(
                    handler, record, fault, self.config.reset_with_rst, self.config.cut_status
                )
            else:
                self._serve(handler, record, query, fault, release)
        finally:
            release()

    def _rate_error(self) -> str:
        return (
            f"Query rate limit exceeded for project_id: {self.config.project_id}. "
            "Too many queries in the last hour."
        )

    def _serve(
        self,
        handler: _Handler,
        record: RequestRecord,
        query: ExportQuery,
        fault: str | None,
        release: Callable[[], None],
    ) -> None:
        config = self.config
        ctx = BodyContext(
            handler=handler,
            record=record,
            stopping=self._stopping,
            bandwidth=config.bandwidth,
            accepts_gzip="gzip" in handler.headers.get("Accept-Encoding", "").lower(),
            gzip_threshold=config.gzip_threshold,
            gzip_level=config.gzip_level,
            slice_bytes=config.slice_bytes,
            reset_with_rst=config.reset_with_rst,
            release=release,
        )
        args = (
            query.from_date,
            query.to_date,
            query.events,
            query.where,
            query.limit,
            query.time_in_ms,
        )
        until = config.served_until()
        if fault in TRUNCATING_FAULTS:
            assert fault is not None
            serve_fault_body(ctx, fault, config.dataset.lines_for_range(*args, until=until))
        else:
            stream_lines(ctx, config.dataset.iter_range(*args, until=until))
