"""The worker pool: fetch chunks in parallel, hand verified ones to a sink.

Workers are daemon threads, each with its own ``requests.Session``. They talk
to the main thread through one queue of messages; the main thread alone
touches the sink and the progress callback, so neither needs locking. Daemon
threads let an interrupted run leave at once instead of waiting for slow
downloads to finish.
"""

from __future__ import annotations

import queue
import random
import shutil
import tempfile
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
from mpexport.fetch import (
    ChunkSplit,
    FetchSettings,
    Query,
    RequestGate,
    Stopped,
    fetch_chunk,
    new_session,
)
from mpexport.model import Chunk, ChunkFailure, CompletedChunk, ExportResult
from mpexport.plan import split_chunk
from mpexport.sinks import Sink

if TYPE_CHECKING:
    import requests

    from mpexport.interrupt import InterruptGuard


@dataclass(frozen=True)
class _WorkerCrashed:
    error: BaseException


_Message = ProgressEvent | _WorkerCrashed


SPOOL_QUEUE = 4


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
        self.guard = guard
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

    def run(self) -> ExportResult:
        """Fetch every chunk the sink still needs; return what happened.

        Raises the first fatal error (bad parameters, credentials) after
        stopping the workers; on any exit the spool directory is removed.
        """
        started = time.monotonic()
        result = ExportResult(chunks_total=len(self.chunks))
        todo = [c for c in self.chunks if not self.sink.already_done(c)]
        result.skipped = [c for c in self.chunks if c not in set(todo)]
        self.progress(PlanReady(tuple(self.chunks), tuple(result.skipped)))
        spool_dir = Path(tempfile.mkdtemp(prefix="mpexport-spool-", dir=self.spool_parent))
        try:
            self._run_workers(todo, spool_dir, result)
            # Before the spool directory goes: the sink may still hold files in it.
            self.sink.close()
        except BaseException as exc:
            self.stop.set()
            self.sink.abort()
            if isinstance(exc, Interrupted):
                result.interrupted = True
                result.seconds = time.monotonic() - started
                exc.result = result
            raise
        finally:
            self.stop.set()
            shutil.rmtree(spool_dir, ignore_errors=True)
            result.seconds = time.monotonic() - started
        return result

    def _run_workers(self, todo: list[Chunk], spool_dir: Path, result: ExportResult) -> None:
        for chunk in todo:
            self._work.put(chunk)
        self._work_done.set()
        if todo:
            # Imported once here: ten workers importing requests at the same
            # moment queue on the import lock before their first request.
            import requests  # noqa: F401

        count = max(1, min(self.workers, len(todo)))
        for number in range(count if todo else 0):
            threading.Thread(
                target=self._worker, args=(spool_dir,), name=f"mpexport-worker-{number}",
                daemon=True,
            ).start()
        outstanding = len(todo)
        while outstanding:
            try:
                # A timeout, so that signal handlers run promptly on this thread.
                message = self._messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(message, _WorkerCrashed):
                raise message.error
            if isinstance(message, ChunkDone):
                self._hand_over(message.completed)
                result.completed.append(message.completed)
                result.events += message.completed.lines
                result.bytes += message.completed.bytes
                outstanding -= 1
            elif isinstance(message, ChunkFailed):
                self.sink.chunk_failed(message.failure.chunk)
                if self.guard is not None:
                    self.guard.raise_if_requested()
                result.failed.append(message.failure)
                outstanding -= 1
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
        # A stop that came while a sink wrote (and so could not interrupt
        # it mid-line) takes effect now.
        if self.guard is not None:
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
        session = new_session()
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
