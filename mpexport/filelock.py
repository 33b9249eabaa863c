"""Advisory file locks that work on POSIX (flock) and Windows (msvcrt), and "held" probes.

On Windows a locked byte range cannot be read by others, so the lock covers
one byte far past the end of the file: the holder's details written at the
start stay readable for the message another run prints.

:func:`in_use_elsewhere` asks whether another program has a file open in a
way that would make our writer's open fail, which is how DuckDB itself
keeps a database to one writer: share modes on Windows (a read-write open
shares nothing, a read-only one shares reading), ``fcntl`` record locks on
POSIX.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import IO

# Read at call time, so a test can emulate Windows' error semantics on Linux.
WINDOWS = sys.platform == "win32"

# Where the Windows lock byte lives; files stay far smaller than this.
_WINDOWS_LOCK_OFFSET = 1 << 30
# ERROR_SHARING_VIOLATION and ERROR_LOCK_VIOLATION: another process has the
# file open without sharing it with us, or has locked a range of it.
_IN_USE_WINERRORS = frozenset({32, 33})
_ERROR_ACCESS_DENIED = 5

if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI
    import msvcrt

    def try_lock(handle: IO[bytes]) -> bool:
        """Take the exclusive lock without waiting; False if another holds it."""
        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def lock(handle: IO[bytes]) -> None:
        """Take the exclusive lock, waiting (msvcrt retries for ~10 s, then raises)."""
        handle.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)

    def unlock(handle: IO[bytes]) -> None:
        """Release the lock."""
        handle.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

    def _record_locked(handle: IO[bytes]) -> bool:
        # Windows enforces share modes at open time: the open already answered.
        return False

else:
    import fcntl

    def try_lock(handle: IO[bytes]) -> bool:
        """Take the exclusive lock without waiting; False if another holds it."""
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def lock(handle: IO[bytes]) -> None:
        """Take the exclusive lock, waiting as long as it takes."""
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    def unlock(handle: IO[bytes]) -> None:
        """Release the lock."""
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _record_locked(handle: IO[bytes]) -> bool:
        # DuckDB holds an fcntl lock on the whole file (a read lock when
        # read-only): a write lock of ours conflicts with either. Taken and
        # dropped at once; F_GETLK would avoid even that, but its struct
        # layout differs between Linux and macOS.
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            # Anything else (ENOLCK on some network filesystems) is not an
            # answer: whoever opens the file next reports the real problem.
            return exc.errno in (errno.EACCES, errno.EAGAIN)
        fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)
        return False


def held_by_another_process(error: BaseException) -> bool:
    """True when ``error`` means another process has the file open (Windows' share modes).

    Win32 calls (``os.replace``, ``os.unlink``) report a sharing or lock
    violation as winerror 32 or 33, and replacing a file that is open
    without delete sharing as ``ERROR_ACCESS_DENIED`` (5); the C runtime's
    ``open()`` reports a sharing violation as a bare ``EACCES`` without a
    winerror. On POSIX no open file stops another open, so a
    ``PermissionError`` there is a real permission problem.
    """
    if not isinstance(error, PermissionError):
        return False
    winerror = getattr(error, "winerror", None)
    if winerror in _IN_USE_WINERRORS:
        return True
    return WINDOWS and winerror in (None, _ERROR_ACCESS_DENIED)


def in_use_elsewhere(path: Path) -> bool:
    """True when another program has ``path`` open so that a writer's open would fail now.

    A missing file is not in use. Errors other than "in use" answer False:
    the open that follows reports them with its own message. On POSIX, call
    this only while this process has no DuckDB connection to ``path``:
    closing any descriptor of a file drops every ``fcntl`` lock the process
    holds on it.
    """
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return False
    except OSError as exc:
        return held_by_another_process(exc)
    with handle:
        return _record_locked(handle)
