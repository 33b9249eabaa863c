"""The one path of a check: options in, a :class:`VerifyResult` out.

``mpexport verify``, ``sync --verify`` and ``export --verify`` come here. In
order: validate, resolve credentials (as every run does), count what the
table or lake holds per day and event (read-only), plan the Query API
queries (several names and days each), fetch them on the one worker pool,
paced by the one limiter with the Query API's limits and the hour shared
with earlier runs through the state file, and compare.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import TYPE_CHECKING

from mpexport.events import BytesReceived, Notice, WaitingForBudget
from mpexport.startup import RunSetup, hour_used, ignore, new_limiter, resolve, tell
from mpexport.verify.compare import differences
from mpexport.verify.model import QueryFailed, QueryRetry, VerifyProgress, VerifyResult
from mpexport.verify.options import QUERY_CONCURRENCY, VerifyOptions
from mpexport.verify.plan import plan_queries
from mpexport.verify.request import VerifyRequest, build_verify_request

if TYPE_CHECKING:
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.event_counts import CountQuery, DayCounts, FetchedCounts
    from mpexport.verify.stored import StoredCounts
    from mpexport.workers import Worker

    _Message = FetchedCounts | QueryFailed | QueryRetry


def run_verify(options: VerifyOptions, *, progress: VerifyProgress | None = None,
               setup: RunSetup) -> VerifyResult:
    """Compare the stored counts ``options`` name with Mixpanel's; return what was found.

    ``progress`` receives :mod:`mpexport.verify.model` events on this
    thread. ``setup.environment`` gives the variables (credentials, an
    object store's), the state folder of the shared hour and the clocks.
    Raises :class:`~mpexport.errors.MpexportError` subclasses (a locked
    database, bad options, refused credentials); a stop raises
    :class:`~mpexport.errors.Interrupted`.
    """
    notify = progress or ignore
    request, credentials, warnings = resolve(
        options, lambda region, settings: build_verify_request(options, region=region,
                                                               settings=settings), setup)
    notes = [*warnings, *request.notes]
    tell(notify, notes)
    started = time.monotonic()
    stored = _stored(request, setup)
    first = request.from_date or stored.first_day
    last = request.to_date or stored.last_day
    names = sorted(set(stored.names) | set(options.events))
    result = VerifyResult(notes=notes, from_date=first, to_date=last, names=names,
                          settling_from=request.settling_from)
    if first is None or last is None or not names:
        result.notes.append("no events are stored in the range: nothing to compare")
        return result
    queries = plan_queries(first, last, names, options.days_per_query)
    result.queries = len(queries)
    if options.dry_run:
        result.plan = _describe(request, queries, credentials, setup)
        return result
    assert credentials is not None
    mixpanel = _fetch(request, credentials, queries, result, notify, setup)
    result.seconds = time.monotonic() - started
    answered = {(d, name) for q in queries if q not in {f.query for f in result.failed}
                for d in _days(q.from_date, q.to_date) for name in q.events}
    result.compared = len(answered)
    result.stored_total = sum(n for key, n in stored.counts.items() if key in answered)
    result.mixpanel_total = sum(mixpanel.values())
    result.differences = differences(stored.counts, mixpanel, sorted(answered))
    return result


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    from mpexport.dates import day_range

    return day_range(first, last)


def _stored(request: VerifyRequest, setup: RunSetup) -> StoredCounts:
    """What the table or the lake holds per day and event, in the request's range."""
    from mpexport.verify.stored import lake_counts, table_counts

    o = request.options
    first, last = request.from_date, request.to_date
    if first is None or last is None:
        # One end open: count everything and cut to the range here.
        first = last = None
    if o.db is not None:
        counts = table_counts(o.db, o.table, first, last, o.project_timezone)
    else:
        assert o.parquet is not None
        counts = lake_counts(o.parquet, first, last, o.project_timezone,
                             setup.environment.environ)
    low, high = request.from_date, request.to_date
    if first is None and (low is not None or high is not None):
        counts.counts = {(day, name): n for (day, name), n in counts.counts.items()
                         if (low is None or day >= low) and (high is None or day <= high)}
    return counts


def _describe(request: VerifyRequest, queries: list[CountQuery],
              credentials: Credentials | None, setup: RunSetup) -> list[str]:
    """The ``--dry-run`` lines: each query, then how many and how long the budget makes them."""
    from mpexport.dates import format_duration
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.event_counts import count_params, events_url
    from mpexport.pacing.limiter import budget_wait

    o = request.options
    used = hour_used(request.endpoint.base_url, credentials, setup.environment)
    shown = credentials or Credentials(api_secret="-")
    lines = []
    for query in queries:
        params = "&".join(f"{k}={v}" for k, v in count_params(query, shown).items())
        lines.append(f"query {query.index + 1}/{len(queries)}  {query.label()}  "
                     f"GET {events_url(request.endpoint)}?{params}")
    first, last = queries[0].from_date, queries[-1].to_date
    names = len({name for q in queries for name in q.events})
    wait = budget_wait(len(queries), o.qps_limit, o.hourly_limit, list(used), time.time())
    lines.append(f"the check takes {len(queries)} queries: {names} event names over "
                 f"{first.isoformat()}..{last.isoformat()}, {QUERY_CONCURRENCY} at once")
    lines.append(f"rate limits {o.qps_limit:g}/s and {o.hourly_limit}/hour; {len(used)} "
                 f"queries used in the last hour; the last query can start in "
                 f"{format_duration(wait)} at the earliest")
    return lines


def _fetch(request: VerifyRequest, credentials: Credentials, queries: list[CountQuery],
           result: VerifyResult, notify: VerifyProgress, setup: RunSetup) -> DayCounts:
    """Mixpanel's counts of every query, on the worker pool, paced by the shared limiter."""
    from mpexport.mixpanel.event_counts import FetchedCounts, fetch_counts
    from mpexport.workers import UnitQueue, WorkerPool

    o = request.options
    limiter = new_limiter(request.endpoint.base_url, credentials, setup.environment,
                          qps=o.qps_limit, hourly=o.hourly_limit, workers=QUERY_CONCURRENCY,
                          persist=setup.share_hour)
    counts: DayCounts = {}

    def work(worker: Worker[CountQuery, _Message], query: CountQuery) -> None:
        outcome = fetch_counts(worker.session, request.endpoint, credentials, query,
                               request.settings, worker.stop, worker.on_bytes,
                               worker.on_retry, worker.rng, worker.gate)
        worker.post(outcome if isinstance(outcome, FetchedCounts) else QueryFailed(outcome))

    def handle(message: _Message | BytesReceived | WaitingForBudget) -> int:
        if isinstance(message, FetchedCounts):
            counts.update(message.counts)
            return -1
        if isinstance(message, BytesReceived):
            result.bytes += message.count
            return 0
        notify(message)
        if isinstance(message, QueryFailed):
            result.failed.append(message.failure)
            return -1
        return 0

    pool: WorkerPool[CountQuery, _Message] = WorkerPool(
        work, name="mpexport-verify-worker", workers=QUERY_CONCURRENCY,
        guard=setup.stop_request(), connect_timeout=request.settings.connect_timeout,
        ca_file=request.settings.ca_file, retry=QueryRetry, discard=ignore, gate=limiter)
    try:
        pool.run(UnitQueue(queries), handle)
    finally:
        pool.close()
    result.failed.sort(key=lambda f: f.query.index)
    return counts


def with_range(options: VerifyOptions, first: dt.date, last: dt.date) -> VerifyOptions:
    """``options`` for the days ``first..last`` only."""
    return dataclasses.replace(options, from_date=first, to_date=last)


__all__ = ["Notice", "run_verify", "with_range"]
