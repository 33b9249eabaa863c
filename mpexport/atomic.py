"""Replacing a file so that readers see the old one or the new one, never a part.

Every file mpexport rewrites in place (the config, the hourly state, the
summary JSON, a Parquet day) goes through :func:`replacing`: the new content
is written to a temp file with a random name beside the target (same
filesystem, so ``os.replace`` is atomic; a random name, so two runs never
write the same temp file), then moved over the target.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A fresh temp name beside ``path``; it does not end like ``path`` (globs skip it)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def in_place(path: Path) -> bool:
    """True when ``path`` is a device or a pipe (``/dev/null``, ``/dev/stderr``, a FIFO).

    Those are written to, never replaced: replacing ``/dev/null`` with a
    regular file (as root) would break every program on the machine.
    """
    try:
        mode = os.stat(path).st_mode  # through symlinks: /dev/stderr is one
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; when the block succeeds, it replaces ``path``.

    On any failure the temp file is removed and ``path`` is untouched. A
    symlink is followed (the file it names is replaced, the link stays); a
    device or pipe is yielded itself, to be written in place (:func:`in_place`).
    """
    if in_place(path):
        yield path
        return
    target = Path(os.path.realpath(path))
    temp = temp_sibling(target)
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o666,
                     durable: bool = False) -> None:
    """Replace ``path`` with ``data``.

    ``mode`` applies from creation (``O_EXCL``), so a private file (0600) is
    never readable by others, not even while it is written. ``durable``
    fsyncs the data before the move (the config; the hourly state can afford
    to lose its last entries, the server's 429 then covers them).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with replacing(path) as temp:
        if temp == path:  # a device or pipe: written in place
            flags = os.O_WRONLY | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
