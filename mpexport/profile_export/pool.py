"""The page workers: fetch pages of one session in parallel, spool each verified page.

Workers are threads, each with its own ``requests.Session``, every request
start passing the shared limiter. A worker writes a verified page to a temp
file in the spool folder and tells the main thread; the main thread alone
hands pages to the sink (which renames or loads them) and reports progress,
so workers never know where profiles go.

On every way out the main thread stops the workers, cuts their connections
(reads blocked on a slow server return at once) and joins them, as the
events pipeline does.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mpexport.errors import UnavailableError
from mpexport.events import BytesReceived
from mpexport.interrupt import InterruptGuard, join_in_slices
from mpexport.mixpanel.engage import (
    FetchedPage,
    PageFailure,
    ProfileQuery,
    fetch_page,
)
from mpexport.mixpanel.fetch import FetchSettings
from mpexport.mixpanel.transport import RequestGate, Stopped, new_session
from mpexport.profile_export.model import PageFailed, PageRetry, ProfileEvent

if TYPE_CHECKING:
    from mpexport.mixpanel.http_cut import ConnectionCutter

log = logging.getLogger("mpexport")

POLL_SECONDS = 0.2
JOIN_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class SpooledPage:
    """A verified page in a spool file (one profile per line, as sent)."""

    number: int
    path: Path
    fetched: FetchedPage


@dataclass(frozen=True)
class _Crashed:
    error: BaseException


_Message = ProfileEvent | SpooledPage | _Crashed


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
        gate: RequestGate | None,
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
        self._messages: queue.Queue[_Message] = queue.Queue()

    def notify(self, event: ProfileEvent) -> None:
        """Report an event from any thread; the main thread passes it on."""
        self._messages.put(event)

    def run(self, pages: Sequence[int], session_id: str | None,
            on_page: Callable[[SpooledPage], None]) -> list[PageFailure]:
        """Fetch ``pages`` of ``session_id``; call ``on_page`` on this thread for each.

        Returns the pages that failed after their retries. Raises a fatal
        error (and :class:`~mpexport.mixpanel.engage.SessionExpired`) as soon
        as a worker meets it, and :class:`~mpexport.errors.Interrupted` on a
        stop request. Every worker has ended when this returns or raises.
        """
        if not pages:
            return []
        from mpexport.mixpanel.http_cut import ConnectionCutter

        stop = threading.Event()
        cutter = ConnectionCutter()
        work: queue.Queue[int] = queue.Queue()
        for page in pages:
            work.put(page)
        threads = [
            threading.Thread(target=self._worker, args=(work, session_id, stop, cutter),
                             name=f"mpexport-page-worker-{n}", daemon=True)
            for n in range(max(1, min(self.workers, len(pages))))
        ]
        failures: list[PageFailure] = []
        try:
            for thread in threads:
                thread.start()
            outstanding = len(pages)
            while outstanding:
                self.guard.raise_if_requested()
                try:
                    message = self._messages.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if isinstance(message, _Crashed):
                    raise message.error
                if isinstance(message, SpooledPage):
                    outstanding -= 1
                    on_page(message)
                    continue
                if isinstance(message, PageFailed):
                    outstanding -= 1
                    failures.append(message.failure)
                self.progress(message)
        finally:
            self._stop(threads, stop, cutter)
        return sorted(failures, key=lambda f: f.page)

    def _stop(self, threads: list[threading.Thread], stop: threading.Event,
              cutter: ConnectionCutter) -> None:
        stop.set()
        cutter.cut()
        deadline = time.monotonic() + self.settings.connect_timeout + JOIN_MARGIN_SECONDS
        join_in_slices(threads, deadline)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("workers still connecting after the run stopped: %s", ", ".join(alive))
        while True:  # pages that arrived after the end: their files go
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, SpooledPage):
                message.path.unlink(missing_ok=True)

    def _worker(self, work: queue.Queue[int], session_id: str | None, stop: threading.Event,
                cutter: ConnectionCutter) -> None:
        session = new_session(cutter)
        rng = random.Random()
        post = self._messages.put

        def on_bytes(count: int) -> None:
            post(BytesReceived(count))

        def on_retry(page: int, attempt: int, reason: str, delay: float) -> None:
            post(PageRetry(page, attempt, reason, delay))

        try:
            while not stop.is_set():
                try:
                    page = work.get_nowait()
                except queue.Empty:
                    return
                outcome = fetch_page(session, self.query, page, session_id, self.settings,
                                     stop, on_bytes, on_retry, rng, self.gate)
                if isinstance(outcome, PageFailure):
                    post(PageFailed(outcome))
                    continue
                try:
                    path = spool_page(outcome, self.spool_dir)
                except OSError as exc:
                    raise UnavailableError(
                        f"could not write page {page} to {self.spool_dir}: "
                        f"{exc.strerror or exc}", "free some disk space and run again",
                    ) from None
                if stop.is_set():
                    path.unlink(missing_ok=True)
                    return
                post(SpooledPage(page, path, outcome))
        except Stopped:
            return
        except BaseException as exc:  # fatal API errors, an expired session, a bug
            post(_Crashed(exc))
        finally:
            session.close()
