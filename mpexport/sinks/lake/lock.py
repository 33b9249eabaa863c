"""One writer per lake: ``_mpexport/lock.json``, a lease its holder keeps renewing.

A lake has no process to ask, and an object store no file lock, so the lock
is an object created with a conditional write: S3, GCS and Azure refuse a
create-if-absent PUT when the object exists, a folder refuses a hard link
onto an existing name. Whoever creates it holds the lake; it names the
holder (host, pid, mpexport command: never argv, never a secret) for the
message another run prints, and is deleted when the run ends, also on
errors and Ctrl-C.

A holder that died (SIGKILL, a power cut, a second Ctrl-C) cannot delete
it, so the lock is a lease: it says until when it holds, and a thread of
the holder pushes that time forward every quarter of the lease. A lock
whose lease has run out may be taken over with a conditional overwrite
against the version that was read, so of two runs taking over at once only
one wins. Renewals are conditional on the holder's own last version too:
a holder that was paused past its lease (a laptop's sleep) finds the lock
taken and stops writing instead of writing over the new holder.

The lease is judged by the wall clocks of the hosts involved, which NTP
keeps far closer than the lease. A dead pid on the same host is not taken
as proof of death: containers sharing a folder can share a host name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from mpexport.environment import LIBRARY_COMMAND
from mpexport.errors import DatabaseLockedError, LoaderError, MpexportError, UsageError
from mpexport.sinks.lake.store import FileInUse, Store, Versioned
from mpexport.version import __version__

LOCK_KEY = "_mpexport/lock.json"
LEASE_VARIABLE = "MPEXPORT_LAKE_LEASE_SECONDS"
# Long enough that a run that cannot reach its store for half a minute keeps
# the lake; short enough that a killed run blocks the next one for a minute.
LEASE_SECONDS = 60.0
# Renewals per lease: three may fail in a row before the lease runs out.
RENEWALS_PER_LEASE = 4
# Each poll costs a request or two to the store: slower than --db's 0.2 s.
POLL_SECONDS = 0.5
# Looked up at call time, so tests drive the waits with fakes.
_now = time.monotonic
_sleep = time.sleep


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


log = logging.getLogger("mpexport.lake")


def lease_seconds(environ: Mapping[str, str]) -> float:
    """The lease of a run's lock: ``$MPEXPORT_LAKE_LEASE_SECONDS`` of ``environ``, else 60 s."""
    text = environ.get(LEASE_VARIABLE)
    if not text:
        return LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UsageError(f"{LEASE_VARIABLE} must be a number of seconds above 0, not {text!r}")
    return value


