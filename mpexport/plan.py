"""Chunk planning: split an inclusive date range into query-sized chunks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from mpexport.dates import day_range
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


# Leave this share of the hourly budget for retries and splits.
RETRY_RESERVE = 0.15
# Keep a chunk's expected volume under this many events (when volumes are
# known from earlier runs): big chunks are slow to start and costly to retry.
TARGET_EVENTS_PER_CHUNK = 500_000


def query_budget(hourly_limit: int, used_this_hour: int = 0) -> int:
    """How many queries a plan may use now, keeping a reserve for retries."""
    available = max(1, hourly_limit - used_this_hour)
    return max(1, int(available * (1 - RETRY_RESERVE)))


def plan_adaptive(
    start: dt.date,
    end: dt.date,
    *,
    workers: int,
    max_queries: int,
    day_volumes: Mapping[dt.date, int] | None = None,
    target_events: int = TARGET_EVENTS_PER_CHUNK,
) -> list[Chunk]:
    """Plan chunks for ``start..end`` that fit ``max_queries`` and balance the workers.

    The count is at least ``workers`` (so every worker has a chunk and no
    single slow chunk holds the run), more if the known volume asks for
    chunks under ``target_events`` (or, with no volumes known, for chunks of
    about a week), and at most ``max_queries`` and the number of days. Days
    are then cut into that many contiguous chunks of about equal expected
    volume (days without a recorded volume count as average).
    """
    if start > end:
        raise UsageError(f"the range starts {start} after it ends {end}")
    days = day_range(start, end)
    volumes = _expected_volumes(days, day_volumes or {})
    total = sum(volumes)
    # With nothing known about volumes: chunks of about a week, the size
    # Mixpanel exports reliably, unless the budget says otherwise.
    by_size = (
        -(-total // target_events) if day_volumes else -(-len(days) // DEFAULT_CHUNK_DAYS)
    )
    wanted = max(workers, by_size)
    count = max(1, min(wanted, max_queries, len(days)))
    return _cut_balanced(days, volumes, count)


def _expected_volumes(days: Sequence[dt.date], known: Mapping[dt.date, int]) -> list[int]:
    recorded = [known[d] for d in days if d in known]
    # Unknown days weigh as the average known day; with nothing known, all
    # days weigh the same. A floor of 1 keeps quiet days from merging forever.
    default = max(1, sum(recorded) // len(recorded)) if recorded else 1
    return [max(1, known.get(d, default)) for d in days]


def _cut_balanced(days: Sequence[dt.date], volumes: Sequence[int], count: int) -> list[Chunk]:
    total = sum(volumes)
    chunks: list[Chunk] = []
    first = 0
    running = 0  # volume of the days before day i
    chunk_start = 0  # volume before the current chunk's first day
    for i, volume in enumerate(volumes):
        later_chunks = count - len(chunks) - 1
        if i > first and later_chunks > 0:
            # The current chunk's fair share of what is left, re-balanced at
            # every cut so one huge day does not skew the chunks after it.
            target = chunk_start + (total - chunk_start) / (later_chunks + 1)
            overshoot = running + volume - target
            undershoot = target - running
            if overshoot > undershoot or len(days) - i == later_chunks:
                chunks.append(Chunk(len(chunks), days[first], days[i - 1]))
                first = i
                chunk_start = running
        running += volume
    chunks.append(Chunk(len(chunks), days[first], days[-1]))
    return chunks


def split_chunk(chunk: Chunk) -> tuple[Chunk, Chunk]:
    """Halve a chunk of two or more days (for a chunk that keeps failing)."""
    if chunk.days < 2:
        raise ValueError("a one-day chunk cannot be split")
    middle = chunk.from_date + dt.timedelta(days=chunk.days // 2 - 1)
    return (
        Chunk(chunk.index, chunk.from_date, middle),
        Chunk(chunk.index, middle + dt.timedelta(days=1), chunk.to_date),
    )
