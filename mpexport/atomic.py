"""Replacing a file so that readers see the old one or the new one, never a part.

Every file mpexport rewrites in place (the config, the hourly state, the
summary JSON, ``--output``, a Parquet day) goes through this module: the new
content is written to a temp file with a random name beside the target (same
filesystem, so ``os.replace`` is atomic; a random name, so two runs never
write the same temp file), then moved over the target.

Three things every such write shares live here too:

- **A file someone else holds.** On Windows antivirus, the search indexer,
  OneDrive or Excel keep a file open for moments, and a replace then fails.
  :func:`patiently` retries it with a short backoff (a few seconds in all),
  but only while the file is *held*: a read-only file or a permission
  (:func:`mpexport.filelock.why_refused`) fails at once, no wait helps.
- **A link planted in a shared folder.** A symlink is followed (the file it
  names is replaced), except one that another user owns in a world-writable
  sticky folder such as ``/tmp``: that would let them redirect the write
  (:func:`refuse_planted_link`).
- **Temp files a killed run left.** A temp file's name carries its writer's
  process id and machine; :func:`sweep_stale_temps` removes those whose
  writer is gone, never one a live run is writing.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from mpexport.errors import UsageError
from mpexport.filelock import held_by_another_process

T = TypeVar("T")

# Pauses between attempts at replacing a file another program holds: a scan
# or a preview lets go within a second or two; 3.15 s in all, so a file that
# stays open (a spreadsheet) still fails soon, with its own message.
BACKOFF_SECONDS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
# A temp file of another machine (a shared folder) or of an older version
# (no process id in its name) is only swept once nobody touched it for this long.
FOREIGN_STALE_SECONDS = 7 * 24 * 3600.0
# More links than this in a chain is a loop (the kernel's own limit is 40).
_MAX_LINKS = 40

# Read at call time: tests put a fake in its place, so no test really waits.
_pause: Callable[[float], None] = time.sleep


def _host_tag() -> str:
    """Six hex digits naming this machine: a pid only means something on its own machine."""
    name = socket.gethostname().encode("utf-8", "replace")
    return hashlib.sha256(name).hexdigest()[:6]


def temp_sibling(path: Path) -> Path:
    """A fresh temp name beside ``path``; it does not end like ``path`` (globs skip it).

    ``.NAME.<pid>-<machine>-<random>.tmp``: the pid and machine say whose it
    is, so a later run can tell a killed run's leftover from a live run's
    file (:func:`sweep_stale_temps`).
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{_host_tag()}-{secrets.token_hex(6)}.tmp")


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


def refuse_planted_link(path: Path) -> None:
    """Raise :class:`UsageError` if writing ``path`` would follow a link another user planted.

    In a world-writable sticky folder (``/tmp``) anyone can create a name,
    but only its owner may remove it: a symlink there owned by another user
    (not this one, not root, not the folder's owner) could send the write to
    any file this user may write. Linux refuses to follow such a link when
    opening (``fs.protected_symlinks``), but resolving it first, as a replace
    must, bypasses that; so it is checked here, for each link of a chain. A
    link of one's own, or anywhere else, is followed as before. POSIX only:
    Windows has no sticky folders, and creating a link there takes a privilege.
    """
    if sys.platform == "win32":  # the form mypy understands: no geteuid there
        return
    current = path
    for _ in range(_MAX_LINKS):
        try:
            link = os.lstat(current)
        except OSError:
            return  # no such file (yet): the write creates it
        if not stat.S_ISLNK(link.st_mode):
            return
        folder = current.parent
        try:
            shared = os.stat(folder)
        except OSError:
            return
        sticky_and_open = (shared.st_mode & stat.S_ISVTX) and (shared.st_mode & stat.S_IWOTH)
        if sticky_and_open and link.st_uid not in (os.geteuid(), 0, shared.st_uid):
            raise UsageError(
                f"refusing to write {path}: {current} is a symbolic link owned by another "
                f"user (uid {link.st_uid}) in the shared folder {folder}",
                "someone else could redirect the write through it: remove the link or "
                "choose a path in a folder of your own")
        current = folder / os.readlink(current)
    # A loop: the open that follows reports it.


