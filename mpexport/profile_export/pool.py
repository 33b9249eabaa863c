"""The page workers: fetch pages of one session in parallel, spool each verified page.

The pool (:mod:`mpexport.workers`) owns the threads, their sessions and how
they stop; every request start passes the shared limiter. A unit of work is
a page: a worker writes the verified page to a temp file in the spool
folder and tells the main thread; the main thread alone hands pages to the
sink (which renames or loads them) and reports progress, so workers never
know where profiles go.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpexport.errors import UnavailableError
from mpexport.interrupt import InterruptGuard
from mpexport.mixpanel.engage import (
    FetchedPage,
    PageFailure,
    ProfileQuery,
    fetch_page,
)
from mpexport.mixpanel.transport import FetchSettings
from mpexport.profile_export.model import PageFailed, PageRetry, ProfileEvent
from mpexport.workers import PacedGate, UnitQueue, Worker, WorkerPool


@dataclass(frozen=True)
class SpooledPage:
    """A verified page in a spool file (one profile per line, as sent)."""

    number: int
    path: Path
    fetched: FetchedPage


_Message = ProfileEvent | SpooledPage


def _discard(message: _Message) -> None:
    """A page that arrived after the end: its file goes."""
    if isinstance(message, SpooledPage):
        message.path.unlink(missing_ok=True)


def spool_page(fetched: FetchedPage, directory: Path) -> Path:
    """Write a verified page's profile lines to a new temp file in ``directory``."""
    fd, name = tempfile.mkstemp(prefix=f".page-{fetched.page.page:06d}-", suffix=".tmp",
                                dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            spool.writelines(fetched.page.profiles)
            spool.flush()
            # Kept pages outlive the run (a rerun resumes from them): on disk before
            # the sink renames the file into place.
            os.fsync(spool.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


class PagePool:
    """Fetches pages of one session (or page 0, which opens one) on a few threads."""

    def __init__(
        self,
        query: ProfileQuery,
        *,
        spool_dir: Path,
        workers: int,
        settings: FetchSettings,
        gate: PacedGate | None,
        guard: InterruptGuard,
        progress: Callable[[ProfileEvent], None],
    ) -> None:
        self.query = query
        self.spool_dir = spool_dir
        self.workers = workers
        self.settings = settings
        self.gate = gate
        self.guard = guard
        self.progress = progress

    def run(self, pages: Sequence[int], session_id: str | None,
            on_page: Callable[[SpooledPage], None]) -> list[PageFailure]:
        """Fetch ``pages`` of ``session_id``; call ``on_page`` on this thread for each.

        Returns the pages that failed after their retries. Raises a fatal
        error (and :class:`~mpexport.mixpanel.engage.SessionExpired`) as soon
        as a worker meets it, and :class:`~mpexport.errors.Interrupted` on a
        stop request. Every worker has ended when this returns or raises.
        """
        failures: list[PageFailure] = []

        def handle(message: _Message) -> int:
            """Take a worker's report; return the change in pages awaited."""
            if isinstance(message, SpooledPage):
                on_page(message)
                return -1
            awaited = 0
            if isinstance(message, PageFailed):
                failures.append(message.failure)
                awaited = -1
            self.progress(message)
            return awaited

        pool: WorkerPool[int, _Message] = WorkerPool(
            functools.partial(self._fetch, session_id), name="mpexport-page-worker",
            workers=self.workers, guard=self.guard,
            connect_timeout=self.settings.connect_timeout, ca_file=self.settings.ca_file,
            retry=PageRetry, discard=_discard,
            gate=self.gate)
        try:
            pool.run(UnitQueue(pages), handle)
        finally:
            pool.close()
        return sorted(failures, key=lambda f: f.page)

    def _fetch(self, session_id: str | None, worker: Worker[int, _Message], page: int) -> None:
        """One unit of work, on a worker: fetch a page, spool it, report it."""
        outcome = fetch_page(worker.session, self.query, page, session_id, self.settings,
                             worker.stop, worker.on_bytes, worker.on_retry, worker.rng,
                             worker.gate)
        if isinstance(outcome, PageFailure):
            worker.post(PageFailed(outcome))
            return
        try:
            path = spool_page(outcome, self.spool_dir)
        except OSError as exc:
            raise UnavailableError(
                f"could not write page {page} to {self.spool_dir}: "
                f"{exc.strerror or exc}", "free some disk space and run again",
            ) from None
        if worker.stop.is_set():
            path.unlink(missing_ok=True)
            return
        worker.post(SpooledPage(page, path, outcome))
