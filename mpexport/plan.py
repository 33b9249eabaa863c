"""Chunk planning: split an inclusive date range into query-sized chunks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

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


def merge_ranges(chunks: Sequence[Chunk]) -> list[tuple[dt.date, dt.date]]:
    """The chunks' date ranges with adjacent ones merged, in date order."""
    merged: list[tuple[dt.date, dt.date]] = []
    for chunk in sorted(chunks, key=lambda c: c.from_date):
        if merged and (chunk.from_date - merged[-1][1]).days <= 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], chunk.to_date))
        else:
            merged.append((chunk.from_date, chunk.to_date))
    return merged
