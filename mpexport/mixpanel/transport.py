"""The HTTP side of a request to Mixpanel: sessions, the gate, retries, how failures are read.

What every endpoint shares (export's chunks, engage's pages): a session per
worker, the rate-limit gate each request start passes, the one retry loop
(:func:`with_retries`, paced by :class:`RetryBudget`), the sending and
reading of one attempt, and the rules that turn a broken connection or a
non-200 answer into a retry or a fatal error. What an endpoint adds (the
events' split, engage's expired session) it passes in.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

from mpexport.errors import CertificateError, MpexportError, ProxyCredentialsError
from mpexport.mixpanel.endpoints import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    error_text,
    is_retryable_status,
    proxy_credentials_error,
    raise_for_fatal_status,
)

if TYPE_CHECKING:
    import requests

    from mpexport.mixpanel.credentials import CredentialKind
    from mpexport.mixpanel.http_cut import ConnectionCutter

log = logging.getLogger("mpexport.http")

# Error bodies only word a message: read this much at most, in small reads.
ERROR_BODY_LIMIT = 64 * 1024
ERROR_READ_BLOCK = 8 * 1024
# A 200 body is read in blocks this big: few calls, bounded memory.
READ_BLOCK = 256 * 1024
USER_AGENT = "mpexport"
DEFAULT_MAX_ATTEMPTS = 6
# 429s do not spend the retry budget, but a request refused this often fails.
MAX_THROTTLED = 30


@dataclass(frozen=True)
class FetchSettings:
    """How requests are made and retried: retry budget, backoff and timeouts."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    retry_after_cap: float = 3600.0
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    # The CA bundle to verify servers with instead of the system's store: the
    # run's REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE (see with_ca_file).
    ca_file: str | None = None


# The variables that name a CA bundle, the first set one winning: requests' two
# in requests' order, then OpenSSL's, which requests alone ignores.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


def with_ca_file(settings: FetchSettings | None, environ: Mapping[str, str]) -> FetchSettings:
    """``settings`` (or the defaults) verifying with the bundle ``environ`` names, if any.

    A bundle the settings already name wins: the caller chose it. Without
    one, sessions verify with the system's store (:func:`new_session`).
    """
    settings = settings or FetchSettings()
    ca_file = next((environ[name] for name in CA_BUNDLE_VARIABLES if environ.get(name)), None)
    if settings.ca_file is not None or not ca_file:
        return settings
    return dataclasses.replace(settings, ca_file=ca_file)


class RetryableError(Exception):
    """An attempt failed in a way another attempt may fix.

    ``throttled`` marks a 429: the server asked us to slow down, the chunk
    itself is fine. ``size_related`` marks failures that a smaller query may
    avoid (truncated bodies, timeouts, streams broken mid-body). ``reached``
    is False for an attempt that surely never got to the server (no
    connection, no TLS session, no tunnel): it spent none of the server's
    budget.
    """

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        *,
        throttled: bool = False,
        size_related: bool = False,
        reached: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled
        self.size_related = size_related
        self.reached = reached


class RequestGate(Protocol):
    """What every request start passes: the shared rate limiter."""

    def acquire(self, stop: threading.Event) -> bool:
        """Block until a request may start; False if ``stop`` was set meanwhile."""
        ...

    def release(self) -> None:
        """The request finished (its response is closed)."""
        ...

    def give_back(self) -> None:
        """The request this thread started never reached the server: uncount its start.

        Called between :meth:`acquire` and :meth:`release`, on the same thread.
        """
        ...

    def penalize(self, seconds: float) -> None:
        """The server refused us (429): no request starts for ``seconds``."""
        ...


class OpenGate:
    """A gate that never waits (for tests and unlimited proxies)."""

    def acquire(self, stop: threading.Event) -> bool:
        """Let the request start at once unless the run is stopping."""
        return not stop.is_set()

    def release(self) -> None:
        """Nothing to release."""

    def give_back(self) -> None:
        """Nothing was counted."""

    def penalize(self, seconds: float) -> None:
        """Ignore: the chunk's own backoff still applies."""


class Stopped(Exception):
    """The run is stopping; the attempt was abandoned."""


