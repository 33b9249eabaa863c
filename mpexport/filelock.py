"""Advisory file locks that work on POSIX (flock) and Windows (msvcrt).

On Windows a locked byte range cannot be read by others, so the lock covers
one byte far past the end of the file: the holder's details written at the
start stay readable for the message another run prints.
"""

from __future__ import annotations

import sys
from typing import IO

# Where the Windows lock byte lives; files stay far smaller than this.
_WINDOWS_LOCK_OFFSET = 1 << 30

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
