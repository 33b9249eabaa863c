"""A connection that breaks at any point of an attempt is a retry of that chunk.

The built-in server cuts its response with a FIN or a RST before the status
line, inside the headers (of a 502 or of a 200), inside an error body framed by
Content-Length or chunked, and inside the 200 data body. The real CLI must
retry every one of them and still write exactly the dataset; fatal statuses
stay fatal even when their body is cut.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import random
import socket
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import urllib3.exceptions

from mpexport.errors import (
    BadParametersError,
    CertificateError,
    CredentialsError,
    ProxyCredentialsError,
)
from mpexport.fakeserver import (
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    FakeMixpanelServer,
)
from mpexport.fakeserver.config import CUT_FAULT_KINDS
from mpexport.fakeserver.wire import CUT_AFTER_BYTES, ERROR_PAGE_BYTES
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint
from mpexport.mixpanel.fetch import Query, fetch_once
from mpexport.mixpanel.transport import (
    FetchSettings,
    OpenGate,
    RetryableError,
    Succeeded,
    is_connection_error,
    new_session,
    read_error_body,
    with_retries,
)
from mpexport.model import Chunk, QueryFilters
from tests.helpers import ServerFactory, day_chunks, expected_stdout, run_cli

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 6)  # 6 days: 3 chunks of 2, retried in parallel
CHUNK_DAYS = 2
# Every point of an attempt where the connection can break, in wire order.
CUT_POINTS = (*CUT_FAULT_KINDS, "reset")
# What the CLI's retry note says when a FIN cuts at each point: the client saw
# the cut where the server made it (with a RST the point the client notices varies).
FIN_REASONS = {
    "reset_before_status": "request failed: ConnectionError",
    "reset_in_error_headers": "HTTP 502: (empty body)",
    "reset_in_200_headers": "no Content-Length, no chunked framing and no gzip",
    "reset_in_error_body": "HTTP 502: (body cut short: ProtocolError) <html>",
    "reset_in_chunked_error_body": "HTTP 502: (body cut short: ProtocolError) <html>",
    "reset": "connection broke mid-body: ProtocolError",
}
CREDENTIALS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)


def dataset() -> Dataset:
    # Days above the gzip threshold, so the data-body cut falls inside gzip.
    return Dataset(seed=31, events_per_day=60)


def export_args(url: str) -> list[str]:
    return ["export", "--api-url", url, "--from", START.isoformat(), "--to", END.isoformat(),
            "--chunk-days", str(CHUNK_DAYS)]


# --- end to end: the real CLI over loopback HTTP -----------------------------------------


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("kind", CUT_POINTS)
def test_cut_at_each_point_is_retried_and_output_is_exact(
    make_server: ServerFactory, kind: str, rst: bool
) -> None:
    data = dataset()
    server = make_server(data, faults=(kind,), reset_with_rst=rst)
    result = run_cli(export_args(server.url))
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    # Whole chunks in date order, byte for byte, and exactly the range's events.
    chunks = day_chunks(START, END, CHUNK_DAYS)
    assert result.stdout == expected_stdout(data, chunks)
    assert Counter(result.lines()) == Counter(data.lines_for_range(START, END))
    # The fault was served: each chunk's first attempt was cut, its second was whole.
    records = server.stats.records()
    assert [r.fault for r in records].count(kind) == len(chunks)
    assert Counter((q["from_date"], q["to_date"]) for q in server.stats.queries()) == {
        (a.isoformat(), b.isoformat()): 2 for a, b in chunks
    }
    if not rst:
        assert result.stderr.count(FIN_REASONS[kind]) == len(chunks), result.stderr


@pytest.mark.parametrize(
    ("status", "code", "needle"),
    [(401, 3, "HTTP 401"), (403, 3, "HTTP 403"), (400, 2, "HTTP 400")],
)
def test_cut_fatal_status_still_ends_the_run(
    make_server: ServerFactory, status: int, code: int, needle: str
) -> None:
    # Every attempt gets the cut status: a retry would show as a second request.
    server = make_server(dataset(), faults=("reset_in_error_body",), fault_attempts=1000,
                         cut_status=status)
    result = run_cli(export_args(server.url))
    assert result.code == code, result.stderr
    assert result.stdout == b""
    assert needle in result.stderr and "body cut short" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    queries = [(q["from_date"], q["to_date"]) for q in server.stats.queries()]
    assert queries and len(queries) == len(set(queries))  # none was retried


@pytest.mark.parametrize("status", [429, 503])
def test_cut_retryable_status_is_retried(make_server: ServerFactory, status: int) -> None:
    data = dataset()
    server = make_server(data, faults=("reset_in_error_body",), cut_status=status)
    result = run_cli(export_args(server.url))
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(data, day_chunks(START, END, CHUNK_DAYS))
    assert server.stats.count(status=status, fault="reset_in_error_body") == 3
    assert f"HTTP {status}: (body cut short" in result.stderr


# --- one attempt: what fetch_once raises and leaves behind -------------------------------


def attempt(server: FakeMixpanelServer, spool: Path) -> tuple[Path, int, int, str]:
    query = Query(Endpoint(server.url), CREDENTIALS, QueryFilters())
    return fetch_once(new_session(), query, Chunk(0, START, START), spool, FetchSettings(),
                      threading.Event(), lambda _: None)


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("kind", CUT_POINTS)
def test_fetch_once_cut_is_retryable_and_leaves_no_spool(
    make_server: ServerFactory, tmp_path: Path, kind: str, rst: bool
) -> None:
    server = make_server(dataset(), faults=(kind,), reset_with_rst=rst)
    with pytest.raises(RetryableError) as caught:
        attempt(server, tmp_path)
    assert not caught.value.throttled
    assert list(tmp_path.iterdir()) == []
    path, lines, _, _ = attempt(server, tmp_path)
    assert path.read_bytes() == b"".join(server.config.dataset.lines_for_day(START))
    assert lines > 0 and list(tmp_path.iterdir()) == [path]


def test_cut_error_body_keeps_what_arrived(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(dataset(), faults=("reset_in_error_body",))
    with pytest.raises(RetryableError) as caught:
        attempt(server, tmp_path)
    assert caught.value.reason.startswith("HTTP 502: (body cut short: ProtocolError) <html>")
    assert "502 Bad Gateway" in caught.value.reason


@pytest.mark.parametrize("kind", ["reset_in_error_headers", "reset_in_error_body",
                                  "reset_in_chunked_error_body"])
@pytest.mark.parametrize(
    ("status", "error"),
    [(401, CredentialsError), (403, CredentialsError), (400, BadParametersError)],
)
def test_fetch_once_cut_fatal_status_is_fatal(
    make_server: ServerFactory, tmp_path: Path, kind: str, status: int, error: type[Exception]
) -> None:
    # With a FIN the status line arrives whole, and it alone decides.
    server = make_server(dataset(), faults=(kind,), cut_status=status)
    with pytest.raises(error, match=f"HTTP {status}"):
        attempt(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failure_outside_the_connection_propagates_and_drops_the_spool(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(dataset())
    query = Query(Endpoint(server.url), CREDENTIALS, QueryFilters())

    def broken_progress(_: int) -> None:
        raise RuntimeError("a bug, not a network error")

    with pytest.raises(RuntimeError, match="a bug"):
        fetch_once(new_session(), query, Chunk(0, START, START), tmp_path, FetchSettings(),
                   threading.Event(), broken_progress)
    assert list(tmp_path.iterdir()) == []


# --- the pieces: classification and error-body reading -----------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.ProtocolError("Connection broken", http.client.IncompleteRead(b"")),
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        urllib3.exceptions.DecodeError("bad gzip"),
        requests.exceptions.ChunkedEncodingError("broken"),
        http.client.IncompleteRead(b"x", 10),
        http.client.RemoteDisconnected("closed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        zlib.error("incomplete or truncated stream"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_connection_errors_are_recognised(exc: BaseException) -> None:
    assert is_connection_error(exc)


@pytest.mark.parametrize("exc", [ValueError("x"), RuntimeError("x"), KeyError("x")],
                         ids=lambda exc: type(exc).__name__)
def test_other_errors_are_not_connection_errors(exc: BaseException) -> None:
    assert not is_connection_error(exc)


class CutRaw:
    """A stand-in for urllib3's response: some pieces, then an exception."""

    def __init__(self, pieces: list[bytes], error: BaseException | None) -> None:
        self.pieces = pieces
        self.error = error

    def read1(self, amt: int, decode_content: bool = True) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)[:amt]
        if self.error is not None:
            raise self.error
        return b""


