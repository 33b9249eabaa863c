"""A validated check: where the export is, which days, the Query API endpoint and limits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from mpexport.dates import check_timezone, parse_date, today_in
from mpexport.errors import UsageError
from mpexport.mixpanel.endpoints import DEFAULT_REGION, Endpoint, resolve_query_endpoint
from mpexport.mixpanel.transport import FetchSettings
from mpexport.options import check_pacing
from mpexport.startup import fetch_settings
from mpexport.verify.options import VerifyOptions


@dataclass(frozen=True)
class VerifyRequest:
    """What a check compares, against which endpoint, how fast (options, checked).

    ``from_date``/``to_date`` are None where the options leave them to the
    range the store holds. ``today`` is the project's.
    """

    options: VerifyOptions
    endpoint: Endpoint
    today: dt.date
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    settings: FetchSettings = field(default_factory=FetchSettings)
    notes: tuple[str, ...] = ()

    @property
    def settling_from(self) -> dt.date:
        """The first day of the lookback window: later days may still get late events."""
        return self.today - dt.timedelta(days=self.options.lookback)


def _day(value: dt.date | str | None, today: dt.date, option: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return parse_date(value, today=today, option=option)


def build_verify_request(options: VerifyOptions, *, region: str | None = None,
                         settings: FetchSettings | None = None,
                         today: dt.date | None = None) -> VerifyRequest:
    """Validate ``options``; raise :class:`~mpexport.errors.UsageError` if wrong."""
    if (options.db is None) == (options.parquet is None):
        raise UsageError("verify needs --db FILE or --parquet DIR|URL (one of them)",
                         "e.g. mpexport verify --db events.duckdb")
    if options.db is not None:
        from mpexport.sinks.duckdb.schema import check_table_name

        check_table_name(options.table)
        if Path(options.db).is_dir():
            raise UsageError(f"--db {options.db} is a directory", "give a DuckDB file")
    check_pacing(options.retries, options.qps_limit, options.hourly_limit)
    if options.days_per_query is not None and options.days_per_query < 1:
        raise UsageError(f"--days-per-query must be at least 1, not {options.days_per_query}")
    if options.lookback < 0:
        raise UsageError(f"--lookback must be 0 or more days, not {options.lookback}")
    tz = options.project_timezone
    if tz is not None:
        check_timezone(tz)
    today = today or today_in(tz)
    start = _day(options.from_date, today, "--from")
    end = _day(options.to_date, today, "--to")
    notes: list[str] = []
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {start.isoformat()} is after --to {end.isoformat()}",
                         "swap them or widen the range")
    if end is not None and end > today:
        notes.append(f"--to {end.isoformat()} is in the future: checking up to today, "
                     f"{today.isoformat()}")
        end = today
    endpoint = resolve_query_endpoint(region or options.region or DEFAULT_REGION,
                                      options.api_url)
    return VerifyRequest(options, endpoint, today, start, end, fetch_settings(options, settings),
                         tuple(notes))
