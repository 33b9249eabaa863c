"""One writer per database file: a lock file beside it that names its holder.

DuckDB locks its file too, but its message names no run and a second
process would only learn of it after planning. ``FILE.lock`` is taken before
the database is opened and records who holds it (pid, start time, command),
so a second run can say exactly what it is waiting for. Once it is taken,
the database file itself is checked for other programs (a DuckDB shell, a
BI tool): ``--wait-lock`` waits for them too, and nothing of this run opens
the database before both are free.

The lock file is removed when the run ends, so a run leaves nothing behind.
Removing a lock file is only safe with the check that goes with it: a run
waiting on the old file would otherwise get its lock once the holder ends
and write beside a run that created a new file at the same name. So the
holder removes the file while it still holds the lock (POSIX), and a run
that gets a lock checks that the file it locked is still the one at the
path, and otherwise starts again on the new one: whoever holds the lock of
the file at the path is the one writer. On Windows no file that another
process has open can be deleted (Python opens files without delete
sharing), so the holder closes first and the removal fails, leaving the file
in place, whenever another run has it open.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from mpexport.environment import LIBRARY_COMMAND
from mpexport.errors import AccessDeniedError, DatabaseLockedError, UsageError
from mpexport.filelock import (
    DENIED,
    process_name,
    record_lock_holder,
    try_lock,
    unlock,
    writer_refused,
)

POLL_SECONDS = 0.2
# Which removal protocol runs is the platform's, as filelock's try_lock is chosen.
_WINDOWS = sys.platform == "win32"
# Another reader's probe holds a free lock for microseconds, a writer for its
# whole run: a lock still taken after a few tries is a writer's.
_PROBES = 3
_PROBE_PAUSE_SECONDS = 0.05
# Looked up at call time, so tests drive the waits with a fake clock.
_now = time.monotonic
_sleep = time.sleep


def lock_path(db_path: Path) -> Path:
    """The lock file of a database file."""
    return db_path.with_name(db_path.name + ".lock")


# DuckDB's words for a file another process holds: its POSIX lock error, and
# on Windows the Restart Manager's list of holders ("File is already open in
# ..."). Its other Windows message, "Cannot open file ...: " and the system's
# text in the system's language, is the same for a file held elsewhere
# ("...being used by another process") and a read-only one ("Access is
# denied"): it is told apart by probing the file (filelock.why_refused), and
# a denied file is checked first (filelock.writer_refused), since the Restart
# Manager also lists a reader of a read-only file. (From DuckDB's source,
# src/common/local_file_system.cpp, as read; not checked against every
# release on Windows here: the probe is what decides.)
HELD_WORDS = ("could not set lock", "conflicting lock", "already open in")


def open_elsewhere_error(db_path: Path, waited: bool = False, *,
                        wait_option: bool = True) -> DatabaseLockedError:
    """The error for a database file that another program (not an mpexport run) has open.

    The program is named by its pid where the system says (Linux). Call it
    only while this process has no DuckDB connection to the file (the probe
    opens and closes it). ``wait_option``: the command has ``--wait-lock``.
    """
    if waited:
        hint = "it is still open; close it there and try again"
    elif wait_option:
        hint = "close it there (a DuckDB shell, a BI tool), or pass --wait-lock SECONDS"
    else:
        hint = "close it there (a DuckDB shell, a BI tool) and try again"
    pid = record_lock_holder(db_path)
    name = process_name(pid) if pid is not None else None
    holder = "" if pid is None else f": pid {pid}" + (f" ({name})" if name else "")
    return DatabaseLockedError(f"the database {db_path} is open in another program{holder}",
                               hint)


def written_by(db_path: Path, holder: str, *, wait_option: bool = True,
               waited: bool = False) -> DatabaseLockedError:
    """The error for a database file an mpexport run holds (``holder``: its lock file's words)."""
    if waited:
        hint = "it is still running; try again later"
    elif wait_option:
        hint = "wait for it to finish, or pass --wait-lock SECONDS"
    else:
        hint = "wait for it to finish, then try again"
    return DatabaseLockedError(f"the database {db_path} is in use by {holder}", hint)


def in_use_error(db_path: Path, *, wait_option: bool = True) -> DatabaseLockedError:
    """The error for a database file DuckDB could not open because it is held, by whoever holds it.

    An mpexport run is named as its lock file says, as a second run's
    :func:`database_lock` names it; any other program by its pid where known.
    Call it only without this run's lock or a DuckDB connection to the file.
    """
    holder = writer_holding(db_path)
    if holder is not None:
        return written_by(db_path, holder, wait_option=wait_option)
    return open_elsewhere_error(db_path, wait_option=wait_option)


def writer_holding(db_path: Path) -> str | None:
    """Who holds the file's lock (an mpexport run writing it), or None when nobody does.

    Never creates the lock file: a file no run is writing has none (a run
    removes it as it ends).
    """
    try:
        handle = lock_path(db_path).open("rb")
    except OSError:
        return None  # no lock file, or one we cannot read: DuckDB's open decides
    with handle:
        for attempt in range(_PROBES):
            if try_lock(handle):
                unlock(handle)
                return None
            if attempt + 1 < _PROBES:
                time.sleep(_PROBE_PAUSE_SECONDS)
        return holder_text(handle)


def holder_text(handle: IO[bytes]) -> str:
    handle.seek(0)
    raw = handle.read(4096)
    try:
        info = json.loads(raw)
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}"
                f" ({info['command']})")
    except (ValueError, KeyError, TypeError):
        return "another mpexport run"