@pytest.mark.parametrize(
    "error",
    [urllib3.exceptions.ProtocolError("cut"), urllib3.exceptions.DecodeError("bad gzip"),
     ConnectionResetError(104, "reset"), zlib.error("truncated")],
    ids=lambda exc: type(exc).__name__,
)
def test_read_error_body_keeps_the_bytes_before_a_cut(error: BaseException) -> None:
    body, cut = read_error_body(CutRaw([b'{"error": ', b'"Unable to'], error))
    assert body == b'{"error": "Unable to'
    assert cut == type(error).__name__


def test_read_error_body_whole_and_bounded() -> None:
    assert read_error_body(CutRaw([b"a", b"b"], None)) == (b"ab", None)
    body, cut = read_error_body(CutRaw([b"x" * 5000] * 10, None), limit=12_000)
    assert (len(body), cut) == (12_000, None)


def test_read_error_body_lets_bugs_through() -> None:
    with pytest.raises(RuntimeError):
        read_error_body(CutRaw([b"a"], RuntimeError("bug")))


# --- the faults on the wire ---------------------------------------------------------------


def raw_exchange(server: FakeMixpanelServer) -> bytes:
    """Send one export request on a bare socket; return every byte until the server's FIN."""
    auth = base64.b64encode(f"{DEMO_USERNAME}:{DEMO_SECRET}".encode()).decode()
    request = (
        f"GET /api/2.0/export?project_id={DEMO_PROJECT_ID}&from_date=2024-05-01"
        f"&to_date=2024-05-01 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = bytearray()
        while piece := sock.recv(65536):
            received += piece
    return bytes(received)


def test_cut_faults_on_the_wire(make_server: ServerFactory) -> None:
    wire: dict[str, bytes] = {}
    for kind in CUT_FAULT_KINDS:
        server = make_server(dataset(), faults=(kind,))
        wire[kind] = raw_exchange(server)
        (record,) = server.stats.records()
        assert record.fault == kind
    assert wire["reset_before_status"] == b""
    for kind, status in (("reset_in_error_headers", b"502"), ("reset_in_200_headers", b"200")):
        assert wire[kind].startswith(b"HTTP/1.1 " + status)
        assert b"\r\n\r\n" not in wire[kind]  # the headers never end
        assert b"content-length" not in wire[kind].lower()
        assert b"transfer-encoding" not in wire[kind].lower()
    head, _, body = wire["reset_in_error_body"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert f"Content-Length: {ERROR_PAGE_BYTES}".encode() in head
    assert len(body) == CUT_AFTER_BYTES and body.startswith(b"<html>")
    head, _, body = wire["reset_in_chunked_error_body"].partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    size_line = b"%x\r\n" % ERROR_PAGE_BYTES  # one chunk announced whole...
    assert body.startswith(size_line + b"<html>")
    assert len(body) == len(size_line) + CUT_AFTER_BYTES  # ...and cut inside


def test_cut_fault_records_what_was_sent(make_server: ServerFactory) -> None:
    server = make_server(dataset(), faults=("reset_in_error_body",), cut_status=401)
    raw_exchange(server)
    (record,) = server.stats.records()
    assert (record.status, record.bytes_sent) == (401, CUT_AFTER_BYTES)


# --- the gate hears of starts that never reached the server -------------------------------


class RecordingGate(OpenGate):
    """A gate that never waits and writes down what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def acquire(self, stop: threading.Event) -> bool:
        self.calls.append("acquire")
        return super().acquire(stop)

    def give_back(self) -> None:
        self.calls.append("give_back")

    def release(self) -> None:
        self.calls.append("release")


def scripted(outcomes: list[BaseException | str]) -> Callable[[], str]:
    """An attempt that raises or returns the next outcome each time."""
    pending = iter(outcomes)

    def attempt() -> str:
        outcome = next(pending)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt


def test_with_retries_gives_back_only_the_starts_that_never_reached() -> None:
    gate = RecordingGate()
    outcome = with_retries(
        scripted([RetryableError("could not connect", reached=False),
                  RetryableError("HTTP 502"), "body"]),
        settings=FetchSettings(backoff_base=0.0), rng=random.Random(1), gate=gate,
        stop=threading.Event(), on_retry=lambda *_: None)
    assert isinstance(outcome, Succeeded) and outcome.value == "body"
    assert gate.calls == ["acquire", "give_back", "release", "acquire", "release",
                          "acquire", "release"]


@pytest.mark.parametrize("error", [
    CertificateError("the certificate of x is not trusted", "fix"),
    ProxyCredentialsError("the proxy asked for credentials (HTTP 407)", "fix"),
])
def test_errors_before_the_server_are_fatal_and_given_back(error: Exception) -> None:
    gate = RecordingGate()
    with pytest.raises(type(error)):
        with_retries(scripted([error, "never"]), settings=FetchSettings(),
                     rng=random.Random(1), gate=gate, stop=threading.Event(),
                     on_retry=lambda *_: None)
    assert gate.calls == ["acquire", "give_back", "release"]


def test_a_fatal_answer_of_the_server_is_not_given_back() -> None:
    gate = RecordingGate()
    with pytest.raises(CredentialsError):
        with_retries(scripted([CredentialsError("HTTP 401")]), settings=FetchSettings(),
                     rng=random.Random(1), gate=gate, stop=threading.Event(),
                     on_retry=lambda *_: None)
    assert gate.calls == ["acquire", "release"]
