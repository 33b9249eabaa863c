"""One writer per database file: a lock file beside it that names its holder.

DuckDB locks its file too, but its message names no run and a second
process would only learn of it after planning. ``FILE.lock`` is taken before
the database is opened and records who holds it (pid, start time, command),
so a second run can say exactly what it is waiting for.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from mpexport.errors import DatabaseLockedError
from mpexport.filelock import try_lock, unlock

POLL_SECONDS = 0.2


def lock_path(db_path: Path) -> Path:
    """The lock file of a database file."""
    return db_path.with_name(db_path.name + ".lock")


def _holder_text(handle: IO[bytes]) -> str:
    handle.seek(0)
    raw = handle.read(4096)
    try:
        info = json.loads(raw)
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}"
                f" ({info['command']})")
    except (ValueError, KeyError, TypeError):
        return "another mpexport run"


def _write_holder(handle: IO[bytes]) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["mpexport", *sys.argv[1:2]]),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(info).encode())
    handle.flush()


@contextmanager
def database_lock(
    db_path: Path, wait_seconds: float = 0.0, check_stop: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the database's lock for the block; raise :class:`DatabaseLockedError` if taken.

    With ``wait_seconds`` > 0, wait that long for the holder to finish first,
    calling ``check_stop`` (which raises to end the wait, e.g. a run's
    :meth:`~mpexport.interrupt.InterruptGuard.raise_if_requested`) at every poll.
    """
    path = lock_path(db_path)
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the whole block
    try:
        deadline = time.monotonic() + wait_seconds
        while not try_lock(handle):
            if time.monotonic() >= deadline:
                hint = ("wait for it to finish, or pass --wait-lock SECONDS"
                        if wait_seconds <= 0 else "it is still running; try again later")
                raise DatabaseLockedError(
                    f"the database {db_path} is in use by {_holder_text(handle)}", hint
                )
            # Stop signals only record a request, so a long wait must look for it.
            if check_stop is not None:
                check_stop()
            time.sleep(POLL_SECONDS)
        try:
            _write_holder(handle)
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            unlock(handle)
    finally:
        handle.close()