def _stamp(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Holder:
    """Who holds a lake's lock, as its lock object says, and until when."""

    text: str  # for messages: "pid 12 on host, started ... (mpexport export)"
    expires: dt.datetime
    token: str | None = None  # the holding run's random id; None: unreadable

    @classmethod
    def read(cls, found: Versioned, lease: float) -> Holder:
        """The holder of a stored lock object."""
        try:
            info = json.loads(found.data)
            return cls(f"pid {info['pid']} on {info['host']}, started {info['started']}"
                       f" ({info['command']})",
                       dt.datetime.fromisoformat(info["expires"].replace("Z", "+00:00")),
                       str(info["token"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            # Torn or foreign: held, until a lease after it was last written.
            written = found.modified or _wall()
            return cls("another mpexport run (its lock object is unreadable)",
                       written + dt.timedelta(seconds=lease))

    def expired(self) -> bool:
        """True once the holder's lease has run out."""
        return _wall() >= self.expires


class LakeLock:
    """The lock of the lake in ``store``: :meth:`acquire`, then :meth:`release`.

    While held, a daemon thread renews the lease; :meth:`check` raises once
    the lock is lost, so that nothing more is written to the lake.
    """

    def __init__(self, store: Store, *, lease: float = LEASE_SECONDS,
                 command: str = LIBRARY_COMMAND) -> None:
        """The lock of ``store``'s lake, held for ``lease`` seconds per renewal.

        ``command`` is what the lock object says holds it (the run's
        :attr:`~mpexport.environment.Environment.command_name`).
        """
        self.store = store
        self.lease = lease
        self.command = command
        self.token = secrets.token_hex(16)
        self.taken_over: Holder | None = None  # the dead holder this run took the lock from
        self._started = _wall()
        self._renewals = 0
        self._version: str | None = None
        self._expires = self._started
        self._confirmed = _now()  # monotonic time of the last write of the lease
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- the record

    def _record(self) -> tuple[bytes, dt.datetime]:
        """The lock's content and its lease's end: from now (the renewals make it unique)."""
        now = _wall()
        self._renewals += 1
        expires = now + dt.timedelta(seconds=self.lease)
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "started": _stamp(self._started),
            "renewed": _stamp(now),
            "expires": _stamp(expires),
            "lease_seconds": self.lease,
            "renewals": self._renewals,
            "token": self.token,
            "written_by": f"mpexport {__version__}",
        }
        return (json.dumps(info, indent=1) + "\n").encode(), expires

    def _mine(self, found: Versioned | None) -> bool:
        return found is not None and Holder.read(found, self.lease).token == self.token

    # ------------------------------------------------------------- acquiring

    def try_acquire(self) -> Holder | None:
        """Take the lock if it is free or its lease ran out: None, else who holds it."""
        with self._mutex:
            started = _now()
            record, expires = self._record()
            version = self.store.create_bytes(LOCK_KEY, record)
            found = None if version is not None else self.store.get_versioned(LOCK_KEY)
            if version is None and found is None:
                # Released between the two requests: it is free now.
                version = self.store.create_bytes(LOCK_KEY, record)
                found = None if version is not None else self.store.get_versioned(LOCK_KEY)
            if found is not None:
                if self._mine(found):  # a retry of our own create found it made
                    version = found.version
                else:
                    holder = Holder.read(found, self.lease)
                    if not holder.expired():
                        return holder
                    version = self.store.replace_bytes_if(LOCK_KEY, record, found.version)
                    if version is None:  # another run took it over first, or it was renewed
                        return holder
                    self.taken_over = holder
            if version is None:  # created and released twice meanwhile: a busy lake
                return Holder("another run (the lock changed hands meanwhile)", _wall())
            self._version, self._expires = version, expires
            self._confirmed, self._lost = started, None
        if self.taken_over is not None:
            log.warning("warning: took over the lake's lock from %s, whose lease ran out at %s "
                        "(that run ended without releasing it)", self.taken_over.text,
                        _stamp(self.taken_over.expires))
        self._thread = threading.Thread(target=self._keep, name="mpexport-lake-lock",
                                        daemon=True)
        self._thread.start()
        return None

    def acquire(self, wait_seconds: float = 0.0,
                check_stop: Callable[[], None] | None = None) -> None:
        """Take the lock; raise :class:`DatabaseLockedError` naming its holder if it is held.

        With ``wait_seconds`` > 0, wait that long for it, calling
        ``check_stop`` (which raises to end the wait) at every poll.
        """
        deadline = _now() + wait_seconds
        announced = False
        while True:
            try:
                holder = self.try_acquire()
            except FileInUse as exc:  # Windows: another run is reading the lock file
                holder = Holder(f"another program ({exc})", _wall())
            if holder is None:
                return
            if _now() >= deadline:
                hint = ("it is still running; try again later" if wait_seconds > 0 else
                        "wait for it to finish, or pass --wait-lock SECONDS")
                raise DatabaseLockedError(
                    f"the lake {self.store.url} is in use by {holder.text}; its lease runs "
                    f"to {_stamp(holder.expires)}", hint)
            if not announced:
                log.info("waiting for the lake's lock, held by %s", holder.text)
                announced = True
            # Stop signals only record a request, so a long wait must look for it.
            if check_stop is not None:
                check_stop()
            _sleep(POLL_SECONDS)

    # -------------------------------------------------------------- renewing

    def _keep(self) -> None:
        """The renewal thread: push the lease forward until released or lost."""
        interval = self.lease / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Push the lease forward once; False once the lock is lost (and stays lost)."""
        with self._mutex:
            if self._lost is not None or self._version is None:
                return False
            started = _now()
            record, expires = self._record()
            try:
                version = self.store.replace_bytes_if(LOCK_KEY, record, self._version)
                if version is None:
                    found = self.store.get_versioned(LOCK_KEY)
                    if not self._mine(found):
                        self._lost = ("another run took it over: " +
                                      (Holder.read(found, self.lease).text if found
                                       else "it was deleted"))
                        return False
                    assert found is not None  # a retried write of ours went through
                    version = found.version
            except (OSError, MpexportError, FileInUse) as exc:
                # A store that does not answer (or, on Windows, a lock file
                # another program has open): try again at the next renewal;
                # check() refuses writes once the lease may have run out.
                log.debug("renewing the lake's lock failed: %s", exc)
                return True
            self._version, self._expires, self._confirmed = version, expires, started
            return True

    def check(self) -> None:
        """Raise :class:`LoaderError` if the lock is lost: the lake is no longer ours to write."""
        # No mutex: a renewal may be waiting on a slow store, and the writer
        # must not wait for it; the attributes are read whole.
        lost = self._lost
        if lost is None and (_wall() >= self._expires
                             or _now() - self._confirmed >= self.lease):
            lost = f"its lease could not be renewed for {self.lease:g} seconds"
        if lost is not None:
            raise LoaderError(f"this run lost the lock of the lake {self.store.url}: {lost}",
                              "what it wrote before is in the lake; rerun the same command "
                              "to write the rest")

    # ------------------------------------------------------------- releasing

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (errors only logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:
            version, self._version = self._version, None
            if version is None or self._lost is not None:
                return
            if _wall() >= self._expires:
                # Past its lease another run may hold it now: deleting could
                # remove that run's lock between our read and our delete.
                log.warning("warning: the lake's lock lease ran out before this run released "
                            "it; left for the next run to take over")
                return
            try:
                if not self.store.delete_if(LOCK_KEY, version):
                    log.warning("warning: the lake's lock was taken over before this run "
                                "released it")
            except Exception as exc:  # never turn a finished run into a failure
                # Left in place, it blocks the next run until its lease runs out.
                log.warning("warning: could not release the lake's lock (%s); the next run "
                            "waits until its lease runs out, at most %g seconds", exc,
                            self.lease)


@contextmanager
def lake_lock(store: Store, wait_seconds: float = 0.0,
              check_stop: Callable[[], None] | None = None,
              on_error: Callable[[OSError], BaseException] | None = None, *,
              lease: float = LEASE_SECONDS,
              command: str = LIBRARY_COMMAND) -> Iterator[LakeLock]:
    """Hold the lake's lock for the block; raise :class:`DatabaseLockedError` if another holds it.

    ``on_error`` turns a store's failure while taking the lock (the run's
    first request: a missing bucket, wrong credentials) into the error to raise.
    ``lease`` and ``command`` are :class:`LakeLock`'s.
    """
    held = LakeLock(store, lease=lease, command=command)
    try:
        held.acquire(wait_seconds, check_stop)
    except OSError as exc:
        held.release()
        if on_error is None:
            raise
        raise on_error(exc) from None
    except BaseException:
        held.release()  # a stop in the middle may have taken it already
        raise
    try:
        yield held
    finally:
        held.release()


__all__ = ["LEASE_SECONDS", "LEASE_VARIABLE", "LOCK_KEY", "Holder", "LakeLock", "lake_lock",
           "lease_seconds"]
