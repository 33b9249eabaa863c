"""How every run starts, events or profiles: checked options, credentials, pacing, the lock.

Both runners (:mod:`mpexport.runner` and :mod:`mpexport.profile_export.runner`)
are given the same :class:`RunSetup`, validate their options before anything
else, resolve the credentials and region the same way, retry as the options
say, pace their requests with one limiter that shares the hour with earlier
runs of the same API and project, and write a DuckDB file only under its
lock. What differs (the request, the sinks) they pass in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from mpexport.config.resolve import credentials_for_run
from mpexport.events import Notice
from mpexport.interrupt import InterruptGuard

if TYPE_CHECKING:
    from mpexport.environment import Environment
    from mpexport.mixpanel.credentials import Credentials
    from mpexport.mixpanel.transport import FetchSettings
    from mpexport.options import FetchOptions
    from mpexport.pacing.limiter import HourlyState, RateLimiter

R = TypeVar("R")


@dataclass(frozen=True)
class RunSetup:
    """How a run is carried out, beside what it exports: what every runner is given.

    ``environment`` is what the run takes from its process, built by the
    front: the variables (credentials, ``SSL_CERT_FILE``, tuning), the stdout,
    the state folder, the command name lock files quote, the clocks.
    ``credentials`` default to those the environment's variables or the
    options' ``profile`` name. NDJSON goes to ``output``, else the options'
    ``output``, else the environment's stdout. ``guard`` is the run's stop
    request (the CLI's signal handling; by default a fresh one).
    ``settings`` tunes fetching (timeouts, backoff); ``spool_dir`` is where
    fetched data waits (the temp dir by default); ``share_hour`` counts
    queries against the hour earlier runs on this machine used, per API and
    project, in the environment's state folder.
    """

    environment: Environment
    credentials: Credentials | None = None
    output: BinaryIO | None = None
    guard: InterruptGuard | None = None
    settings: FetchSettings | None = None
    spool_dir: Path | None = None
    share_hour: bool = True

    def stop_request(self) -> InterruptGuard:
        """The run's stop request: ``guard``, or a fresh one of its own."""
        return self.guard if self.guard is not None else InterruptGuard()


def ignore(_event: object) -> None:
    """The progress callback of a run nobody watches."""
    return None


def resolve(
    options: FetchOptions,
    build: Callable[[str | None, FetchSettings], R],
    setup: RunSetup,
) -> tuple[R, Credentials | None, list[str]]:
    """The run's request (``build`` for the resolved region), credentials and warnings.

    ``build`` is given the region and ``setup``'s settings, verifying with
    the environment's ``SSL_CERT_FILE`` unless they name a CA file. It runs
    once before the credentials are looked up: bad input is reported before
    missing credentials, as it is the first thing to fix.
    """
    from mpexport.mixpanel.transport import with_ca_file

    environ = setup.environment.environ
    settings = with_ca_file(setup.settings, environ)
    build(None, settings)
    credentials, region, warnings = credentials_for_run(
        setup.credentials, environ, profile=options.profile, project_id=options.project_id,
        region=options.region, dry_run=options.dry_run)
    return build(region, settings), credentials, warnings


def fetch_settings(options: FetchOptions, settings: FetchSettings | None) -> FetchSettings:
    """``settings`` (or the defaults) with the run's retry budget."""
    import dataclasses

    from mpexport.mixpanel.transport import FetchSettings

    return dataclasses.replace(settings or FetchSettings(), max_attempts=options.retries + 1)


def tell(notify: Callable[[Notice], None], notes: Iterable[str]) -> None:
    """Pass each note to the run's progress callback."""
    for note in notes:
        notify(Notice(note))


def hour_used(base_url: str, credentials: Credentials | None,
              environment: Environment) -> list[float]:
    """The request starts of the last hour recorded for this API and project (for a dry run).

    Read from ``environment``'s state folder, as of its wall clock.
    """
    return _hour(base_url, credentials, environment).load(environment.wall())


def new_limiter(base_url: str, credentials: Credentials | None, environment: Environment, *,
                qps: float, hourly: int, workers: int, persist: bool = True) -> RateLimiter:
    """The run's limiter, on ``environment``'s clocks.

    With ``persist`` it shares the hour of this API and project with earlier
    runs, through the environment's state folder.
    """
    from mpexport.options import MAX_WORKERS
    from mpexport.pacing.limiter import RateLimiter, SystemClock

    state = _hour(base_url, credentials, environment) if persist else None
    return RateLimiter(qps=qps, hourly=hourly, concurrency=min(workers, MAX_WORKERS),
                       state=state, clock=SystemClock(environment.monotonic, environment.wall))


def _hour(base_url: str, credentials: Credentials | None,
          environment: Environment) -> HourlyState:
    """The hour this API and project share, kept in ``environment``'s state folder."""
    from mpexport.pacing.limiter import HourlyState

    project = credentials.project_id if credentials is not None else None
    return HourlyState.for_project(base_url, project, environment.state_dir)


def stop_check(guard: InterruptGuard | None) -> Callable[[], None] | None:
    """What raises the stop ``guard`` was asked for (None without a guard)."""
    return guard.raise_if_requested if guard is not None else None


@contextmanager
def database_locked(path: Path, wait_lock: float, guard: InterruptGuard | None,
                    command: str) -> Iterator[None]:
    """Hold the DuckDB file's lock: one writer per file, whatever it writes.

    Another run's lock raises :class:`~mpexport.errors.DatabaseLockedError`
    after ``wait_lock`` seconds; a stop request of ``guard`` ends the wait.
    The lock file names ``command`` (the environment's command name) as its
    holder, for another run's message.
    """
    from mpexport.sinks.duckdb.lock import database_lock
    from mpexport.sinks.duckdb.schema import check_db_path

    check_db_path(path)  # a clear message before a lock file is created
    with database_lock(path, wait_lock, stop_check(guard), command=command):
        yield
