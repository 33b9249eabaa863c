"""Download one chunk into a spool file, verified complete, retried whole.

Each attempt streams the raw (still compressed) bytes from the socket,
decodes and checks them with :class:`~mpexport.verify.BodyVerifier`, and
writes the decoded body to a fresh spool file. Any failure deletes that file;
the next attempt starts the chunk from scratch, because the export is
unsorted and so has no safe offset to resume from.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mpexport.client import (
    CONNECT_TIMEOUT,
    EXPORT_PATH,
    READ_TIMEOUT,
    Endpoint,
    error_text,
    is_retryable_status,
    query_params,
    raise_for_fatal_status,
)
from mpexport.credentials import Credentials
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, QueryFilters
from mpexport.verify import BodyVerifier, IncompleteBody

if TYPE_CHECKING:
    import requests

log = logging.getLogger("mpexport.http")

READ_BLOCK = 256 * 1024
DEFAULT_MAX_ATTEMPTS = 6
# 429s do not spend the retry budget, but a chunk refused this often fails.
MAX_THROTTLED = 30
# Consecutive size-related failures after which a multi-day chunk is halved.
SPLIT_AFTER = 2
USER_AGENT = "mpexport"


class RetryableError(Exception):
    """An attempt failed in a way another attempt may fix.

    ``throttled`` marks a 429: the server asked us to slow down, the chunk
    itself is fine. ``size_related`` marks failures that a smaller query may
    avoid (truncated bodies, timeouts, streams broken mid-body).
    """

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        *,
        throttled: bool = False,
        size_related: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled
        self.size_related = size_related


class RequestGate(Protocol):
    """What every request start passes: the shared rate limiter."""

    def acquire(self, stop: threading.Event) -> bool:
        """Block until a request may start; False if ``stop`` was set meanwhile."""
        ...

    def release(self) -> None:
        """The request finished (its response is closed)."""
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

    def penalize(self, seconds: float) -> None:
        """Ignore: the chunk's own backoff still applies."""


@dataclass(frozen=True)
class ChunkSplit:
    """A chunk that kept failing in size-related ways, to be fetched as two halves."""

    chunk: Chunk
    reason: str


class Stopped(Exception):
    """The run is stopping; the attempt was abandoned."""


@dataclass(frozen=True)
class FetchSettings:
    """How chunks are fetched: retry budget, backoff, timeouts and spool place."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    retry_after_cap: float = 3600.0
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT


@dataclass(frozen=True)
class Query:
    """Everything that defines the requests of an export, except the chunk."""

    endpoint: Endpoint
    credentials: Credentials
    filters: QueryFilters


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


def backoff_delay(attempt: int, settings: FetchSettings, rng: random.Random) -> float:
    """Exponential backoff with full jitter for the given (1-based) failed attempt."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * (2 ** (attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling)


def new_session() -> requests.Session:
    """A requests session for one worker."""
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "gzip"
    # requests reads REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE itself (they still
    # win) but ignores OpenSSL's SSL_CERT_FILE, using certifi's bundle instead.
    ca_file = os.environ.get("SSL_CERT_FILE")
    if ca_file:
        session.verify = ca_file
    return session


