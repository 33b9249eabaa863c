"""Every option of ``mpexport verify``, each default defined once.

The CLI's option defaults and the library's call read them from here.
Imported by ``--help``: keep it free of heavy imports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mpexport.options import DEFAULT_LOOKBACK, DEFAULT_TABLE, FetchOptions

# The Query API allows 5 concurrent queries per project (and, as the export
# API, 60 an hour: FetchOptions' hourly_limit).
QUERY_CONCURRENCY = 5
# Days one query counts at most: the answer holds a number per day and name,
# small either way; longer ranges take several queries.
MAX_DAYS_PER_QUERY = 92


@dataclass(frozen=True)
class VerifyOptions(FetchOptions):
    """What to check against Mixpanel's counts: a DuckDB table or a lake, and which days.

    ``db`` (with ``table``) or ``parquet`` (a folder or a URL) is what was
    exported. ``from_date``/``to_date`` (dates or the CLI's words) default
    to the range the store holds. ``project_timezone``: the IANA zone of a
    project created before 2023, whose days are the zone's. ``days_per_query``
    (None: planned) bounds each query's days. ``events`` are compared too
    where nothing of them is stored. Differences on the last
    ``lookback`` days before today are called still settling. The fields every
    fetching run has are :class:`~mpexport.options.FetchOptions`'.
    """

    from_date: dt.date | str | None = None
    to_date: dt.date | str | None = None
    table: str = DEFAULT_TABLE
    parquet: str | None = None
    project_timezone: str | None = None
    days_per_query: int | None = None
    # Names compared besides those stored in the range (a name a day lacks whole).
    events: tuple[str, ...] = ()
    lookback: int = DEFAULT_LOOKBACK
