"""The one run path of a profiles export: options in, a :class:`ProfileResult` out.

``mpexport profiles`` and :func:`mpexport.profile_export.api.profiles` both come
here with a :class:`ProfileOptions`. In order: validate, resolve credentials
(as an events run does), take the database's lock (with ``db``) or the
session directory (NDJSON), then continue the stored session or open one
with page 0, fetch the missing pages on a few threads, and write the
profiles out once every page of one session is in. A session Mixpanel
forgets midway is dropped whole and the export starts again from page 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mpexport.errors import Interrupted, UnavailableError
from mpexport.events import Notice
from mpexport.interrupt import InterruptGuard
from mpexport.profile_export.model import PageDone, PagesPlanned, ProfileProgress, ProfileResult
from mpexport.profile_export.options import ProfileOptions
from mpexport.profile_export.request import ProfileRequest, build_profile_request, describe_plan
from mpexport.profile_export.resume import SessionState, profiles_dir, session_from_page0
from mpexport.startup import (
    RunSetup,
    database_locked,
    hour_used,
    ignore,
    new_limiter,
    resolve,
    tell,
)

if TYPE_CHECKING:
    from mpexport.environment import Environment
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.profile_export.duckdb import DuckDBProfiles
    from mpexport.profile_export.ndjson import NdjsonProfiles
    from mpexport.profile_export.pool import PagePool, SpooledPage

    Sink = DuckDBProfiles | NdjsonProfiles

# Restarts from page 0 after expired sessions before the run gives up: a
# session that cannot outlive the export would otherwise spend the hour forever.
MAX_SESSION_RESTARTS = 3
SESSION_EXPIRED = "the session expired; starting again from page 0"


def run_profiles(options: ProfileOptions, *, progress: ProfileProgress | None = None,
                 setup: RunSetup) -> ProfileResult:
    """Export the profiles ``options`` describe, as ``setup`` says; return what the run did.

    NDJSON is written once every page is in. ``progress`` receives
    :mod:`mpexport.profile_export.model` events on this thread. A database
    run's pages wait in ``setup.spool_dir``. ``setup.environment`` (the
    front builds it) gives the variables, the stdout, the state folder of
    the hour and of the sessions kept for resuming, the lock's command name
    and the clocks.
    Raises :class:`~mpexport.errors.MpexportError` subclasses; a stop raises
    :class:`~mpexport.errors.Interrupted` whose ``result`` is what was done.
    """
    notify = progress or ignore
    request, credentials, warnings = resolve(
        options,
        lambda region, settings: build_profile_request(options, region=region,
                                                       settings=settings),
        setup)
    tell(notify, warnings)
    if options.dry_run:
        # Before any sink is opened: a dry run locks, creates and changes nothing.
        return _dry_run(request, credentials, warnings, notify, setup.environment)
    guard = setup.stop_request()
    with _sink(request, credentials, guard, setup) as sink:
        assert credentials is not None
        result = ProfileResult(notes=list(warnings))
        started = time.monotonic()
        try:
            _export(request, credentials, sink, result, notify, guard, setup)
        except Interrupted as stop:
            result.interrupted = True
            stop.result = result
            # Only NDJSON writes as it goes; a database commits all or nothing.
            result.pages_written = getattr(sink, "pages_out", 0)
            raise
        finally:
            result.seconds = time.monotonic() - started
        return result


@contextlib.contextmanager
def _sink(request: ProfileRequest, credentials: Credentials | None, guard: InterruptGuard,
          setup: RunSetup) -> Iterator[Sink]:
    """The run's sink, opened: the locked database, or the session's page directory."""
    options, environment = request.options, setup.environment
    if options.db is None:
        from mpexport.profile_export.ndjson import NdjsonProfiles
        from mpexport.profile_export.resume import PageFiles

        files = PageFiles.for_fingerprint(request.fingerprint(credentials),
                                          profiles_dir(environment.state_dir))
        stream = setup.output if setup.output is not None else environment.stdout
        ndjson = NdjsonProfiles(files, stream=stream, output=options.output, guard=guard)
        ndjson.open()
        try:
            yield ndjson
        finally:
            ndjson.close()
        return
    from mpexport.profile_export.duckdb import DuckDBProfiles
    from mpexport.sinks.duckdb.budget import chosen_memory_limit
    from mpexport.sinks.duckdb.schema import file_identity, remove_new_database
    from mpexport.spool import spool_folder

    path = Path(options.db)
    with database_locked(path, options.wait_lock, guard, environment.command_name), \
            spool_folder(setup.spool_dir) as spool:
        # Looked at under the lock: only a file this run creates may be removed again.
        # (lexists: a dangling link is not a file this run may remove.)
        created = not os.path.lexists(path)
        database = DuckDBProfiles(path, table=options.table_name, group_key=options.group_id,
                                  filtered=options.filtered, spool_dir=spool,
                                  memory_limit=chosen_memory_limit(options.memory_limit,
                                                                   environment),
                                  cpus=environment.cpus,
                                  allow_empty=options.allow_empty)
        opened: tuple[int, int] | None = None
        try:
            database.open()
            opened = file_identity(path) if created else None
            guard.raise_if_requested()
            yield database
        finally:
            database.close()
            if created and not database.committed and opened is not None:
                # Nothing of this run was stored (page 0 never came): no empty file stays.
                remove_new_database(path, opened)


def _dry_run(request: ProfileRequest, credentials: Credentials | None, notes: list[str],
             notify: ProfileProgress, environment: Environment) -> ProfileResult:
    """The plan, from what is stored read-only: no lock, no spool, no table, no file."""
    from mpexport.profile_export.duckdb import DuckDBProfiles
    from mpexport.profile_export.resume import PageFiles
    from mpexport.sinks.duckdb.budget import chosen_memory_limit
    from mpexport.sinks.duckdb.schema import check_db_path

    o = request.options
    used = hour_used(request.endpoint.base_url, credentials, environment)
    key = request.fingerprint(credentials)
    state, done, stored = None, set[int](), None
    if o.db is None:
        sessions = profiles_dir(environment.state_dir)
        state, done = PageFiles.for_fingerprint(key, sessions).resume(key)  # reads files only
    else:
        path = Path(o.db)
        check_db_path(path)  # reads a few bytes: the message a real run would give
        if path.exists():
            database = DuckDBProfiles(path, table=o.table_name, group_key=o.group_id,
                                      filtered=o.filtered, spool_dir=path.parent,
                                      memory_limit=chosen_memory_limit(o.memory_limit,
                                                                       environment),
                                      cpus=environment.cpus)
            if database.open_read_only():
                try:
                    state, done = database.resume(key)
                    if not o.filtered:
                        stored = database.stored_rows()
                finally:
                    database.close()
            else:
                notify(Notice(f"the database {path} is in use; the plan assumes nothing is "
                              "stored there"))
    state, done = _resumable(state, done, notify)
    plan = describe_plan(request, credentials, used, resumable=state, done=len(done),
                         stored=stored)
    return ProfileResult(notes=notes, plan=plan)


def _export(request: ProfileRequest, credentials: Credentials, sink: Sink,
            result: ProfileResult, notify: ProfileProgress, guard: InterruptGuard,
            setup: RunSetup) -> None:
    """Fetch every page of one session into ``sink``, then have it write them out."""
    from mpexport.mixpanel.engage import SessionExpired
    from mpexport.profile_export.pool import PagePool

    key = request.fingerprint(credentials)
    state, done = _resumable(*sink.resume(key), notify)
    if getattr(sink, "other_session", False):  # only a database keeps several
        notify(Notice("the database held an unfinished export of other profiles into this "
                      "table; it is dropped"))
    if state is not None:
        age = time.time() - state.started
        notify(Notice(f"resuming the session opened {_ago(age)} ago: {len(done)} of "
                      f"{state.pages} pages already stored"))
        result.pages_resumed = result.pages_stored = len(done)
    o = request.options
    limiter = new_limiter(request.endpoint.base_url, credentials, setup.environment,
                          qps=o.qps_limit, hourly=o.hourly_limit, workers=o.workers,
                          persist=setup.share_hour)
    pool = PagePool(request.query(credentials), spool_dir=sink.spool_dir,
                    workers=o.workers, settings=request.settings,
                    gate=limiter, guard=guard, progress=_counting(notify, result))

    def stored(spooled: SpooledPage) -> None:
        page = spooled.fetched.page
        sink.store(spooled.number, spooled.path, page.count)
        done.add(spooled.number)
        result.pages_stored = len(done)
        result.pages_fetched += 1
        result.profiles_received += page.count
        notify(PageDone(spooled.number, page.count, page.bytes, spooled.fetched.attempts))

    while True:
        try:
            if state is None:
                state = _open_session(pool, sink, key, stored, result)
                if state is None:
                    return  # page 0 failed after its retries
            result.pages_total, result.total = state.pages, state.total
            notify(PagesPlanned(state.pages, len(done), state.total))
            result.failed = pool.run(state.missing(done), state.session_id, stored)
        except SessionExpired:
            result.session_restarts += 1
            if result.session_restarts > MAX_SESSION_RESTARTS:
                raise UnavailableError(
                    f"Mixpanel's session expired {result.session_restarts} times before the "
                    "export was whole",
                    "export fewer profiles at once (--where, --cohort), or raise "
                    "--hourly-limit if your plan allows more queries",
                ) from None
            notify(Notice(SESSION_EXPIRED))
            sink.discard()
            state, done = None, set()
            result.pages_resumed = result.pages_stored = 0
            continue
        break
    if result.failed:
        return  # the pages stay stored: a rerun fetches only what is missing
    from mpexport.profile_export.duckdb import DuckDBProfiles

    result.profiles = sink.finish(state)
    result.duplicates = sink.load.duplicates if isinstance(sink, DuckDBProfiles) else (
        sink.duplicates)
    if result.profiles + result.duplicates != state.total:
        notify(Notice(f"Mixpanel's first page said {state.total} profiles, the pages held "
                      f"{result.profiles + result.duplicates}"))
    if isinstance(sink, DuckDBProfiles):
        result.load = sink.load


def _resumable(state: SessionState | None, done: set[int],
               notify: ProfileProgress) -> tuple[SessionState | None, set[int]]:
    """``state`` and its pages, unless the session is too old to resume (then none).

    The stored pages are dropped when the new session begins (``sink.begin``).
    """
    if state is None or not state.too_old(time.time()):
        return state, done
    notify(Notice(f"the stored session is {_ago(time.time() - state.started)} old, too old "
                  "to resume; the export starts again from page 0"))
    return None, set()


def _open_session(pool: PagePool, sink: Sink, key: str,
                  stored: Callable[[SpooledPage], None],
                  result: ProfileResult) -> SessionState | None:
    """Fetch page 0, which opens a session; record the session, then store the page."""
    opened: list[SessionState] = []

    def first(spooled: SpooledPage) -> None:
        page = spooled.fetched.page
        state = session_from_page0(page.session_id, page.total, page.page_size, page.count,
                                   key)
        sink.begin(state)
        opened.append(state)
        stored(spooled)

    result.failed = pool.run([0], None, first)
    return opened[0] if opened else None


def _counting(notify: ProfileProgress, result: ProfileResult) -> ProfileProgress:
    """``notify``, counting bytes and retries into ``result`` on the way."""
    from mpexport.events import BytesReceived
    from mpexport.profile_export.model import PageRetry

    def counted(event: object) -> None:
        if isinstance(event, BytesReceived):
            result.bytes += event.count
        elif isinstance(event, PageRetry):
            result.retries += 1
        notify(event)  # type: ignore[arg-type]

    return counted


def _ago(seconds: float) -> str:
    from mpexport.dates import format_duration

    return format_duration(max(0.0, math.floor(seconds)))