def patiently(action: Callable[[], T], path: Path, *,
              sleep: Callable[[float], None] | None = None,
              backoff: tuple[float, ...] | None = None) -> T:
    """Run ``action`` (a replace or delete of ``path``), retrying while another program holds it.

    One attempt, then one more after each pause of ``backoff``
    (:data:`BACKOFF_SECONDS`); the last failure is raised as it was. An
    error that is not "held" (:func:`mpexport.filelock.held_by_another_process`:
    read-only, permissions, a missing folder) is raised at once: no wait helps.
    """
    pause = sleep if sleep is not None else _pause
    for wait in BACKOFF_SECONDS if backoff is None else backoff:
        try:
            return action()
        except OSError as exc:
            if not held_by_another_process(exc, path):
                raise
        pause(wait)
    return action()


def replace_patiently(source: Path, target: Path, *,
                      sleep: Callable[[float], None] | None = None) -> None:
    """``os.replace(source, target)``, retried while another program holds either file."""
    patiently(lambda: os.replace(source, target), target, sleep=sleep)


def target_of(path: Path) -> Path:
    """The file a replace of ``path`` writes: ``path`` through its links, planted ones refused."""
    refuse_planted_link(path)
    return Path(os.path.realpath(path))


@contextmanager
def replacing(path: Path, *, sleep: Callable[[float], None] | None = None) -> Iterator[Path]:
    """Yield a temp path to write; when the block succeeds, it replaces ``path``.

    On any failure the temp file is removed and ``path`` is untouched. A
    symlink is followed (the file it names is replaced, the link stays;
    :func:`refuse_planted_link`); a device or pipe is yielded itself, to be
    written in place (:func:`in_place`). The replace is retried while another
    program holds the file (:func:`patiently`); stale temp files of killed
    runs beside it are removed first (:func:`sweep_stale_temps`).
    """
    refuse_planted_link(path)
    if in_place(path):
        yield path
        return
    target = Path(os.path.realpath(path))
    sweep_stale_temps(target)
    temp = temp_sibling(target)
    try:
        yield temp
        replace_patiently(temp, target, sleep=sleep)
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


# ------------------------------------------------------------------ stale temp files

_OURS = re.compile(r"(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{12}")
_OLDER = re.compile(r"[0-9a-f]{16}")  # before the names carried their writer


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI
    _STILL_ACTIVE = 259
    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    _ERROR_INVALID_PARAMETER = 87  # OpenProcess's answer for a pid nobody has

    def process_alive(pid: int) -> bool:
        """True unless process ``pid`` surely does not run on this machine.

        Not ``os.kill(pid, 0)``: on Windows that terminates the process.
        """
        import _winapi

        try:
            handle = _winapi.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        except OSError as exc:
            # Access denied: it exists, as another user's process.
            return getattr(exc, "winerror", None) != _ERROR_INVALID_PARAMETER
        try:
            return bool(_winapi.GetExitCodeProcess(handle) == _STILL_ACTIVE)
        finally:
            _winapi.CloseHandle(handle)

else:

    def process_alive(pid: int) -> bool:
        """True unless process ``pid`` surely does not run on this machine."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # another user's process (EPERM): it runs
        return True


def _stale(name: str, mtime: float, now: float, alive: Callable[[int], bool]) -> bool:
    """Whether the temp file ``name`` (the part between the target's name and ``.tmp``) is stale."""
    ours = _OURS.fullmatch(name)
    if ours is not None and ours["host"] == _host_tag():
        pid = int(ours["pid"])
        # Our own pid: this process may be writing it right now.
        return pid != os.getpid() and not alive(pid)
    if ours is not None or _OLDER.fullmatch(name):
        # Another machine's pid cannot be asked about: only long silence says it is gone.
        return now - mtime >= FOREIGN_STALE_SECONDS
    return False  # not a name of ours


def sweep_stale_temps(target: Path, *, now: float | None = None,
                      alive: Callable[[int], bool] = process_alive) -> list[Path]:
    """Remove the temp files beside ``target`` that a killed run left; return them.

    A run killed before its replace (a console closed, a logoff, a power
    cut) leaves ``.NAME.<pid>-<machine>-<random>.tmp``. One is stale when its
    writer was on this machine and its process is gone; one from another
    machine (a shared folder) or from an older version only after
    :data:`FOREIGN_STALE_SECONDS` untouched. A live run's file is never
    removed: its process runs (and on Windows its open file cannot be deleted
    anyway). Errors are ignored: sweeping is tidying, never the run's failure.
    """
    prefix = f".{target.name}."
    moment = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(target.parent if str(target.parent) else "."))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        with suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            if _stale(name[len(prefix):-len(".tmp")], info.st_mtime, moment, alive):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
