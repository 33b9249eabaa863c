"""The library's front: :func:`export` and :func:`sync`, the CLI's commands as calls.

Both build a :class:`~mpexport.options.RunOptions` and call
:func:`mpexport.runner.run`, the same function the CLI calls, so a Python
caller can do everything the command line can.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport import runner
from mpexport.environment import Environment
from mpexport.interrupt import InterruptGuard
from mpexport.options import (
    PROJECT_TIMEZONE_ENV,
    RunOptions,
    from_environment,
    limits_from_environment,
    split_output,
)

if TYPE_CHECKING:
    from mpexport.events import ProgressCallback
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.transport import FetchSettings
    from mpexport.model import ExportResult, LoadStats

_D = RunOptions()  # the defaults, defined once in RunOptions


def _timezone(given: str | None, environ: Mapping[str, str]) -> str | None:
    return from_environment(PROJECT_TIMEZONE_ENV, given, "", str, environ) or None


def _path(value: Path | str | None) -> Path | None:
    return Path(value) if value is not None else None


def _lake(value: Path | str | None) -> str | None:
    # A folder or a URL: a URL must stay text (Path would fold its //).
    return os.fspath(value) if value is not None else None


def export(
    from_date: dt.date | str,
    to_date: dt.date | str,
    *,
    output: BinaryIO | Path | str | None = None,
    append: bool = _D.append,
    credentials: Credentials | None = None,
    profile: str | None = None,
    project_id: int | None = None,
    workers: int = _D.workers,
    chunk_days: int | None = _D.chunk_days,
    events: Sequence[str] = _D.events,
    where: str | None = _D.where,
    limit: int | None = _D.limit,
    region: str | None = _D.region,
    api_url: str | None = _D.api_url,
    progress: ProgressCallback | None = None,
    settings: FetchSettings | None = None,
    spool_dir: Path | None = None,
    db: Path | str | None = None,
    table: str = _D.table,
    replace: bool = _D.replace,
    refresh: bool = _D.refresh,
    parquet: Path | str | None = None,
    qps_limit: float | None = None,
    hourly_limit: int | None = None,
    project_timezone: str | None = None,
    retries: int = _D.retries,
    wait_lock: float = _D.wait_lock,
    memory_limit: str | None = _D.memory_limit,
    dry_run: bool = _D.dry_run,
    cancel: threading.Event | None = None,
    environment: Environment | None = None,
) -> ExportResult:
    """Export raw events for ``from_date..to_date`` (inclusive) as NDJSON or into DuckDB.

    Dates are ``datetime.date`` or the CLI's words (``YYYY-MM-DD``, ``today``,
    ``yesterday``, ``-N``). Events go to ``output`` (a binary stream, or a
    file path written whole, ``append`` adds to it; default stdout) chunk by
    chunk in date order, each chunk whole and verified. ``credentials``
    default to the ``MP_*`` environment variables or the saved ``profile``.
    With ``db``, events are loaded into that DuckDB file's ``table`` instead,
    deduplicated on Mixpanel's key, each chunk in one transaction with its
    manifest row; days already loaded are skipped (``refresh`` refetches,
    ``replace`` swaps stored days for fresh ones), and ``parquet`` (a folder
    or an ``s3://``, ``gs://`` or ``az://`` URL) also writes a day-partitioned
    Parquet dataset there. With ``parquet`` and no ``db`` the dataset is the
    output (the lake): each UTC day one file, written whole and deduplicated,
    days it holds skipped as a database's are. ``memory_limit`` is the
    loader's budget (``$MPEXPORT_MEMORY_LIMIT``, else the machine's: ``"256MB"``
    on two cores, more with more cores, see ``sinks.duckdb.budget.default_budget``).
    Requests stay within ``qps_limit`` per second and ``hourly_limit`` per
    rolling hour (Mixpanel's 3 and 60 by default), shared across runs; a
    failing chunk is tried ``retries`` more times. ``progress`` is called on
    the calling thread with each :mod:`mpexport.events` event. With
    ``dry_run`` nothing is fetched: the result's ``plan`` describes the
    queries. Returns an :class:`ExportResult`; raises
    :class:`~mpexport.errors.MpexportError` subclasses for bad input and for
    errors retrying cannot fix.

    ``cancel`` stops the run from another thread (or from ``progress``):
    once it is set, the run stops at its next safe point (within moments:
    blocked downloads are cut; only a connection still being set up or a
    DuckDB commit already writing is waited for), NDJSON output ends on a
    whole line, nothing partial is committed, and
    :class:`~mpexport.errors.Interrupted` is raised
    with ``signal_name == "cancel"``, ``result`` (what was done) and, for
    NDJSON, ``remaining`` (the date ranges still to fetch). Whatever way it
    ends, the call leaves no thread running and no spool file behind, so it
    can be called again and again in one process (a notebook, a worker).

    ``environment`` (an :class:`~mpexport.environment.Environment`) is what
    the call takes from its process: the variables read for credentials,
    limits and object stores, the stdout NDJSON goes to by default, the
    state folder of the hourly budget, the clocks. By default it is this
    process's (:meth:`Environment.from_process`); pass your own to run with
    other variables or another state folder without touching ``os.environ``.
    """
    environment = environment if environment is not None else Environment.from_process()
    environ = environment.environ
    stream, path = split_output(output)
    qps_limit, hourly_limit = limits_from_environment(qps_limit, hourly_limit, environ)
    options = RunOptions(
        from_date=from_date, to_date=to_date, events=tuple(events), where=where, limit=limit,
        project_timezone=_timezone(project_timezone, environ), workers=workers,
        chunk_days=chunk_days, retries=retries, qps_limit=qps_limit,
        hourly_limit=hourly_limit, region=region,
        api_url=api_url, project_id=project_id, profile=profile, output=path, append=append,
        db=_path(db), table=table, refresh=refresh, replace=replace, parquet=_lake(parquet),
        memory_limit=memory_limit, wait_lock=wait_lock, dry_run=dry_run,
    )
    # This run's own guard: a stop never outlives its run.
    return runner.run("export", options, credentials=credentials, output=stream,
                      progress=progress, guard=InterruptGuard(cancel, environment.stderr),
                      settings=settings, spool_dir=spool_dir, environment=environment)


def sync(
    db: Path | str | None = None,
    *,
    from_date: dt.date | str | None = None,
    to_date: dt.date | str = _D.to_date,
    lookback: int = _D.lookback,
    credentials: Credentials | None = None,
    profile: str | None = None,
    project_id: int | None = None,
    table: str = _D.table,
    workers: int = _D.workers,
    chunk_days: int | None = _D.chunk_days,
    events: Sequence[str] = _D.events,
    where: str | None = _D.where,
    limit: int | None = _D.limit,
    region: str | None = _D.region,
    api_url: str | None = _D.api_url,
    progress: ProgressCallback | None = None,
    settings: FetchSettings | None = None,
    spool_dir: Path | None = None,
    parquet: Path | str | None = None,
    qps_limit: float | None = None,
    hourly_limit: int | None = None,
    project_timezone: str | None = None,
    retries: int = _D.retries,
    wait_lock: float = _D.wait_lock,
    memory_limit: str | None = _D.memory_limit,
    refresh: bool = _D.refresh,
    dry_run: bool = _D.dry_run,
    cancel: threading.Event | None = None,
    environment: Environment | None = None,
) -> tuple[ExportResult, LoadStats]:
    """Bring a DuckDB file (``db``) or a lake (``parquet`` alone) up to ``to_date``.

    The first sync of a file needs ``from_date``, recorded as where its range
    begins; every sync fetches the days of that range not loaded yet, the
    ``lookback`` days before the newest loaded day (late events), and new
    days. A repeated ``from_date`` skips loaded, settled days as none does;
    an earlier one extends the range; ``refresh`` reads the whole range again
    (see :func:`mpexport.syncing.sync_range`). Holds the file's (or the
    lake's) lock for the run
    (:class:`~mpexport.errors.DatabaseLockedError` if another run has it,
    after waiting ``wait_lock`` seconds). The other arguments are
    :func:`export`'s (``environment`` too). Returns the export result and the
    load statistics (``late_rows`` counts late events added, ``updated`` stored
    events that a newer copy replaced; empty for a dry run).
    """
    from mpexport.model import LoadStats

    environment = environment if environment is not None else Environment.from_process()
    environ = environment.environ
    qps_limit, hourly_limit = limits_from_environment(qps_limit, hourly_limit, environ)
    options = RunOptions(
        from_date=from_date, to_date=to_date, lookback=lookback, events=tuple(events),
        where=where, limit=limit, project_timezone=_timezone(project_timezone, environ),
        workers=workers, chunk_days=chunk_days, retries=retries, qps_limit=qps_limit,
        hourly_limit=hourly_limit, region=region, api_url=api_url,
        project_id=project_id,
        profile=profile, db=_path(db), table=table, parquet=_lake(parquet),
        memory_limit=memory_limit, wait_lock=wait_lock, refresh=refresh, dry_run=dry_run,
    )
    result = runner.run("sync", options, credentials=credentials, progress=progress,
                        guard=InterruptGuard(cancel, environment.stderr), settings=settings,
                        spool_dir=spool_dir, environment=environment)
    return result, result.load if result.load is not None else LoadStats()
