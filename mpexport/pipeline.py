"""The events pipeline: fetch a plan's chunks on the worker pool, hand verified ones to a sink.

The pool (:mod:`mpexport.workers`) owns the threads, their sessions and how
they stop. This module says what a unit of work is (a chunk, halved as often
as it asks, fetched under one spool slot) and what the main thread does with
each report: count it, hand a chunk to the sink, pass the event on to the
progress callback.

On every way out (success, failure, a stop request, an exception from a
callback) the workers are stopped and joined before the spool directory is
removed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mpexport.errors import Interrupted
from mpexport.events import (
    ChunkDone,
    ChunkFailed,
    ChunkRetry,
    ChunkSplitInTwo,
    PlanReady,
    ProgressCallback,
    ProgressEvent,
)
from mpexport.interrupt import InterruptGuard
from mpexport.mixpanel.fetch import ChunkSplit, Query, fetch_chunk
from mpexport.mixpanel.transport import FetchSettings
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, ExportResult
from mpexport.plan import split_chunk
from mpexport.sinks.base import Sink
from mpexport.spool import spool_folder
from mpexport.workers import POLL_SECONDS, PacedGate, UnitQueue, Worker, WorkerPool

SPOOL_QUEUE = 4


def _ignore(_event: ProgressEvent) -> None:
    return None


def _discard(message: ProgressEvent) -> None:
    """A chunk that arrived after the end: its spool file goes."""
    if isinstance(message, ChunkDone):
        message.completed.discard()


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


class _SpoolSlots(UnitQueue[Chunk]):
    """The chunks to fetch, each leaving the queue only with a spool slot."""

    def __init__(self, chunks: Sequence[Chunk], slots: threading.BoundedSemaphore) -> None:
        super().__init__(chunks)
        self.slots = slots

    def take(self, stop: threading.Event) -> Chunk | None:
        # The slot is taken before a chunk is: chunks leave the queue in
        # date order, so every chunk before one that holds a slot holds
        # one too, and stdout's in-order writing can always progress.
        while not self.slots.acquire(timeout=POLL_SECONDS):
            if stop.is_set():
                return None
        chunk = super().take(stop)
        if chunk is None:
            self.slots.release()
        return chunk


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
        gate: PacedGate | None = None,
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
        # Spool files on disk at once: one per worker downloading, plus a few
        # finished chunks waiting for the sink (stdout waits for the chunk
        # before them; DuckDB for the loader). Bounds the spool's disk use.
        self._slots = threading.BoundedSemaphore(max(1, workers) + SPOOL_QUEUE)

    def run(self) -> ExportResult:
        """Fetch every chunk the sink still needs; report what was fetched.

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
            pool: WorkerPool[Chunk, ProgressEvent] = WorkerPool(
                functools.partial(self._fetch, spool_dir), name="mpexport-worker",
                workers=self.workers, guard=self.guard,
                connect_timeout=self.settings.connect_timeout,
                ca_file=self.settings.ca_file, retry=ChunkRetry,
                discard=_discard, gate=self.gate)
            try:
                pool.run(_SpoolSlots(todo, self._slots), functools.partial(self._handle, result))
                result.completed.sort(key=lambda c: c.chunk.from_date)
                result.failed.sort(key=lambda f: f.chunk.from_date)
                # Before the spool folder goes: the sink may still hold files in it.
                self.sink.close()
            except BaseException as exc:
                # Workers are cut first so that they wind down while the sink aborts.
                pool.signal()
                self.sink.abort()
                self._mark_interrupted(exc, result, started)
                raise
            finally:
                # Joined before the folder goes: Windows cannot delete open files.
                pool.close()
                result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _mark_interrupted(exc: BaseException, result: ExportResult, started: float) -> None:
        if isinstance(exc, Interrupted):
            result.interrupted = True
            result.seconds = time.monotonic() - started
            exc.result = result

    def _handle(self, result: ExportResult, message: ProgressEvent) -> int:
        """Take a worker's report on the main thread; return the change in chunks awaited."""
        awaited = 0
        if isinstance(message, ChunkDone):
            result.completed.append(message.completed)
            result.events += message.completed.lines
            result.bytes += message.completed.bytes
            awaited = -1
            self.sink.accept(message.completed)
            # A stop that came while a sink wrote (which polls it only between
            # whole lines) takes effect now.
            self.guard.raise_if_requested()
        elif isinstance(message, ChunkFailed):
            result.failed.append(message.failure)
            awaited = -1
            self.sink.chunk_failed(message.failure.chunk)
            # Skipping a failed chunk can let stdout write the ones after it.
            self.guard.raise_if_requested()
        elif isinstance(message, ChunkSplitInTwo):
            awaited = 1
            result.chunks_total += 1
        self.progress(message)
        return awaited

    def _fetch(self, spool_dir: Path, worker: Worker[Chunk, ProgressEvent], chunk: Chunk) -> None:
        """One unit of work, on a worker: a chunk, under the spool slot it was taken with."""
        # A chunk that is split is fetched here, half after half, under its
        # one slot; its parts are handed over together at the end, so they
        # never wait for a slot behind later chunks.
        parts = self._fetch_parts(chunk, worker, spool_dir)
        if parts is None:
            return
        done = [p for p in parts if isinstance(p, CompletedChunk)]
        release = _release_after(len(done), self._slots.release)
        if not done:
            self._slots.release()
        for part in parts:
            if isinstance(part, CompletedChunk):
                part.release = release
                worker.post(ChunkDone(part))
            else:
                worker.post(ChunkFailed(part))

    def _fetch_parts(self, chunk: Chunk, worker: Worker[Chunk, ProgressEvent],
                     spool_dir: Path) -> list[CompletedChunk | ChunkFailure] | None:
        """Fetch a chunk, halving it as often as it asks; None if the run stopped."""
        pending = [chunk]
        parts: list[CompletedChunk | ChunkFailure] = []
        while pending:
            part = pending.pop(0)
            outcome = fetch_chunk(
                worker.session, self.query, part, spool_dir, self.settings, worker.stop,
                worker.on_bytes, worker.on_retry, worker.rng, worker.gate,
            )
            if isinstance(outcome, ChunkSplit):
                halves = split_chunk(outcome.chunk)
                worker.post(ChunkSplitInTwo(outcome.chunk, halves, outcome.reason))
                pending[:0] = halves
                continue
            parts.append(outcome)
            if worker.stop.is_set():
                for done in parts:
                    if isinstance(done, CompletedChunk):
                        done.path.unlink(missing_ok=True)
                return None
        return parts