def _write_holder(handle: IO[bytes], command: str) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(info).encode())
    handle.flush()


@contextmanager
def database_lock(
    db_path: Path, wait_seconds: float = 0.0, check_stop: Callable[[], None] | None = None,
    *, command: str = LIBRARY_COMMAND,
) -> Iterator[None]:
    """Hold the database's lock for the block; raise :class:`DatabaseLockedError` if taken.

    ``command`` is what the lock file says holds it, for another run's
    message: the run's :attr:`~mpexport.environment.Environment.command_name`.

    The lock is held only once no other program has the database file open
    either. With ``wait_seconds`` > 0, wait that long for both, calling
    ``check_stop`` (which raises to end the wait, e.g. a run's
    :meth:`~mpexport.interrupt.InterruptGuard.raise_if_requested`) at every poll.
    """
    deadline = _now() + wait_seconds

    def wait_or_raise(error: Callable[[], DatabaseLockedError]) -> None:
        if _now() >= deadline:
            raise error()
        # Stop signals only record a request, so a long wait must look for it.
        if check_stop is not None:
            check_stop()
        _sleep(POLL_SECONDS)

    def taken(handle: IO[bytes]) -> DatabaseLockedError:
        return written_by(db_path, holder_text(handle), waited=wait_seconds > 0)

    path = lock_path(db_path)
    handle = _open_lock_file(path)
    try:
        while True:
            while not try_lock(handle):
                wait_or_raise(functools.partial(taken, handle))
            if _still_at(handle, path):
                break
            # The run before us removed this file as it ended: the lock that
            # counts is the one of the file at the path now (see the module
            # docstring). Not a wait: that file is tried at once.
            unlock(handle)
            handle.close()
            handle = _open_lock_file(path)
        try:
            _write_holder(handle, command)
            # On Windows DuckDB's read-write open shares nothing, so a file
            # another program has open would fail our open (and even a read
            # of its header) with a sharing violation; on POSIX it fails on
            # DuckDB's lock. Both are waited for here, under our lock. A
            # read-only file or a permission is no holder: no wait helps, and
            # it is bad usage (exit 2), not "locked" (exit 4).
            while (refused := writer_refused(db_path)) is not None:
                if refused == DENIED:
                    raise AccessDeniedError(db_path)
                wait_or_raise(lambda: open_elsewhere_error(db_path, waited=wait_seconds > 0))
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            if not _WINDOWS:
                # Still held: a run waiting on this file finds it gone and
                # takes the new one's lock (see the module docstring).
                _remove(path)
            unlock(handle)
    finally:
        handle.close()
        if _WINDOWS:
            # Fails while another run has the file open: it is then theirs.
            _remove(path)


def _open_lock_file(path: Path) -> IO[bytes]:
    """Open (creating if missing) the lock file; a folder we cannot write is bad usage."""
    try:
        return open(path, "a+b")  # held for the run: closed by database_lock
    except OSError as error:
        raise UsageError(f"cannot open the lock file {path}: {error.strerror or error}",
                         "check the folder's permissions, or remove a lock file another "
                         "user left") from None


def _still_at(handle: IO[bytes], path: Path) -> bool:
    """True when the locked ``handle`` is the file at ``path`` (not one removed since)."""
    if _WINDOWS:
        return True  # an open file cannot be removed there
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _remove(path: Path) -> None:
    """Remove the lock file; one that cannot be removed (in use, permissions) stays."""
    with suppress(OSError):
        path.unlink()
