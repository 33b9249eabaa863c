"""Every option of an export or sync run, each default defined once.

The CLI's option defaults, the library's keyword defaults and the runner all
read them from here, so they cannot drift apart. Imported by ``--help``:
keep it free of heavy imports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

from mpexport.errors import UsageError

Command = Literal["export", "sync"]
T = TypeVar("T")

DEFAULT_WORKERS = 10
MAX_WORKERS = 100  # Mixpanel refuses more than 100 concurrent queries per project
DEFAULT_RETRIES = 5
MAX_RETRIES = 100

DEFAULT_QPS_LIMIT = 3.0  # Mixpanel's limits per project
DEFAULT_HOURLY_LIMIT = 60
DEFAULT_TABLE = "events"
DEFAULT_LOOKBACK = 5  # days: mobile SDKs send events up to 5 days late

# Environment variables that set options machine-wide, for the CLI and the
# library alike (an argument given explicitly wins).
QPS_LIMIT_ENV = "MPEXPORT_QPS_LIMIT"
HOURLY_LIMIT_ENV = "MPEXPORT_HOURLY_LIMIT"
PROJECT_TIMEZONE_ENV = "MPEXPORT_PROJECT_TIMEZONE"


def from_environment(name: str, given: T | None, default: T,
                     convert: Callable[[str], T],
                     environ: Mapping[str, str] | None = None) -> T:
    """``given`` if set, else ``$name`` converted, else ``default`` (for the library's calls).

    ``environ`` is the call's environment's variables (the process's by default).
    """
    import os

    if given is not None:
        return given
    text = (os.environ if environ is None else environ).get(name)
    if not text:
        return default
    try:
        return convert(text)
    except ValueError:
        raise UsageError(f"${name} is not a valid value: {text!r}",
                         "fix or unset the environment variable") from None


def limits_from_environment(qps_limit: float | None, hourly_limit: int | None,
                            environ: Mapping[str, str]) -> tuple[float, int]:
    """The library's rate limits: those given, else ``environ``'s ``$MPEXPORT_*``, else defaults."""
    return (from_environment(QPS_LIMIT_ENV, qps_limit, DEFAULT_QPS_LIMIT, float, environ),
            from_environment(HOURLY_LIMIT_ENV, hourly_limit, DEFAULT_HOURLY_LIMIT, int, environ))


def split_output(output: BinaryIO | Path | str | None) -> tuple[BinaryIO | None, Path | None]:
    """The library's ``output`` as (a stream to write, or a file path to put in place)."""
    if output is None:
        return None, None
    if isinstance(output, (str, Path)):
        return None, Path(output)
    return output, None


@dataclass(frozen=True, kw_only=True)
class FetchOptions:
    """What every fetching run has, events or profiles, with the same defaults.

    How hard to try and how fast, where Mixpanel is and whose credentials,
    where the output goes (NDJSON to ``output`` or stdout, or the DuckDB
    file ``db``) and how long to wait for another run's lock. Keyword-only,
    so each command's own fields keep their places.
    """

    # How hard to try, and how fast.
    retries: int = DEFAULT_RETRIES
    qps_limit: float = DEFAULT_QPS_LIMIT
    hourly_limit: int = DEFAULT_HOURLY_LIMIT
    # Where Mixpanel is, and whose credentials (when not passed explicitly).
    region: str | None = None  # None: the profile's or MP_REGION, else us
    api_url: str | None = None
    project_id: int | None = None
    profile: str | None = None
    # NDJSON output (stdout when None).
    output: Path | None = None
    # DuckDB output.
    db: Path | None = None
    memory_limit: str | None = None
    wait_lock: float = 0.0
    # Only describe the plan.
    dry_run: bool = False


@dataclass(frozen=True)
class RunOptions(FetchOptions):
    """What to export, from where, how fast, and where to put it.

    Dates are ``datetime.date`` or the CLI's words (``YYYY-MM-DD``, ``today``,
    ``yesterday``, ``-N``). A sync needs ``from_date`` only for a file's
    first sync. ``db`` loads into DuckDB instead of writing NDJSON; ``output``
    writes NDJSON to that file instead of stdout (``append`` adds to it).
    ``parquet`` (a folder or an ``s3://``, ``gs://``, ``az://`` URL) also
    writes a day-partitioned Parquet dataset; without ``db`` it is the output.
    The fields every fetching run has are :class:`FetchOptions`'.
    """

    from_date: dt.date | str | None = None
    to_date: dt.date | str = "today"
    # What to fetch.
    events: tuple[str, ...] = ()
    where: str | None = None
    limit: int | None = None
    project_timezone: str | None = None
    # How fast.
    workers: int = DEFAULT_WORKERS
    chunk_days: int | None = None  # None: planned to fit the hourly budget
    # NDJSON output.
    append: bool = False
    # DuckDB output.
    table: str = DEFAULT_TABLE
    refresh: bool = False
    replace: bool = False
    parquet: str | None = None  # a folder or a URL; alone, the lake is the output
    # sync only.
    lookback: int = DEFAULT_LOOKBACK


def check_workers(workers: int, hint: str) -> None:
    """Raise UsageError for a number of parallel requests Mixpanel would refuse."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}", hint)


def check_pacing(retries: int, qps_limit: float, hourly_limit: int) -> None:
    """Raise UsageError for retries, a rate or an hourly limit no fetching command accepts."""
    if not 0 <= retries <= MAX_RETRIES:
        raise UsageError(f"--retries must be between 0 and {MAX_RETRIES}, not {retries}")
    if not qps_limit > 0:
        raise UsageError(f"--qps-limit must be above 0, not {qps_limit}")
    if hourly_limit < 1:
        raise UsageError(f"--hourly-limit must be at least 1, not {hourly_limit}")
