"""A validated export request and its chunk plan (and the plan's ``--dry-run`` text)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from mpexport.dates import check_timezone, day_range, format_duration, parse_range, today_in
from mpexport.errors import UsageError
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import (
    DEFAULT_REGION,
    Endpoint,
    query_params,
    query_text,
    resolve_endpoint,
    validate_filters,
)
from mpexport.mixpanel.fetch import Query
from mpexport.mixpanel.transport import FetchSettings
from mpexport.model import Chunk, QueryFilters
from mpexport.options import RunOptions, check_pacing, check_workers
from mpexport.plan import merge_ranges, plan_adaptive, plan_chunks, query_budget
from mpexport.startup import fetch_settings


@dataclass(frozen=True)
class ExportRequest:
    """A validated export: the range, the filters, where to send queries, how fast."""

    from_date: dt.date
    to_date: dt.date
    endpoint: Endpoint
    filters: QueryFilters = field(default_factory=QueryFilters)
    workers: int = RunOptions.workers
    chunk_days: int | None = None  # None: the adaptive plan
    settings: FetchSettings = field(default_factory=FetchSettings)
    qps_limit: float = RunOptions.qps_limit
    hourly_limit: int = RunOptions.hourly_limit
    project_timezone: str | None = None
    # Things the user should know about how the request was read (e.g. a
    # future --to clamped to today); reported as notes before the run.
    notes: tuple[str, ...] = ()
    # Plan chunks never span these days' ends (sync keeps re-read days apart
    # from new ones, so late events can be counted).
    boundaries: tuple[dt.date, ...] = ()
    # Days a refreshing run still need not fetch (a sync: loaded days older
    # than its lookback window, between a gap and that window).
    skip_days: frozenset[dt.date] = frozenset()

    def plan(
        self,
        *,
        used_this_hour: int = 0,
        day_volumes: Mapping[dt.date, int] | None = None,
        skip_days: Collection[dt.date] = (),
    ) -> list[Chunk]:
        """The chunks this export fetches, in date order.

        With ``--chunk-days`` the grid is fixed (a rerun meets the same
        chunks in the manifest). Otherwise the days not in ``skip_days`` are
        planned to fit the hourly budget left (``used_this_hour`` starts
        spent already), balanced across workers by ``day_volumes``.
        """
        chunks: list[Chunk] = []
        if self.chunk_days is not None:
            for start, end in _cut_runs([(self.from_date, self.to_date)], self.boundaries):
                chunks += plan_chunks(start, end, self.chunk_days)
            return _numbered(chunks)
        runs = _cut_runs(_missing_runs(self.from_date, self.to_date, skip_days),
                         self.boundaries)
        total_days = sum((b - a).days + 1 for a, b in runs)
        budget = query_budget(self.hourly_limit, used_this_hour)
        if budget < min(self.workers, total_days):
            # The hour is nearly spent: shrinking the plan to fit would mean
            # a few huge queries (slow and fragile at Mixpanel). Plan as for a
            # fresh hour and let the limiter wait for the budget instead.
            budget = query_budget(self.hourly_limit)
        for start, end in runs:
            share = ((end - start).days + 1) / total_days
            chunks += plan_adaptive(
                start, end,
                workers=max(1, round(self.workers * share)),
                max_queries=max(1, int(budget * share)),
                day_volumes=day_volumes,
            )
        return _numbered(chunks)

    def query(self, credentials: Credentials) -> Query:
        """The request description workers use."""
        return Query(self.endpoint, credentials, self.filters)


def _numbered(chunks: Sequence[Chunk]) -> list[Chunk]:
    return [dataclasses.replace(c, index=i) for i, c in enumerate(chunks)]


def without_days(chunks: Sequence[Chunk], days: Collection[dt.date]) -> list[Chunk]:
    """``chunks`` minus those whose every day is in ``days``, renumbered."""
    kept = [c for c in chunks if not set(day_range(c.from_date, c.to_date)) <= set(days)]
    return _numbered(kept)


def loaded_note(days: int) -> str | None:
    """The note of a run that does not fetch ``days`` days it holds (None for none).

    Without it a run over loaded days plans or loads ``0/0 chunks`` and
    says nothing of why.
    """
    if days <= 0:
        return None
    return f"{days} {'day' if days == 1 else 'days'} already loaded (use --refresh to fetch " \
           f"{'it' if days == 1 else 'them'} again)"


def loaded_not_fetched(request: ExportRequest, loaded: Collection[dt.date],
                       chunks: Sequence[Chunk]) -> int:
    """How many days of the request's range are ``loaded`` and fetched by none of ``chunks``.

    A chunk whose every day is loaded is not fetched either (the sink skips it).
    """
    fetched = {day for c in without_days(chunks, loaded)
               for day in day_range(c.from_date, c.to_date)}
    return sum(1 for day in day_range(request.from_date, request.to_date)
               if day in loaded and day not in fetched)


def remaining_ranges(
    planned: Sequence[Chunk], written: Sequence[Chunk]
) -> list[tuple[dt.date, dt.date]]:
    """The planned days not written, as merged ranges (for a resume command).

    Counted by day, not by chunk: a chunk split mid-run was written as halves.
    """
    done = {day for c in written for day in day_range(c.from_date, c.to_date)}
    missing = [Chunk(0, day, day) for c in planned
               for day in day_range(c.from_date, c.to_date) if day not in done]
    return merge_ranges(missing)


def missing_ranges(start: dt.date, end: dt.date,
                   done: Collection[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """The days of ``start..end`` not in ``done``, as merged ranges."""
    return merge_ranges([Chunk(0, d, d) for d in day_range(start, end) if d not in done])


def _missing_runs(
    start: dt.date, end: dt.date, skip_days: Collection[dt.date]
) -> list[tuple[dt.date, dt.date]]:
    return missing_ranges(start, end, skip_days)


def _cut_runs(
    runs: list[tuple[dt.date, dt.date]], boundaries: Collection[dt.date]
) -> list[tuple[dt.date, dt.date]]:
    cut: list[tuple[dt.date, dt.date]] = []
    for start, end in runs:
        for boundary in sorted(boundaries):
            if start <= boundary < end:
                cut.append((start, boundary))
                start = boundary + dt.timedelta(days=1)
        cut.append((start, end))
    return cut


def _as_date_text(value: dt.date | str) -> str:
    return value.isoformat() if isinstance(value, dt.date) else value


def build_request(
    options: RunOptions,
    *,
    region: str | None = None,
    settings: FetchSettings | None = None,
    today: dt.date | None = None,
) -> ExportRequest:
    """Validate ``options`` into a request; raise :class:`UsageError` if wrong.

    ``region`` is the one the credentials resolved to (``options.region``,
    else us, when not given). Dates are read in the project time zone (UTC
    by default); a ``to_date`` after today is clamped to today, with a note,
    since Mixpanel refuses it. A sync without ``from_date`` gets the range
    ``to_date..to_date`` here; the database decides where it really starts.
    """
    tz = options.project_timezone
    if tz is not None:
        check_timezone(tz)
    today = today or today_in(tz)
    first = options.from_date if options.from_date is not None else options.to_date
    start, end = parse_range(_as_date_text(first), _as_date_text(options.to_date), today=today)
    notes: list[str] = []
    if start > today:
        raise UsageError(f"--from {start.isoformat()} is in the future (today is {today})")
    if end > today:
        notes.append(f"--to {end.isoformat()} is in the future: exporting up to today, "
                     f"{today.isoformat()}")
        end = today
    _check_limits(options)
    filters = QueryFilters(tuple(options.events), options.where or None, options.limit)
    validate_filters(filters)
    settings = fetch_settings(options, settings)
    return ExportRequest(
        from_date=start,
        to_date=end,
        endpoint=resolve_endpoint(region or options.region or DEFAULT_REGION, options.api_url),
        filters=filters,
        workers=options.workers,
        chunk_days=options.chunk_days,
        settings=settings,
        qps_limit=options.qps_limit,
        hourly_limit=options.hourly_limit,
        project_timezone=tz,
        notes=tuple(notes),
    )


def _check_limits(options: RunOptions) -> None:
    check_workers(options.workers, "Mixpanel allows at most 100 concurrent queries per project")
    if options.chunk_days is not None and options.chunk_days < 1:
        raise UsageError(f"--chunk-days must be at least 1, not {options.chunk_days}")
    check_pacing(options.retries, options.qps_limit, options.hourly_limit)
    if options.lookback < 0:
        raise UsageError(f"--lookback must be 0 or more days, not {options.lookback}")


def describe_plan(request: ExportRequest, chunks: Sequence[Chunk],
                  credentials: Credentials | None, used_this_hour: Sequence[float]) -> list[str]:
    """Lines describing the plan for ``--dry-run``: one per chunk, then totals and waits."""
    from mpexport.pacing.windows import budget_wait

    lines = []
    for chunk in chunks:
        params = query_params(
            chunk, request.filters, credentials or Credentials(api_secret="-")
        )
        lines.append(f"chunk {chunk.index + 1}/{len(chunks)}  {chunk.label()}  "
                     f"GET {request.endpoint.export_url}?{query_text(params)}")
    workers = min(request.workers, len(chunks))
    wait = budget_wait(len(chunks), request.qps_limit, request.hourly_limit,
                       list(used_this_hour), time.time())
    lines.append(f"{len(chunks)} chunks, {len(chunks)} queries, {workers} workers, "
                 f"{request.from_date.isoformat()}..{request.to_date.isoformat()}")
    lines.append(f"rate limits {request.qps_limit:g}/s and {request.hourly_limit}/hour; "
                 f"{len(used_this_hour)} queries used in the last hour; the last query can "
                 f"start in {format_duration(wait)} at the earliest (ETA: that plus its "
                 f"download)")
    return lines
