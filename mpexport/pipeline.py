"""The worker pool: fetch chunks in parallel, hand verified ones to a sink.

Workers are threads, each with its own ``requests.Session``. They talk to
the main thread through one queue of messages; the main thread alone touches
the sink and the progress callback, so neither needs locking.

A run owns its threads: on every way out (success, failure, a stop request,
an exception from a callback) the main thread sets the stop flag, cuts the
workers' connections so that reads blocked on a slow server return at once
(:mod:`mpexport.mixpanel.http_cut`), joins the workers and only then removes the
spool directory. A library caller that runs export after export in one
process is left with no thread and no file of an earlier run.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mpexport.errors import Interrupted
from mpexport.events import (
    BytesReceived,
    ChunkDone,
    ChunkFailed,
    ChunkRetry,
    ChunkSplitInTwo,
    PlanReady,
    ProgressCallback,
    ProgressEvent,
)
from mpexport.interrupt import InterruptGuard, join_in_slices
from mpexport.mixpanel.fetch import ChunkSplit, FetchSettings, Query, fetch_chunk
from mpexport.mixpanel.transport import RequestGate, Stopped, new_session
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, ExportResult
from mpexport.plan import split_chunk
from mpexport.sinks.base import Sink
from mpexport.spool import spool_folder

if TYPE_CHECKING:
    import requests

    from mpexport.mixpanel.http_cut import ConnectionCutter

log = logging.getLogger("mpexport")


@dataclass(frozen=True)
class _WorkerCrashed:
    error: BaseException


_Message = ProgressEvent | _WorkerCrashed


SPOOL_QUEUE = 4
# How often the main thread looks for a stop request while it waits for workers.
POLL_SECONDS = 0.2
# After the cut, the only waits a worker cannot leave at once are a connection
# being set up (bounded by the connect timeout) and a spool write; this much
# on top of the connect timeout bounds how long a stopping run waits for them.
JOIN_MARGIN_SECONDS = 5.0


def _ignore(_event: ProgressEvent) -> None:
    return None


def _release_after(count: int, release: Callable[[], None]) -> Callable[[], None]:
    """A callback that calls ``release`` on its ``count``-th call (one slot, many parts)."""
    remaining = [count]
    lock = threading.Lock()

    def part_released() -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            release()

    return part_released


class Pipeline:
    """One run of the pool over a plan of chunks into a sink."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        query: Query,
        sink: Sink,
        *,
        workers: int,
        settings: FetchSettings | None = None,
        progress: ProgressCallback | None = None,
        spool_dir: Path | None = None,
        guard: InterruptGuard | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        self.chunks = list(chunks)
        # Every run polls a guard of its own: the caller's (signals, a cancel
        # event) or a fresh one that nothing sets.
        self.guard = guard if guard is not None else InterruptGuard()
        self.gate = gate
        self.query = query
        self.sink = sink
        self.workers = workers
        self.settings = settings or FetchSettings()
        self.progress = progress or _ignore
        self.spool_parent = spool_dir
        self.stop = threading.Event()
        self._messages: queue.Queue[_Message] = queue.Queue()
        self._work: queue.Queue[Chunk] = queue.Queue()
        self._work_done = threading.Event()  # the queue holds every chunk there will be
        # Spool files on disk at once: one per worker downloading, plus a few
        # finished chunks waiting for the sink (stdout waits for the chunk
        # before them; DuckDB for the loader). Bounds the spool's disk use.
        self._slots = threading.BoundedSemaphore(max(1, workers) + SPOOL_QUEUE)
        self._threads: list[threading.Thread] = []
        self._cutter: ConnectionCutter | None = None

    def run(self) -> ExportResult:
        """Fetch every chunk the sink still needs; return what happened.

        Raises the first fatal error (bad parameters, credentials), or
        :class:`Interrupted` (with the result so far) when the guard reports
        a stop request. On every way out the workers are stopped and joined
        before the spool directory is removed.
        """
        started = time.monotonic()
        result = ExportResult(chunks_total=len(self.chunks))
        try:
            self.guard.raise_if_requested()  # a stop that came before the run
            todo = [c for c in self.chunks if not self.sink.already_done(c)]
            result.skipped = [c for c in self.chunks if c not in set(todo)]
            self.progress(PlanReady(tuple(self.chunks), tuple(result.skipped)))
        except BaseException as exc:
            self.sink.abort()
            self._mark_interrupted(exc, result, started)
            raise
        with spool_folder(self.spool_parent) as spool_dir:
            try:
                self._run_workers(todo, spool_dir, result)
                # Before the spool folder goes: the sink may still hold files in it.
                self.sink.close()
            except BaseException as exc:
                # Workers are cut first so that they wind down while the sink aborts.
                self._signal_workers()
                self.sink.abort()
                self._mark_interrupted(exc, result, started)
                raise
            finally:
                # Joined before the folder goes: Windows cannot delete open files.
                self._stop_workers()
                result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _mark_interrupted(exc: BaseException, result: ExportResult, started: float) -> None:
        if isinstance(exc, Interrupted):
            result.interrupted = True
            result.seconds = time.monotonic() - started
            exc.result = result

    def _signal_workers(self) -> None:
        """Ask the workers to stop and end their blocked reads; does not wait."""
        self.stop.set()
        if self._cutter is not None:
            self._cutter.cut()

    def _stop_workers(self) -> None:
        """Stop and join the workers, then delete what they left in the message queue."""
        self._signal_workers()
        deadline = time.monotonic() + self.settings.connect_timeout + JOIN_MARGIN_SECONDS
        join_in_slices(self._threads, deadline)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            # Only a connection still being set up can hold a worker this long
            # (DNS has no timeout). It writes no spool file once stopped.
            log.warning("workers still connecting after the run stopped: %s", ", ".join(alive))
        self._threads = [t for t in self._threads if t.is_alive()]
        while True:
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, ChunkDone):
                message.completed.discard()

    def _run_workers(self, todo: list[Chunk], spool_dir: Path, result: ExportResult) -> None:
        for chunk in todo:
            self._work.put(chunk)
        self._work_done.set()
        if todo:
            # Imported once here: ten workers importing requests at the same
            # moment queue on the import lock before their first request.
            from mpexport.mixpanel.http_cut import ConnectionCutter

            self._cutter = ConnectionCutter()

        count = max(1, min(self.workers, len(todo)))
        for number in range(count if todo else 0):
            # Daemon only as a last resort (a worker still connecting when the
            # join bound runs out must not keep the interpreter alive).
            thread = threading.Thread(
                target=self._worker, args=(spool_dir,), name=f"mpexport-worker-{number}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        outstanding = len(todo)
        while outstanding:
            # Signals only record a stop request: this poll is where it takes effect.
            self.guard.raise_if_requested()
            try:
                message = self._messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(message, _WorkerCrashed):
                raise message.error
            if isinstance(message, ChunkDone):
                result.completed.append(message.completed)
                result.events += message.completed.lines
                result.bytes += message.completed.bytes
                outstanding -= 1
                self._hand_over(message.completed)
            elif isinstance(message, ChunkFailed):
                result.failed.append(message.failure)
                outstanding -= 1
                self.sink.chunk_failed(message.failure.chunk)
                # Skipping a failed chunk can let stdout write the ones after it.
                self.guard.raise_if_requested()
            elif isinstance(message, ChunkSplitInTwo):
                outstanding += 1
                result.chunks_total += 1
            self.progress(message)
        result.completed.sort(key=lambda c: c.chunk.from_date)
        result.failed.sort(key=lambda f: f.chunk.from_date)

    def notify(self, event: ProgressEvent) -> None:
        """Report an event from any thread; the main thread passes it to ``progress``."""
        self._messages.put(event)

    def _hand_over(self, completed: CompletedChunk) -> None:
        self.sink.accept(completed)
        # A stop that came while a sink wrote (which polls it only between
        # whole lines) takes effect now.
        self.guard.raise_if_requested()

    def _fetch_parts(
        self,
        chunk: Chunk,
        session: requests.Session,
        spool_dir: Path,
        rng: random.Random,
        on_bytes: Callable[[int], None],
        on_retry: Callable[[Chunk, int, str, float], None],
    ) -> list[CompletedChunk | ChunkFailure] | None:
        """Fetch a chunk, halving it as often as it asks; None if the run stopped."""
        pending = [chunk]
        parts: list[CompletedChunk | ChunkFailure] = []
        while pending:
            part = pending.pop(0)
            outcome = fetch_chunk(
                session, self.query, part, spool_dir, self.settings, self.stop,
                on_bytes, on_retry, rng, self.gate,
            )
            if isinstance(outcome, ChunkSplit):
                halves = split_chunk(outcome.chunk)
                self._messages.put(ChunkSplitInTwo(outcome.chunk, halves, outcome.reason))
                pending[:0] = halves
                continue
            parts.append(outcome)
            if self.stop.is_set():
                for done in parts:
                    if isinstance(done, CompletedChunk):
                        done.path.unlink(missing_ok=True)
                return None
        return parts

    def _take_slot(self) -> bool:
        """Wait for room in the spool; False if the run stops first."""
        while not self.stop.is_set():
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def _worker(self, spool_dir: Path) -> None:
        session = new_session(self._cutter)
        rng = random.Random()
        post = self._messages.put

        def on_bytes(count: int) -> None:
            post(BytesReceived(count))

        def on_retry(chunk: Chunk, attempt: int, reason: str, delay: float) -> None:
            post(ChunkRetry(chunk, attempt, reason, delay))

        try:
            # The slot is taken before a chunk is: chunks leave the queue in
            # date order, so every chunk before one that holds a slot holds
            # one too, and stdout's in-order writing can always progress.
            while self._take_slot():
                try:
                    chunk = self._work.get(timeout=0.2)
                except queue.Empty:
                    self._slots.release()
                    if self._work_done.is_set():
                        return
                    continue
                # A chunk that is split is fetched here, half after half, under
                # its one slot; its parts are handed over together at the end,
                # so they never wait for a slot behind later chunks.
                parts = self._fetch_parts(chunk, session, spool_dir, rng, on_bytes, on_retry)
                if parts is None:
                    return
                done = [p for p in parts if isinstance(p, CompletedChunk)]
                release = _release_after(len(done), self._slots.release)
                if not done:
                    self._slots.release()
                for part in parts:
                    if isinstance(part, CompletedChunk):
                        part.release = release
                        post(ChunkDone(part))
                    else:
                        post(ChunkFailed(part))
        except Stopped:
            return
        except BaseException as exc:  # a fatal API error or a bug: the run must stop
            post(_WorkerCrashed(exc))
        finally:
            session.close()
