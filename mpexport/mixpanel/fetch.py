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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import (
    EXPORT_PATH,
    Endpoint,
    query_params,
)

# Re-exported (``X as X``) until pipeline.py and profile_export/pool.py import
# it from the transport module, where it lives.
from mpexport.mixpanel.transport import FetchSettings as FetchSettings
from mpexport.mixpanel.transport import (
    OpenGate,
    RequestGate,
    RetryableError,
    RetryBudget,
    Stopped,
    fail_for_status,
    is_connection_error,
)
from mpexport.mixpanel.verify import BodyVerifier, IncompleteBody, VerifiedBody
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, QueryFilters

if TYPE_CHECKING:
    import requests


log = logging.getLogger("mpexport.http")

READ_BLOCK = 256 * 1024
# Consecutive size-related failures after which a multi-day chunk is halved.
SPLIT_AFTER = 2


@dataclass(frozen=True)
class ChunkSplit:
    """A chunk that kept failing in size-related ways, to be fetched as two halves."""

    chunk: Chunk
    reason: str


@dataclass(frozen=True)
class Query:
    """Everything that defines the requests of an export, except the chunk."""

    endpoint: Endpoint
    credentials: Credentials
    filters: QueryFilters


def _read_block(raw: Any) -> bytes:
    """The next block of a 200 body as received (still compressed); b"" at its end."""
    try:
        return raw.read(READ_BLOCK, decode_content=False) or b""
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        raise RetryableError(
            f"connection broke mid-body: {type(exc).__name__}", size_related=True
        ) from None


def _spool_body(
    response: requests.Response,
    chunk: Chunk,
    spool_dir: Path,
    stop: threading.Event,
    on_bytes: Callable[[int], None],
) -> tuple[Path, VerifiedBody]:
    """Stream a 200 body into a new spool file and verify it; the file is gone on any failure."""
    headers = response.headers
    gzipped = "gzip" in headers.get("Content-Encoding", "").lower()
    framed = "chunked" in headers.get("Transfer-Encoding", "").lower() or (
        "Content-Length" in headers
    )
    if not (framed or gzipped):
        # Such a body ends where the connection ends, so a reset looks like its
        # end: even one inside the headers, which http.client then takes for
        # their end, gives an "empty" 200. Mixpanel always frames its bodies;
        # gzip would carry its own end marker, but this body has none either.
        raise RetryableError(
            "200 response with no Content-Length, no chunked framing and no gzip: "
            "whether it arrived whole cannot be checked"
        )
    verifier = BodyVerifier(gzipped)
    try:
        fd, name = tempfile.mkstemp(prefix=f"chunk-{chunk.index:05d}-", suffix=".ndjson",
                                    dir=spool_dir)
    except OSError as exc:
        # No inode or file handle left: a passing condition, not a bug.
        raise RetryableError(f"could not create a spool file: {exc}") from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            while True:
                if stop.is_set():
                    raise Stopped()
                block = _read_block(response.raw)
                if not block:
                    break
                on_bytes(len(block))
                data = verifier.feed(block)
                if data:
                    spool.write(data)
        # urllib3 2 raises on a body shorter than its Content-Length; urllib3 1
        # by default returns it as if whole.
        remaining = getattr(response.raw, "length_remaining", None)
        if isinstance(remaining, int) and remaining > 0:
            raise RetryableError(
                f"connection ended {remaining} bytes before the Content-Length",
                size_related=True,
            )
        return path, verifier.finish()
    except IncompleteBody as exc:
        path.unlink(missing_ok=True)
        raise RetryableError(f"incomplete body: {exc}", size_related=True) from None
    except OSError as exc:
        # Reads turn their errors into RetryableError, so this is the spool
        # file: a full disk, which a smaller chunk may fit.
        path.unlink(missing_ok=True)
        raise RetryableError(f"could not write the spool file: {exc}",
                             size_related=True) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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

    Raises :class:`RetryableError` for failures worth another attempt (any
    error of the connection, wherever it breaks: before the status line, in
    the headers, in an error body or in the data), the library's fatal errors
    for 400/401/403, and :class:`Stopped` when ``stop`` is set mid-download.
    No spool file is left behind unless the attempt succeeds.
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
        # Up to the end of the headers requests wraps every error of the
        # connection (socket, urllib3, http.client) in one of its own. What it
        # lets through unwrapped is set-up trouble (a missing CA bundle is a
        # bare OSError) that no retry fixes, so is_connection_error is not used.
        raise RetryableError(f"request failed: {type(exc).__name__}") from None
    with response:
        status = response.status_code
        # -v logs each request; never headers (Authorization lives there).
        log.info("%s -> %d, first byte after %.2fs", target, status, time.monotonic() - started)
        if status != 200:
            fail_for_status(response, status)
        path, verified = _spool_body(response, chunk, spool_dir, stop, on_bytes)
    log.info("%s -> complete: %d lines, %d bytes in %.2fs", target, verified.lines,
             verified.bytes, time.monotonic() - started)
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
    budget = RetryBudget(settings, rng, gate)
    size_failures = 0
    while True:
        if not gate.acquire(stop):
            raise Stopped()
        try:
            path, lines, size, digest = fetch_once(
                session, query, chunk, spool_dir, settings, stop, on_bytes
            )
        except RetryableError as exc:
            if stop.is_set():
                # Most likely the stopping run cut the connection: not the
                # chunk's fault, and no retry, split or failure to report.
                raise Stopped() from None
            delay = budget.delay_after(exc)
            if not exc.throttled:
                size_failures = size_failures + 1 if exc.size_related else 0
                if size_failures >= SPLIT_AFTER and chunk.days > 1:
                    return ChunkSplit(chunk, exc.reason)
            if delay is None:
                return ChunkFailure(chunk, budget.spent_reason(exc), budget.attempts)
            on_retry(chunk, budget.attempts, exc.reason, delay)
            if stop.wait(delay):
                raise Stopped() from None
            continue
        finally:
            gate.release()
        return CompletedChunk(chunk, path, lines, size, digest, budget.attempts + 1,
                              time.monotonic() - started)
