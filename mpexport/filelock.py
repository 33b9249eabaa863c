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

# What a refused open, replace or delete means (see why_refused).
HELD = "held"  # another program has the file open: waiting can help
DENIED = "denied"  # this user may not: read-only, or permissions
OTHER = "other"

# The probe's CreateFileW arguments (winnt.h, fileapi.h): read and write
# access, sharing reading and writing, as the C runtime's "r+b" open asks.
_GENERIC_READ_WRITE = 0x80000000 | 0x40000000
_FILE_SHARE_READ_WRITE = 0x1 | 0x2
_OPEN_EXISTING = 3

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

    def _win32_open_error(path: Path) -> int | None:
        """The Win32 error code of opening ``path`` for reading and writing now; None if it opens.

        The same open as the C runtime's ``open(path, "r+b")``, through
        ``CreateFileW`` itself (``_winapi``, as ``subprocess`` uses), which
        keeps the code that the C runtime folds into a bare ``EACCES``.
        """
        import _winapi

        try:
            handle = _winapi.CreateFile(str(path), _GENERIC_READ_WRITE, _FILE_SHARE_READ_WRITE,
                                        0, _OPEN_EXISTING, 0, 0)
        except OSError as exc:
            code = getattr(exc, "winerror", None)
            return code if isinstance(code, int) else None
        _winapi.CloseHandle(handle)
        return None

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

    def _win32_open_error(path: Path) -> int | None:
        """No Win32 here: tests emulating Windows put the error code they need in its place."""
        return None


def why_refused(error: BaseException, path: Path | None = None) -> str:
    """Why opening, replacing or deleting ``path`` failed: HELD, DENIED or OTHER.

    Win32 calls (``os.replace``, ``os.unlink``) report a file another process
    holds as winerror 32 or 33. Two reports are ambiguous on Windows: the C
    runtime's ``open()`` turns a sharing violation and an access denied alike
    into a bare ``EACCES`` (no winerror), and replacing a file that is open
    without delete sharing fails with ``ERROR_ACCESS_DENIED`` (5), as
    replacing a read-only one does. For those the file is opened again
    through Win32 (``CreateFileW``), whose own code says which: 5 is a
    read-only file or a permission (no wait helps); anything else, even an
    open that now works, keeps the old answer, "held" (retried, or waited for).
    On POSIX no open file stops another open: a ``PermissionError`` there is
    always a permission problem.

    Verified on Linux only through emulation (tests patch the error codes);
    the Windows workflow runs a real read-only file (tests/test_windows_only.py).
    """
    if not isinstance(error, PermissionError):
        return OTHER
    winerror = getattr(error, "winerror", None)
    if winerror in _IN_USE_WINERRORS:
        return HELD
    if not WINDOWS:
        return DENIED
    if winerror not in (None, _ERROR_ACCESS_DENIED):
        return OTHER
    probed = path if path is not None else error.filename
    if probed is None:
        return HELD
    return DENIED if _win32_open_error(Path(probed)) == _ERROR_ACCESS_DENIED else HELD


def held_by_another_process(error: BaseException, path: Path | None = None) -> bool:
    """True when ``error`` means another process has ``path`` open (Windows' share modes).

    ``path`` is the file the failed call was about (``error.filename`` if
    not given; for ``os.replace``, pass the target). See :func:`why_refused`.
    """
    return why_refused(error, path) == HELD


def writer_refused(path: Path) -> str | None:
    """Whether a writer's open of ``path`` would be refused now, and why: HELD, DENIED or None.

    HELD: another program has it open so that a writer's open fails (share
    modes on Windows, DuckDB's ``fcntl`` lock on POSIX); waiting can help.
    DENIED: this user may not write it (read-only, permissions); no wait
    helps. None: a missing file, one that opens, or another error, which
    the open that follows reports with its own message. On POSIX, call this
    only while this process has no DuckDB connection to ``path``: closing any
    descriptor of a file drops every ``fcntl`` lock the process holds on it.
    """
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return None
    except OSError as exc:
        refused = why_refused(exc, path)
        return None if refused == OTHER else refused
    with handle:
        return HELD if _record_locked(handle) else None


# Linux's struct flock on 64-bit machines: l_type, l_whence (shorts, padded),
# l_start, l_len (off_t), l_pid (pid_t, padded): 32 bytes. macOS orders it
# differently, so only Linux asks.
_FLOCK = "=hh4xqqi4x"


def record_lock_holder(path: Path) -> int | None:
    """The pid of another process whose ``fcntl`` lock on ``path`` a writer's lock meets, if known.

    DuckDB locks its file so (a write lock, a read lock when read-only); the
    pid names the program that holds it in a message. Linux only (``F_GETLK``):
    elsewhere, or for a holder in another pid namespace (pid 0), None. On
    POSIX, call it only while this process has no DuckDB connection to
    ``path`` (see :func:`writer_refused`).
    """
    # WINDOWS is read too: tests emulating it count every open of the file.
    if WINDOWS or not sys.platform.startswith("linux") or sys.maxsize <= 2**32:
        return None
    import fcntl
    import struct

    try:
        with path.open("rb") as handle:
            asked = struct.pack(_FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0)
            answer = fcntl.fcntl(handle.fileno(), fcntl.F_GETLK, asked)
    except OSError:
        return None
    kind, _whence, _start, _length, pid = struct.unpack(_FLOCK, answer)
    return pid if kind != fcntl.F_UNLCK and pid > 0 else None


def process_name(pid: int) -> str | None:
    """The short name of process ``pid`` (Linux's ``/proc/PID/comm``), or None."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return name or None


def in_use_elsewhere(path: Path) -> bool:
    """True when another program has ``path`` open so that a writer's open would fail now.

    See :func:`writer_refused` (a file this user may not write is not "in use").
    """
    return writer_refused(path) == HELD