def backoff_delay(attempt: int, settings: FetchSettings, rng: random.Random) -> float:
    """Exponential backoff with full jitter for the given (1-based) failed attempt."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * (2 ** (attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling)


class RetryBudget:
    """One request's failed attempts: how long to wait before the next, or that it is spent.

    429s wait (``Retry-After``, else backoff; every worker waits with it,
    through the gate) without spending the budget, up to ``MAX_THROTTLED``;
    other failures spend it, each followed by jittered backoff (at least the
    server's ``Retry-After``). Shared by every endpoint's retry loop.
    """

    def __init__(self, settings: FetchSettings, rng: random.Random, gate: RequestGate) -> None:
        self.settings = settings
        self.rng = rng
        self.gate = gate
        self.failures = 0
        self.throttled = 0

    @property
    def attempts(self) -> int:
        """Failed attempts so far, 429s included."""
        return self.failures + self.throttled

    def delay_after(self, exc: RetryableError) -> float | None:
        """Count the failed attempt; the seconds to wait before the next, or None if spent."""
        cap = self.settings.retry_after_cap
        if exc.throttled:
            self.throttled += 1
            if self.throttled > MAX_THROTTLED:
                return None
            delay = exc.retry_after
            if delay is None:
                delay = backoff_delay(self.throttled, self.settings, self.rng)
            delay = min(cap, delay)
            # Everyone waits, not just this worker: the limit is per project.
            self.gate.penalize(delay)
            return delay
        self.failures += 1
        if self.failures >= self.settings.max_attempts:
            return None
        delay = backoff_delay(self.failures, self.settings, self.rng)
        if exc.retry_after is not None:
            delay = min(cap, max(delay, exc.retry_after))
        return delay

    def spent_reason(self, exc: RetryableError) -> str:
        """Why the request failed for good, after :meth:`delay_after` said it was spent."""
        if exc.throttled:
            return f"rate limited {self.throttled} times: {exc.reason}"
        return exc.reason


T = TypeVar("T")


@dataclass(frozen=True)
class Succeeded(Generic[T]):
    """What the successful attempt returned, after how many attempts (it included) and seconds."""

    value: T
    attempts: int
    seconds: float


@dataclass(frozen=True)
class GaveUp:
    """A request no longer retried: its budget is spent, or (``early``) its caller ended it.

    An early end's ``reason`` is the last failure's, not the budget's.
    """

    reason: str
    attempts: int
    early: bool = False


def with_retries(
    attempt: Callable[[], T],
    *,
    settings: FetchSettings,
    rng: random.Random,
    gate: RequestGate | None,
    stop: threading.Event,
    on_retry: Callable[[int, str, float], None],
    give_up_early: Callable[[RetryableError], bool] | None = None,
) -> Succeeded[T] | GaveUp:
    """Make ``attempt`` until it succeeds, each start through ``gate``, waiting as the budget says.

    Fatal errors propagate, and :class:`Stopped` when ``stop`` is set. An
    attempt that never reached the server (a :class:`RetryableError` that
    says so, an untrusted certificate, a proxy's 407) gives its start back to
    the gate: it spent none of the hour's queries. Each
    :class:`RetryableError` is counted by a :class:`RetryBudget`; then
    ``give_up_early`` (if any) may end the retries before the budget is
    spent (the events split a chunk that way), else ``on_retry(attempts,
    reason, delay)`` hears of it before the wait.
    """
    gate = gate or OpenGate()
    started = time.monotonic()
    budget = RetryBudget(settings, rng, gate)
    while True:
        if not gate.acquire(stop):
            raise Stopped()
        try:
            value = attempt()
        except RetryableError as exc:
            if not exc.reached:
                gate.give_back()
            if stop.is_set():
                # Most likely the stopping run cut the connection: not the
                # request's fault, and no retry, split or failure to report.
                raise Stopped() from None
            delay = budget.delay_after(exc)
            if give_up_early is not None and give_up_early(exc):
                return GaveUp(exc.reason, budget.attempts, early=True)
            if delay is None:
                return GaveUp(budget.spent_reason(exc), budget.attempts)
            on_retry(budget.attempts, exc.reason, delay)
            if stop.wait(delay):
                raise Stopped() from None
            continue
        except (CertificateError, ProxyCredentialsError):
            gate.give_back()  # both stop the request before it reaches Mixpanel
            raise
        finally:
            gate.release()
        return Succeeded(value, budget.attempts + 1, time.monotonic() - started)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def new_session(cutter: ConnectionCutter | None = None,
                ca_file: str | None = None) -> requests.Session:
    """A requests session for one worker; ``cutter`` can end its blocked reads from outside.

    Servers are verified with the system's certificate store (and certifi's
    bundle: :mod:`mpexport.mixpanel.tls`), or only with ``ca_file`` when one
    is named (``FetchSettings.ca_file``).
    """
    import requests

    from mpexport.mixpanel.tls import TrustingAdapter, system_trust_context

    session = requests.Session()
    # A named bundle is requests' own verify=PATH; else this session's own
    # context, never one injected into the ssl module (a library caller's
    # other clients are not changed).
    context = None if ca_file else system_trust_context()
    if cutter is not None:
        cutter.mount(session, context)
    else:
        adapter = TrustingAdapter(context)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "gzip"
    if ca_file:
        # requests reads REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE itself (they
        # win over this) but ignores OpenSSL's SSL_CERT_FILE.
        session.verify = ca_file
    return session


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every error behind it: causes, urllib3's reasons, wrapped arguments."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # Not __context__: an error handled earlier on the way (and unrelated
        # to this failure) must not make a request look as if it never left.
        behind = (getattr(current, "reason", None), current.__cause__, *current.args)
        pending.extend(e for e in behind if isinstance(e, BaseException))


# OpenSSL reasons that only a handshake gives: no TLS session, so no request
# was sent. Other SSL errors (an EOF, a bad record) may come after the request.
_HANDSHAKE_REASONS = frozenset({
    "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE",
})
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})")


def _handshake_failed(error: ssl.SSLError) -> bool:
    # An SSLError made by hand (urllib3 does, for its own checks) has no reason.
    reason = getattr(error, "reason", None) or next(iter(_SSL_REASON.findall(str(error))), "")
    return "HANDSHAKE" in reason or reason in _HANDSHAKE_REASONS


def _certificate_error(host: str, detail: BaseException,
                       settings: FetchSettings) -> CertificateError:
    why = getattr(detail, "verify_message", None) or str(detail) or type(detail).__name__
    if settings.ca_file:
        hint = (f"verified with {settings.ca_file}, the CA bundle that REQUESTS_CA_BUNDLE, "
                "CURL_CA_BUNDLE or SSL_CERT_FILE names in place of the system's certificate "
                "store: add the missing root certificate to it, or unset the variable")
    else:
        hint = ("mpexport trusts the system's certificate store: if a proxy inspects HTTPS, "
                "add its root certificate there (ask IT), or set SSL_CERT_FILE or "
                "REQUESTS_CA_BUNDLE to a PEM file that holds it")
    return CertificateError(f"the certificate of {host} is not trusted: {why}", hint)


def connection_failure(error: BaseException, host: str,
                       settings: FetchSettings) -> MpexportError | RetryableError:
    """What a failure of requests before the response (``error``) means for the request to ``host``.

    A certificate that is not trusted, or a proxy asking for credentials,
    is fatal (no retry can fix either). A connection never made (refused,
    unresolved, timed out), a TLS handshake that failed or a tunnel the
    proxy refused is retried, marked as never having reached the server.
    Anything else is retried and counts as a query: it may have reached
    Mixpanel.
    """
    import requests
    import urllib3.exceptions

    chain = list(_chain(error))
    for cause in chain:
        # urllib3's own hostname check raises a CertificateError of its own.
        if isinstance(cause, ssl.SSLCertVerificationError) or (
                type(cause).__name__ == "CertificateError" and isinstance(cause, ValueError)):
            return _certificate_error(host, cause, settings)
    for cause in chain:
        # http.client's own error, not the wrappers that quote it.
        tunnel = _TUNNEL_FAILED.match(str(cause)) if isinstance(cause, OSError) else None
        if tunnel is not None and tunnel.group(1) == "407":
            return proxy_credentials_error()
        if tunnel is not None:
            return RetryableError(f"the proxy refused the tunnel: {cause}", reached=False)
    for cause in chain:
        if isinstance(cause, (urllib3.exceptions.NewConnectionError,
                              urllib3.exceptions.ConnectTimeoutError)):
            # Raised only while connecting (DNS, TCP): nothing was sent.
            return RetryableError(f"could not connect: {type(cause).__name__}", reached=False)
        if isinstance(cause, ssl.SSLError) and _handshake_failed(cause):
            return RetryableError(f"TLS handshake failed: {type(cause).__name__}",
                                  reached=False)
    if isinstance(error, requests.Timeout):
        return RetryableError(f"request timed out: {type(error).__name__}", size_related=True)
    return RetryableError(f"request failed: {type(error).__name__}")


def is_connection_error(exc: BaseException) -> bool:
    """True for errors of the connection or of the bytes it carried, at any point.

    requests wraps what it raises itself, but ``raw.read`` lets urllib3's own
    errors (ProtocolError, ReadTimeoutError, DecodeError...) through, and
    http.client's and the socket's may surface bare. None of them is a bug of
    ours: each is a reason to try the chunk again.
    """
    import http.client

    import requests
    import urllib3.exceptions

    return isinstance(
        exc,
        (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
            zlib.error,
        ),
    )


@contextmanager
def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    target: str,
    settings: FetchSettings,
    fail: Callable[[requests.Response, int], NoReturn],
    **request: Any,
) -> Iterator[requests.Response]:
    """One attempt's request: its 200 response, streamed and closed on leaving.

    Up to the end of the headers every error of the connection is a
    :class:`RetryableError` (a timeout a size-related one: a smaller query
    may answer sooner); a non-200 answer goes to ``fail``. ``target`` names
    the request in the log.
    """
    import requests

    started = time.monotonic()
    try:
        response = session.request(
            method,
            url,
            stream=True,
            timeout=(settings.connect_timeout, settings.read_timeout),
            **request,
        )
    except requests.RequestException as exc:
        # Up to the end of the headers requests wraps every error of the
        # connection (socket, urllib3, http.client) in one of its own. What it
        # lets through unwrapped is set-up trouble (a missing CA bundle is a
        # bare OSError) that no retry fixes, so is_connection_error is not used.
        raise connection_failure(exc, urlsplit(url).netloc, settings) from None
    except OSError as exc:
        # requests checks the bundle it was told to use before connecting.
        if "CA certificate bundle" not in str(exc):
            raise
        missing = str(exc).rpartition("invalid path: ")[2] or settings.ca_file
        raise CertificateError(
            f"the CA bundle {missing} does not exist",
            "REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE names it: fix the path, or "
            "unset the variable to use the system's certificate store") from None
    with response:
        status = response.status_code
        # -v logs each request; never headers (Authorization lives there).
        log.info("%s -> %d, first byte after %.2fs", target, status, time.monotonic() - started)
        if status != 200:
            fail(response, status)
        yield response


def read_blocks(response: requests.Response, stop: threading.Event,
                on_bytes: Callable[[int], None], *, decode: bool) -> Iterator[bytes]:
    """The blocks of a 200 body as they arrive (``decode``: gunzipped), each told to ``on_bytes``.

    A connection that breaks, or ends before the Content-Length, is a
    size-related :class:`RetryableError` (a smaller query may get through);
    ``stop`` ends the read with :class:`Stopped`.
    """
    raw: Any = response.raw
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            block = raw.read(READ_BLOCK, decode_content=decode) or b""
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            raise RetryableError(f"connection broke mid-body: {type(exc).__name__}",
                                 size_related=True) from None
        if not block:
            break
        on_bytes(len(block))
        yield block
    # urllib3 2 raises on a body shorter than its Content-Length; urllib3 1
    # by default returns it as if whole.
    remaining = getattr(raw, "length_remaining", None)
    if isinstance(remaining, int) and remaining > 0:
        raise RetryableError(f"connection ended {remaining} bytes before the Content-Length",
                             size_related=True)


def read_error_body(raw: Any, limit: int = ERROR_BODY_LIMIT) -> tuple[bytes, str | None]:
    """Read up to ``limit`` decoded bytes of a non-200 body, as far as the connection allows.

    Returns the bytes and, when the connection broke first, the name of the
    error that cut them short (None for a whole body).
    """
    # read1 hands over what each socket read gave, so a cut keeps the bytes that
    # came before it; urllib3 2's read(n) waits for n bytes and drops them all
    # when the connection breaks first. urllib3 before 2.3 has no read1.
    read = getattr(raw, "read1", None) or raw.read
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            piece = read(min(ERROR_READ_BLOCK, limit - size), decode_content=True)
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        return b"".join(parts), type(exc).__name__
    return b"".join(parts), None


def read_error(response: requests.Response, status: int) -> bytes:
    """The body of a non-200 response, to word a message; one cut short says so in front."""
    body, cut = read_error_body(response.raw)
    if cut is not None:
        log.info("HTTP %d: its body was cut short (%s) after %d bytes", status, cut, len(body))
        # Extract the message first (a cut JSON body no longer parses), then
        # say it is partial, in front, where the length limits cannot drop it.
        body = f"(body cut short: {cut}) {error_text(body)}".encode()
    return body


def fail_for_status(response: requests.Response, status: int, api: str,
                    kind: CredentialKind | None = None) -> NoReturn:
    """Raise what a non-200 response of the ``api`` endpoint stands for: fatal, or a RetryableError.

    The status line decides, the body only words the message: a 401 whose body
    was cut is still a 401 (fatal), a 502 whose body was cut still a 502.
    ``kind`` is the kind of credential sent, which words a refusal.
    """
    body = read_error(response, status)
    raise_for_fatal_status(status, body, api, kind)
    reason = f"HTTP {status}: {error_text(body, 120)}"
    retry_after = None
    if is_retryable_status(status):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    raise RetryableError(reason, retry_after, throttled=status == 429)
