"""Download one chunk into a spool file, verified complete, retried whole or split.

Each attempt streams the raw (still compressed) bytes from the socket,
decodes and checks them with :class:`~mpexport.verify.BodyVerifier`, and
writes the decoded body to a fresh spool file. Any failure deletes that file;
the next attempt starts the chunk from scratch, because the export is
unsorted and so has no safe offset to resume from. The retries are the
transport's (:func:`~mpexport.mixpanel.transport.with_retries`); what is the
events' own is the split of a chunk that looks too big to come whole.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mpexport.errors import SpoolFullError
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import (
    EXPORT_PATH,
    Endpoint,
    query_params,
    query_text,
)
from mpexport.mixpanel.transport import (
    FetchSettings,
    GaveUp,
    RequestGate,
    RetryableError,
    fail_for_status,
    read_blocks,
    send,
    with_retries,
)
from mpexport.mixpanel.verify import BodyVerifier, IncompleteBody, VerifiedBody
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, QueryFilters

if TYPE_CHECKING:
    import requests


log = logging.getLogger("mpexport.http")

# Consecutive size-related failures after which a multi-day chunk is halved.
SPLIT_AFTER = 2
# A full disk or an exhausted quota: no retry, and no smaller chunk, makes room.
# (Windows' ERROR_DISK_FULL arrives as ENOSPC; not every platform names EDQUOT.)
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


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


class TooBig:
    """The events' split: ``SPLIT_AFTER`` size-related failures in a row mean "halve the chunk".

    429s say nothing about the chunk's size: they neither count nor break the
    run. Any other failure breaks it.
    """

    def __init__(self) -> None:
        self.in_a_row = 0

    def __call__(self, exc: RetryableError) -> bool:
        """Count the failed attempt; True once the chunk should be split instead of retried."""
        if exc.throttled:
            return False
        self.in_a_row = self.in_a_row + 1 if exc.size_related else 0
        return self.in_a_row >= SPLIT_AFTER


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
        _stop_if_full(exc, spool_dir)
        # No file handle left: a passing condition, not a bug.
        raise RetryableError(f"could not create a spool file: {exc}") from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            # Still compressed: the verifier decodes, and so checks gzip's own end.
            for block in read_blocks(response, stop, on_bytes, decode=False):
                data = verifier.feed(block)
                if data:
                    spool.write(data)
        return path, verifier.finish()
    except IncompleteBody as exc:
        path.unlink(missing_ok=True)
        raise RetryableError(f"incomplete body: {exc}", size_related=True) from None
    except OSError as exc:
        # Reads turn their errors into RetryableError, so this is the spool file.
        path.unlink(missing_ok=True)
        _stop_if_full(exc, spool_dir)
        raise RetryableError(f"could not write the spool file: {exc}",
                             size_related=True) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _stop_if_full(error: OSError, spool_dir: Path) -> None:
    """Raise :class:`SpoolFullError` if ``error`` says the spool's disk is full.

    Retrying, or splitting the chunk, would spend a query of the hour on
    every attempt and store nothing: the run stops at the first. The spool
    sits in the temp folder (its parent), the folder the user can change.
    """
    if error.errno in DISK_FULL:
        raise SpoolFullError(spool_dir.parent, error.strerror or str(error)) from None


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
    for 400/401/403/407, an untrusted certificate and a full spool disk, and
    :class:`Stopped` when ``stop`` is set mid-download.
    No spool file is left behind unless the attempt succeeds.
    """
    params = query_params(chunk, query.filters, query.credentials)
    started = time.monotonic()
    target = f"GET {query.endpoint.host}{EXPORT_PATH}?{query_text(params)}"
    with send(session, "GET", query.endpoint.export_url, target=target, settings=settings,
              fail=functools.partial(fail_for_status, api="export",
                                     kind=query.credentials.kind), params=params,
              auth=query.credentials.auth()) as response:
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
    outcome = with_retries(
        lambda: fetch_once(session, query, chunk, spool_dir, settings, stop, on_bytes),
        settings=settings, rng=rng, gate=gate, stop=stop,
        on_retry=functools.partial(on_retry, chunk),
        # A one-day chunk cannot be split: it only retries.
        give_up_early=TooBig() if chunk.days > 1 else None,
    )
    if isinstance(outcome, GaveUp):
        if outcome.early:
            return ChunkSplit(chunk, outcome.reason)
        return ChunkFailure(chunk, outcome.reason, outcome.attempts)
    path, lines, size, digest = outcome.value
    return CompletedChunk(chunk, path, lines, size, digest, outcome.attempts, outcome.seconds)