def fetch_once(
    session: requests.Session,
    query: Query,
    chunk: Chunk,
    spool_dir: Path,
    settings: FetchSettings,
    stop: threading.Event,
    on_bytes: Callable[[int], None],
) -> tuple[Path, int, int, str]:
    """Make one attempt at a chunk: returns (spool path, lines, bytes, sha256).

    Raises :class:`RetryableError` for failures worth another attempt, the
    library's fatal errors for 400/401/403, and :class:`Stopped` when ``stop``
    is set mid-download.
    """
    import requests

    params = query_params(chunk, query.filters, query.credentials)
    started = time.monotonic()
    target = f"GET {query.endpoint.host}{EXPORT_PATH} {params}"
    try:
        response = session.get(
            query.endpoint.export_url,
            params=params,
            auth=query.credentials.basic_auth(),
            stream=True,
            timeout=(settings.connect_timeout, settings.read_timeout),
        )
    except requests.Timeout as exc:
        raise RetryableError(f"request timed out: {type(exc).__name__}",
                             size_related=True) from None
    except requests.RequestException as exc:
        raise RetryableError(f"request failed: {type(exc).__name__}") from None
    with response:
        status = response.status_code
        # -v logs each request; never headers (Authorization lives there).
        log.info("%s -> %d, first byte after %.2fs", target, status, time.monotonic() - started)
        if status != 200:
            body = response.raw.read(64 * 1024, decode_content=True) or b""
            raise_for_fatal_status(status, body)
            reason = f"HTTP {status}: {error_text(body, 120)}"
            retry_after = None
            if is_retryable_status(status):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RetryableError(reason, retry_after, throttled=status == 429)
        gzipped = "gzip" in response.headers.get("Content-Encoding", "").lower()
        verifier = BodyVerifier(gzipped)
        fd, name = tempfile.mkstemp(prefix=f"chunk-{chunk.index:05d}-", suffix=".ndjson",
                                    dir=spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as spool:
                while True:
                    if stop.is_set():
                        raise Stopped()
                    block = response.raw.read(READ_BLOCK, decode_content=False)
                    if not block:
                        break
                    on_bytes(len(block))
                    data = verifier.feed(block)
                    if data:
                        spool.write(data)
            verified = verifier.finish()
            log.info("%s -> complete: %d lines, %d bytes in %.2fs", target, verified.lines,
                     verified.bytes, time.monotonic() - started)
        except IncompleteBody as exc:
            path.unlink(missing_ok=True)
            raise RetryableError(f"incomplete body: {exc}", size_related=True) from None
        except BaseException as exc:
            path.unlink(missing_ok=True)
            # urllib3's own errors (ProtocolError, ReadTimeoutError...) surface
            # from raw.read without requests' wrapping.
            broken = isinstance(exc, (requests.RequestException, OSError)) or type(
                exc
            ).__module__.startswith(("urllib3", "http.client"))
            if broken:
                raise RetryableError(
                    f"connection broke mid-body: {type(exc).__name__}", size_related=True
                ) from None
            raise
    return path, verified.lines, verified.bytes, verified.sha256


def fetch_chunk(
    session: requests.Session,
    query: Query,
    chunk: Chunk,
    spool_dir: Path,
    settings: FetchSettings,
    stop: threading.Event,
    on_bytes: Callable[[int], None],
    on_retry: Callable[[Chunk, int, str, float], None],
    rng: random.Random,
    gate: RequestGate | None = None,
) -> CompletedChunk | ChunkFailure | ChunkSplit:
    """Fetch a chunk with retries through ``gate``.

    A fatal error (400, 401, 403) propagates; a spent retry budget gives a
    :class:`ChunkFailure`; repeated size-related failures of a multi-day
    chunk give a :class:`ChunkSplit`. 429s wait (``Retry-After`` or backoff,
    shared with every worker through the gate) without spending the budget.
    """
    gate = gate or OpenGate()
    started = time.monotonic()
    failures = 0
    throttled = 0
    size_failures = 0
    while True:
        if not gate.acquire(stop):
            raise Stopped()
        try:
            path, lines, size, digest = fetch_once(
                session, query, chunk, spool_dir, settings, stop, on_bytes
            )
        except RetryableError as exc:
            if exc.throttled:
                throttled += 1
                if throttled > MAX_THROTTLED:
                    return ChunkFailure(chunk, f"rate limited {throttled} times: {exc.reason}",
                                        failures + throttled)
                delay = exc.retry_after
                if delay is None:
                    delay = backoff_delay(throttled, settings, rng)
                delay = min(settings.retry_after_cap, delay)
                # Everyone waits, not just this worker: the limit is per project.
                gate.penalize(delay)
                on_retry(chunk, failures + throttled, exc.reason, delay)
                if stop.wait(delay):
                    raise Stopped() from None
                continue
            failures += 1
            size_failures = size_failures + 1 if exc.size_related else 0
            if size_failures >= SPLIT_AFTER and chunk.days > 1:
                return ChunkSplit(chunk, exc.reason)
            if failures >= settings.max_attempts:
                return ChunkFailure(chunk, exc.reason, failures + throttled)
            delay = backoff_delay(failures, settings, rng)
            if exc.retry_after is not None:
                delay = min(settings.retry_after_cap, max(delay, exc.retry_after))
            on_retry(chunk, failures + throttled, exc.reason, delay)
            if stop.wait(delay):
                raise Stopped() from None
            continue
        finally:
            gate.release()
        return CompletedChunk(chunk, path, lines, size, digest, failures + throttled + 1,
                              time.monotonic() - started)
