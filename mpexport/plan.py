"""Chunk planning: split an inclusive date range into query-sized chunks."""

from __future__ import annotations

import datetime as dt

from mpexport.errors import UsageError
from mpexport.model import Chunk

DEFAULT_CHUNK_DAYS = 7


def plan_chunks(start: dt.date, end: dt.date, chunk_days: int = DEFAULT_CHUNK_DAYS) -> list[Chunk]:
    """Split ``start..end`` (inclusive) into contiguous chunks of at most ``chunk_days``.

    The chunks cover the range exactly, in date order, without overlap; only
    the last one may be shorter.
    """
    if chunk_days < 1:
        raise UsageError(f"--chunk-days must be at least 1, not {chunk_days}")
    if start > end:
        raise UsageError(f"the range starts {start} after it ends {end}")
    chunks: list[Chunk] = []
    step = dt.timedelta(days=chunk_days)
    cursor = start
    while cursor <= end:
        last = min(end, cursor + step - dt.timedelta(days=1))
        chunks.append(Chunk(len(chunks), cursor, last))
        cursor = last + dt.timedelta(days=1)
    return chunks
