"""The library's front for profiles: :func:`profiles`, ``mpexport profiles`` as a call.

It builds a :class:`~mpexport.profile_export.options.ProfileOptions` and calls
:func:`mpexport.profile_export.runner.run_profiles`, the function the CLI calls.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport.environment import Environment
from mpexport.interrupt import InterruptGuard
from mpexport.options import limits_from_environment, split_output
from mpexport.profile_export import runner
from mpexport.profile_export.options import ProfileOptions
from mpexport.startup import RunSetup

if TYPE_CHECKING:
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.transport import FetchSettings
    from mpexport.profile_export.model import ProfileProgress, ProfileResult

_D = ProfileOptions()  # the defaults, defined once in ProfileOptions


def profiles(
    *,
    where: str | None = _D.where,
    cohort_id: int | None = _D.cohort_id,
    group_id: str | None = _D.group_id,
    properties: Sequence[str] = _D.properties,
    output: BinaryIO | Path | str | None = None,
    db: Path | str | None = None,
    table: str | None = _D.table,
    credentials: Credentials | None = None,
    profile: str | None = _D.profile,
    project_id: int | None = _D.project_id,
    region: str | None = _D.region,
    api_url: str | None = _D.api_url,
    workers: int = _D.workers,
    retries: int = _D.retries,
    qps_limit: float | None = None,
    hourly_limit: int | None = None,
    memory_limit: str | None = _D.memory_limit,
    wait_lock: float = _D.wait_lock,
    allow_empty: bool = _D.allow_empty,
    dry_run: bool = _D.dry_run,
    progress: ProfileProgress | None = None,
    settings: FetchSettings | None = None,
    spool_dir: Path | None = None,
    cancel: threading.Event | None = None,
    environment: Environment | None = None,
) -> ProfileResult:
    """Export Mixpanel user profiles (or ``group_id``'s group profiles) as NDJSON or into DuckDB.

    ``where`` filters on profile properties (Mixpanel's expression),
    ``cohort_id`` keeps a cohort's members, ``properties`` keeps only those
    property names. Page 0 opens a Mixpanel session; the other pages are
    fetched ``workers`` at a time (5 by default, the Query API's limit),
    each verified whole, within ``qps_limit`` starts per second and
    ``hourly_limit`` per rolling hour (60 by default), shared with earlier
    runs on this machine.

    NDJSON (one ``{"$distinct_id", "$properties"}`` object per line, as
    Mixpanel listed it) goes to ``output`` (a binary stream, or a file path
    written whole; default stdout) once every page has arrived. With ``db``
    the profiles go into that DuckDB file's ``table`` (``profiles``, or
    ``group_profiles`` for groups): a full export replaces the table's
    snapshot in one transaction, a filtered one (``where``, ``cohort_id``)
    upserts its profiles by ``distinct_id``. A full export that lists no
    profiles leaves a table that holds some unchanged and raises
    :class:`~mpexport.errors.EmptySnapshotError`, unless ``allow_empty``.

    A run that stops (``cancel``, an error) keeps the pages it fetched: the
    same call again continues the session while Mixpanel keeps it, and
    starts again from page 0 when it expired. ``dry_run`` fetches nothing;
    the result's ``plan`` says what would be asked and how long the hourly
    budget makes it take. ``credentials`` default to the ``MP_*``
    environment variables or the saved ``profile``. Returns a
    :class:`~mpexport.profile_export.model.ProfileResult`; raises
    :class:`~mpexport.errors.MpexportError` subclasses (a stop raises
    :class:`~mpexport.errors.Interrupted`). ``environment`` is what the call
    takes from its process, this process's by default (see :func:`mpexport.export`).
    """
    environment = environment if environment is not None else Environment.from_process()
    stream, path = split_output(output)
    qps_limit, hourly_limit = limits_from_environment(qps_limit, hourly_limit,
                                                      environment.environ)
    options = ProfileOptions(
        where=where, cohort_id=cohort_id, group_id=group_id, properties=tuple(properties),
        workers=workers, retries=retries, qps_limit=qps_limit, hourly_limit=hourly_limit,
        region=region, api_url=api_url, project_id=project_id, profile=profile, output=path,
        db=Path(db) if db is not None else None, table=table, memory_limit=memory_limit,
        wait_lock=wait_lock, allow_empty=allow_empty, dry_run=dry_run,
    )
    # This run's own guard: a stop never outlives its run.
    setup = RunSetup(environment, credentials=credentials, output=stream,
                     guard=InterruptGuard(cancel, environment.stderr), settings=settings,
                     spool_dir=spool_dir)
    return runner.run_profiles(options, progress=progress, setup=setup)
