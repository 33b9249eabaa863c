"""The engage endpoint (``/api/query/engage``): profiles in pages under a session.

Order of checks, like the export endpoint's: authentication and parameters
(400/401/403), the session (400 when unknown or expired), the Query API's
limits (429), then a scheduled fault, then the page. Only a complete page
counts against its session, so a faulted attempt never brings expiry closer.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from mpexport.fakeserver.config import ServerConfig
from mpexport.fakeserver.profiles import Profile, ProfileDataset
from mpexport.fakeserver.ratelimit import RateLimiter
from mpexport.fakeserver.request import ApiError, auth_kind, authenticate
from mpexport.fakeserver.sessions import PageFaults, SessionStore
from mpexport.fakeserver.stats import RequestRecord, ServerStats
from mpexport.fakeserver.where import WhereError, compile_where
from mpexport.fakeserver.wire import (
    Aborted,
    ChunkedWriter,
    abort_connection,
    send_json,
    wait_or_abort,
)

ENGAGE_PATHS = ("/api/query/engage", "/api/query/engage/")
# Never recorded in the stats, should a client put a secret in the parameters.
SECRET_PARAMS = frozenset({"api_secret", "secret", "password", "token"})
_STATUS_FAULTS = {
    "http500": (500, "Internal server error"),
    "http503": (503, "Service Unavailable"),
}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class EngageQuery:
    """A validated engage request."""

    where: str | None
    cohort_id: int | None
    group_key: str | None
    output_properties: list[str] | None
    include_all_users: bool
    session_id: str | None
    page: int


def _json_param(params: dict[str, str], name: str) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(400, f"{name} is not valid JSON: {raw!r}") from None


def parse_engage(params: dict[str, str]) -> EngageQuery:
    """Validate the engage parameters; raise ``ApiError`` (400) when they are bad."""
    # An empty where/session_id is what a client sends for "none".
    where = params.get("where") or None
    if where is not None:
        try:
            compile_where(where)
        except WhereError as exc:
            raise ApiError(400, f"invalid where expression: {exc}") from None
    names = _json_param(params, "output_properties")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise ApiError(400, "output_properties must be a JSON array of property names")
    cohort = _json_param(params, "filter_by_cohort")
    cohort_id: int | None = None
    if cohort is not None:
        raw_id = cohort.get("id") if isinstance(cohort, dict) else None
        if not isinstance(raw_id, int) or isinstance(raw_id, bool) or raw_id <= 0:
            raise ApiError(400, 'filter_by_cohort must be {"id": <positive cohort id>}')
        cohort_id = raw_id
    include_all = params.get("include_all_users", "true").lower()
    if include_all not in _BOOLEANS:
        raise ApiError(400, f"include_all_users must be true or false, got {include_all!r}")
    raw_page = params.get("page", "0")
    try:
        page = int(raw_page)
    except ValueError:
        raise ApiError(400, f"invalid page: {raw_page!r}") from None
    if page < 0:
        raise ApiError(400, "page must be >= 0")
    session_id = params.get("session_id") or None
    if page > 0 and session_id is None:
        raise ApiError(400, "session_id is required for a page after page 0")
    return EngageQuery(
        where=where,
        cohort_id=cohort_id,
        group_key=params.get("data_group_id") or None,
        output_properties=names,
        # Every profile here is a profile, so "users without one" adds nothing.
        include_all_users=_BOOLEANS[include_all],
        session_id=session_id,
        page=page,
    )


def read_params(handler: BaseHTTPRequestHandler, query_string: str) -> dict[str, str]:
    """The query string's parameters, overridden by a form-encoded body's."""
    params = dict(parse_qsl(query_string, keep_blank_values=True))
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        # Not read here; the connection cannot be reused past an unread body.
        handler.close_connection = True
        raise ApiError(411, "a chunked request body is not supported; send Content-Length")
    length = int(handler.headers.get("Content-Length") or 0)
    if length > 0:
        body = handler.rfile.read(length).decode("utf-8", "replace")
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


class EngageEndpoint:
    """Serves ``ENGAGE_PATHS`` for one ``FakeMixpanelServer`` (see ``ServerConfig``)."""

    def __init__(self, config: ServerConfig, stats: ServerStats, stopping: threading.Event) -> None:
        self.config = config
        self.stats = stats
        self.stopping = stopping
        self.limiter = RateLimiter(
            config.project_id,
            config.clock,
            hourly_limit=config.engage_hourly_limit,
            concurrency_limit=config.engage_concurrency_limit,
            kind="engage",
        )
        seed = config.profiles.seed if config.profiles is not None else 0
        self.sessions = SessionStore(config.engage_session_pages, seed)
        self.faults = PageFaults(config.engage_faults)

    def handle(self, handler: BaseHTTPRequestHandler, path: str, query_string: str) -> None:
        """Answer one request to an engage path."""
        record = self.stats.add(RequestRecord(arrival=self.config.clock(), path=path, params={}))

        def refuse(status: int, error: str, headers: dict[str, str] | None = None) -> None:
            record.status, record.error = status, error
            payload: dict[str, object] = {"request": path, "error": error, "status": "error"}
            record.bytes_sent = send_json(handler, status, payload, headers)

        try:
            params = read_params(handler, query_string)
        except ApiError as exc:
            refuse(exc.status, exc.error)
            return
        except ValueError:
            handler.close_connection = True
            refuse(400, "invalid Content-Length")
            return
        record.params = {k: v for k, v in params.items() if k not in SECRET_PARAMS}
        profiles = self.config.profiles
        if profiles is None:
            refuse(404, f"unknown path: {path} (this server holds no profiles)")
            return
        record.auth = auth_kind(handler.headers.get("Authorization"))
        try:
            authenticate(self.config, handler.headers.get("Authorization"), params)
            query = parse_engage(params)
            if query.session_id is not None:
                self.sessions.check(query.session_id)
        except ApiError as exc:
            refuse(exc.status, exc.error)
            return
        refusal = self.limiter.try_acquire()
        if refusal is not None:
            retry = self.config.retry_after
            refuse(429, refusal.error, {} if retry is None else {"Retry-After": str(retry)})
            return
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self.limiter.release()

        try:
            self._hold()
            wait_or_abort(self.stopping, self.config.ttfb)
            fault = self.faults.choose(query.page)
            record.fault = fault
            if fault in _STATUS_FAULTS:
                release()
                refuse(*_STATUS_FAULTS[fault])
                return
            if fault == "http429":
                release()
                refuse(429, self._rate_error(), {"Retry-After": "1"})
                return
            try:
                payload = self._page(profiles, query, counts=fault is None)
            except ApiError as exc:
                release()
                refuse(exc.status, exc.error)
                return
            record.lines_sent = len(payload["results"])
            # Raw UTF-8, as Mixpanel sends it: a client meets multi-byte text.
            text = json.dumps(payload, ensure_ascii=False)
            # Free the slot before the last byte: a client that asks again as
            # soon as this ends must not count as concurrent with itself.
            release()
            if fault is None:
                self._send_page(handler, record, text.encode("utf-8"))
            else:
                self._serve_broken(handler, record, fault, query.page, text)
        finally:
            release()

    def _hold(self) -> None:
        hold = self.config.engage_hold
        if hold is None:
            return
        # Polled, so that closing the server never waits for a test's event.
        while not hold.wait(0.05):
            if self.stopping.is_set():
                raise Aborted()

    def _rate_error(self) -> str:
        return (
            f"Query rate limit exceeded for project_id: {self.config.project_id}. "
            "Too many queries in the last hour."
        )

    def _page(self, profiles: ProfileDataset, query: EngageQuery, counts: bool) -> dict[str, Any]:
        """The response document; ``counts``: a complete page, counted by its session."""
        if query.session_id is None:
            results = profiles.select(
                query.where, query.cohort_id, query.group_key, query.output_properties
            )
            session_id = self.sessions.open(results)
            if counts:
                self.sessions.claim(session_id)
        elif counts:
            session_id, results = query.session_id, self.sessions.claim(query.session_id)
        else:
            session_id, results = query.session_id, self.sessions.peek(query.session_id)
        size = self.config.engage_page_size
        start = query.page * size
        page: list[Profile] = results[start : start + size]
        return {
            "page": query.page,
            "page_size": size,
            "session_id": session_id,
            "status": "ok",
            "total": len(results),
            "results": page,
        }

    @staticmethod
    def _send_page(handler: BaseHTTPRequestHandler, record: RequestRecord, body: bytes) -> None:
        record.status = 200
        record.bytes_sent = len(body)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _serve_broken(
        self,
        handler: BaseHTTPRequestHandler,
        record: RequestRecord,
        fault: str,
        page: int,
        text: str,
    ) -> None:
        """A 200 carrying half of ``text``: reset mid-body, or ``cut`` with a clean end."""
        # Cut on a character boundary: the client must trip over the unfinished
        # JSON document, not over a broken UTF-8 sequence.
        half = text[: len(text) // 2].encode("utf-8")
        if fault == "cut" and page % 2 == 0:
            # Even pages frame the cut document with a Content-Length that matches it...
            self._send_page(handler, record, half)
            return
        # ...odd pages (and every reset) are chunked: a cut ends with the last chunk.
        record.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        writer = ChunkedWriter(handler, record, self.stopping, None)
        writer.write(half)
        if fault == "cut":
            writer.finish()
        else:
            abort_connection(handler, self.config.reset_with_rst)
