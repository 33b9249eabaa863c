"""The DuckDB loader thread, and the main thread's waits for it.

One thread opens the database, then loads queued chunks one at a time from
a bounded queue, so a slow disk pushes back on the downloads instead of
piling spool files up. What opening and loading mean is the sink's
(:mod:`mpexport.sinks.duckdb.sink`); this module owns the thread, the queue,
the stop request and the handing over of errors.

Every wait of the main thread is cut into slices: on Windows an untimed
``Event.wait()`` or ``Thread.join()`` cannot be interrupted, so a Ctrl-C's
handler (which records a stop, or exits on the second Ctrl-C) would only
run once the wait ended.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from mpexport.errors import LoaderError
from mpexport.model import CompletedChunk

POLL_SECONDS = 0.1


class Stopped(Exception):
    """Raised inside the loader when abort() asked it to stop."""


class _Gone(Exception):
    """The loader thread ended while the main thread waited to queue something."""


class _Call:
    """Work for the loader thread that is not a chunk; ``done`` is set once it ran."""

    def __init__(self, work: Callable[[Any], None]) -> None:
        self.work = work
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, con: Any) -> None:
        try:
            self.work(con)
        except Exception as exc:  # handed to the waiting caller, not the loader
            self.error = exc
        finally:
            self.done.set()

    def discard(self) -> None:
        """Nothing on disk to delete (as a dropped chunk's spool file)."""


class LoaderThread:
    """The loader thread of one sink.

    ``open_connection`` runs first on the thread and returns the connection;
    ``load(con, chunk)`` then runs for each queued chunk; ``closed`` runs on
    the thread after the connection was closed. ``check_stop`` is called
    between the main thread's wait slices and raises to stop the run.
    """

    def __init__(
        self,
        *,
        open_connection: Callable[[], Any],
        load: Callable[[Any, CompletedChunk], None],
        closed: Callable[[], None],
        check_stop: Callable[[], None],
        queue_size: int,
    ) -> None:
        self._open_connection = open_connection
        self._load = load
        self._closed = closed
        self._check_stop_request = check_stop
        self._queue: queue.Queue[CompletedChunk | _Call | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._con: Any = None
        self._finished = False
        self.thread = threading.Thread(target=self._run, name="mpexport-loader", daemon=True)

    # ----------------------------------------------------------- main thread

    def start(self) -> None:
        """Start the thread and wait until the database is open; raise what opening raised.

        The thread has ended when this raises.
        """
        self.thread.start()
        try:
            self._wait(self._ready.wait)
        except BaseException:
            # A stop while the database opens, which cannot be cut: the
            # thread closes it once open, and is waited for, before the stop
            # goes on (the caller releases the file's lock next).
            self.abort()
            raise
        if self._error is not None:
            error, self._error = self._error, None
            self._wait(self._joined, check_stop=False)
            raise error

    def put(self, completed: CompletedChunk) -> None:
        """Queue a chunk; blocks while the queue is full (backpressure)."""
        self.raise_pending()
        if self._finished:
            completed.discard()
            raise RuntimeError("DuckDBSink.accept() after close() or abort()")
        try:
            self._put(completed)
        except _Gone:
            completed.discard()
            self.raise_pending()
            raise LoaderError("the DuckDB loader stopped unexpectedly") from None
        except BaseException:
            completed.discard()
            raise

    def call(self, work: Callable[[Any], None]) -> None:
        """Run ``work(con)`` on the loader thread after what is queued; wait for it; re-raise.

        For the few writes that are not a chunk (a sync's range), so that the
        connection keeps its one writer.
        """
        self.raise_pending()
        if self._finished:
            raise RuntimeError("LoaderThread.call() after close() or abort()")
        item = _Call(work)
        try:
            self._put(item)
            self._wait(lambda timeout: item.done.wait(timeout) or not self.thread.is_alive())
        except _Gone:
            pass
        if not item.done.is_set():
            self.raise_pending()
            raise LoaderError("the DuckDB loader stopped unexpectedly")
        if item.error is not None:
            raise item.error

    def close(self) -> None:
        """Load everything queued, end the thread; re-raise its error."""
        if self._finished:
            self.raise_pending()
            return
        try:
            with contextlib.suppress(_Gone):
                self._put(None)
            self._wait(self._joined)
        except BaseException:
            # A stop while waiting for the last chunks: stop without a partial chunk.
            self.abort()
            raise
        self._finished = True
        self._drop_queued()
        self.raise_pending()

    def abort(self) -> None:
        """Stop fast: interrupt the statement running, delete queued spool files, end the thread."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        self._drop_queued()
        con = self._con
        if con is not None:
            with contextlib.suppress(Exception):
                con.interrupt()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake a loader waiting on an empty queue
        # Joined, not left behind: the caller releases the file's lock next,
        # and a library caller may open the same file again at once. An
        # interrupted statement returns within milliseconds; a COMMIT already
        # writing is not cut (a second Ctrl-C still exits at once: its
        # handler runs between the slices).
        self._wait(self._joined, check_stop=False)
        self._drop_queued()

    def raise_pending(self) -> None:
        """Raise the error the thread ended with, once."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _wait(self, done: Callable[[float], bool], check_stop: bool = True) -> None:
        """Wait until ``done(timeout)`` is true, in slices, looking for a stop in between."""
        while not done(POLL_SECONDS):
            if check_stop:
                # Stop signals only record a request: a long wait looks for it.
                self._check_stop_request()

    def _joined(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _put(self, item: CompletedChunk | _Call | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise _Gone() from None
                self._check_stop_request()

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.discard()

    # ---------------------------------------------------------- loader thread

    @property
    def stopping(self) -> bool:
        """True once abort() asked the thread to stop."""
        return self._stop.is_set()

    def check_stopping(self) -> None:
        """Raise :class:`Stopped` once abort() asked the thread to stop."""
        if self._stop.is_set():
            raise Stopped()

    def _run(self) -> None:
        try:
            con = self._open_connection()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._con = con
        self._ready.set()
        try:
            self._loop(con)
        except Stopped:
            pass
        except BaseException as exc:
            if not self._stop.is_set():
                self._error = exc
        finally:
            self._con = None
            with contextlib.suppress(Exception):
                con.close()
            self._drop_queued()
            self._closed()

    def _loop(self, con: Any) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Call):
                item.run(con)
                continue
            try:
                self.check_stopping()
                self._load(con, item)
            finally:
                item.discard()
