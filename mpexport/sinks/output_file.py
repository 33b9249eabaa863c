"""Where NDJSON goes: the caller's stream, stdout, or ``--output FILE`` written by us.

A new ``--output`` file is written beside its name (the file a symlink names)
and put in place when the run ends with whole chunks: complete, some chunks
failed, or stopped (the file then ends on the last whole chunk, and the
resume command appends the rest with ``--append``). Any other error leaves an
existing file as it was. ``--append`` adds to the file; an error undoes this
run's additions and a stop keeps only its whole chunks, so running the
printed command (or the same one again) never duplicates a line. A device
or pipe (``/dev/null``, a FIFO) is written to, never replaced.

A second signal exits at once (:mod:`mpexport.interrupt`), before any resume
command is printed: so it first puts the file back as it was before the run
(an ``--append`` file cut to its old size, a new file's temp file removed),
and the same command run again adds every line once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from mpexport import filelock
from mpexport.atomic import (
    in_place,
    refuse_planted_link,
    replace_patiently,
    sweep_stale_temps,
    target_of,
    temp_sibling,
)
from mpexport.errors import Interrupted, OutputFileError, UsageError
from mpexport.filelock import DENIED, why_refused

if TYPE_CHECKING:
    from mpexport.interrupt import InterruptGuard

log = logging.getLogger(__name__)

# Windows: a descriptor opened without it is in text mode (we only truncate,
# but say so). Zero elsewhere.
_O_BINARY: int = getattr(os, "O_BINARY", 0)


@dataclass
class Destination:
    """The stream NDJSON is written to, and whether it is a file this run may cut back."""

    stream: BinaryIO
    start: int = 0  # where this run's bytes begin
    owned: bool = False  # a regular file of ours: it can be truncated

    def keep_whole_chunks(self, whole_bytes: int) -> bool:
        """After a stop: cut the file back to the end of its last whole chunk.

        ``whole_bytes`` is what this run wrote of whole chunks. False when the
        destination cannot be cut (stdout, a pipe): it ends on a whole line.
        """
        if not self.owned:
            return False
        try:
            self.stream.flush()
            self.stream.truncate(self.start + whole_bytes)
        except OSError as error:
            raise _write_error(error) from None
        return True


def _write_error(error: OSError) -> OutputFileError:
    return OutputFileError(f"could not write the output: {error.strerror or error}",
                           "check free space and permissions, then run again")


def _open(path: Path, mode: str, shown: Path | None = None) -> BinaryIO:
    """Open ``path``; an error names ``shown`` (what the user typed), never a temp name."""
    try:
        return cast(BinaryIO, open(path, mode))
    except OSError as error:
        raise UsageError(f"cannot write --output {shown or path}: {error.strerror or error}",
                         "check the folder exists and is writable") from None


def _close_durably(stream: BinaryIO) -> None:
    """Flush, fsync and close: Windows cannot replace a file that is still open."""
    try:
        stream.flush()
        os.fsync(stream.fileno())
    except OSError as error:
        raise _write_error(error) from None
    finally:
        stream.close()


def _replace(temporary: Path, target: Path) -> OutputFileError | None:
    try:
        # Retried for a few seconds while another program (a virus scan,
        # OneDrive, a preview) holds the file.
        replace_patiently(temporary, target)
    except OSError as error:
        fix = _replace_fix(error, target)
        return OutputFileError(
            f"could not replace {target}: {error.strerror or error}",
            f"the events are in {temporary}; {fix} and rename it",
        )
    return None


def _replace_fix(error: OSError, target: Path) -> str:
    """What to do about a refused replace of ``target``, in the platform's terms."""
    refused = why_refused(error, target)
    if filelock.WINDOWS:
        # Windows refuses to replace a file another program has open, and
        # one that is read-only or not ours to write: the hint says which.
        return (f"make {target.name} writable (it may be read-only)" if refused == DENIED
                else f"close what holds {target.name}")
    if refused == DENIED:
        # POSIX: a rename needs the folder's write permission, and in a
        # sticky folder (/tmp) ownership of the file it replaces; an open
        # file never stops it.
        return (f"check that you may replace files in {target.parent} (its permissions; "
                f"in a shared folder such as /tmp, who owns {target.name})")
    return "fix the cause above"


_RERUN = "(run the same command again)"


@dataclass
class _AppendUndo:
    """A second signal's undo for ``--append``: the file back to its size before the run.

    Not to the end of the last whole chunk: that size counts bytes still in
    the buffered stream, which a signal handler cannot flush (it may have
    interrupted that very stream), and truncating a file to more than it
    holds pads it with zeros. The size before the run is on disk already, and
    it is what the same command run again expects.
    """

    shown: Path  # as the user named it
    start: int
    fd: int | None  # the run's descriptor while its stream is open; then by name

    def __call__(self) -> str:
        if self.fd is not None:
            os.ftruncate(self.fd, self.start)
        else:
            fd = os.open(self.shown, os.O_WRONLY | _O_BINARY)
            try:
                os.ftruncate(fd, self.start)
            finally:
                os.close(fd)
        return f"{self.shown} holds what it held before this run {_RERUN}"


@dataclass
class _NewFileUndo:
    """A second signal's undo for a new ``--output`` file: no temp file, the target as before.

    After a stop the temp file is already in place (``placed``): a target
    this run created is removed again; one that existed cannot be brought
    back, but it then holds whole chunks only, which the same command
    (without ``--append``) rewrites.
    """

    shown: Path
    target: Path
    temporary: Path
    fd: int | None
    created: bool  # no file was there before the run
    placed: bool = False

    def __call__(self) -> str:
        if self.fd is not None:
            with suppress(OSError):
                os.close(self.fd)  # Windows deletes no open file
        with suppress(FileNotFoundError):
            os.unlink(self.temporary)
        if self.placed and not self.created:
            return f"{self.shown} holds this run's whole chunks only {_RERUN}"
        if self.placed:
            os.unlink(self.target)
        return f"{self.shown} was left as it was before this run {_RERUN}"


def _register(guard: InterruptGuard | None, undo: Callable[[], str | None]) -> Callable[[], None]:
    """Register ``undo`` with ``guard`` (if any); return what forgets it again."""
    if guard is None:
        return lambda: None
    key = guard.add_undo(undo)
    return lambda: guard.discard_undo(key)


@contextmanager
def ndjson_destination(given: BinaryIO | None, path: Path | None, append: bool,
                       guard: InterruptGuard | None = None,
                       stdout: BinaryIO | None = None) -> Iterator[Destination]:
    """Open where the run's NDJSON goes; put an ``--output`` file in place at the end.

    ``given`` (a stream), else ``path`` (a file), else ``stdout`` (the run's
    environment's). With ``guard``, what a second signal must put back is
    registered with it while this run's file is unsettled; after a stop it
    stays registered (the CLI settles it once the resume command is printed).
    """
    if given is not None:
        yield Destination(given)
        return
    if path is None:
        if stdout is None:
            raise UsageError("there is no binary stdout to write NDJSON to",
                             "give an output file or stream")
        yield Destination(stdout)
        return
    refuse_planted_link(path)  # before anything follows it
    if in_place(path):
        with _open(path, "ab" if append else "wb") as stream:
            yield Destination(stream)
        return
    with (_appending(path, guard) if append else _replacing(path, guard)) as destination:
        yield destination


@contextmanager
def _appending(path: Path, guard: InterruptGuard | None) -> Iterator[Destination]:
    # A run stopped before its replace (a console closed) left its temp file:
    # this is typically its resume command.
    sweep_stale_temps(Path(os.path.realpath(path)))
    stream = _open(path, "ab")
    start = stream.tell()
    undo = _AppendUndo(path, start, stream.fileno())
    forget = _register(guard, undo)
    settled = True
    try:
        yield Destination(stream, start, owned=True)
    except Interrupted:
        # The runner kept the whole chunks; the resume appends the rest. Until
        # that command is printed, a second signal still cuts back to `start`.
        settled = False
        raise
    except BaseException:
        # Undo this run's lines: running the command again adds them once.
        stream.truncate(start)
        raise
    finally:
        if settled:
            forget()
        undo.fd = None  # before the close: a descriptor number reused later must never be cut
        stream.close()


@contextmanager
def _replacing(path: Path, guard: InterruptGuard | None) -> Iterator[Destination]:
    target = target_of(path)  # through a symlink, to the file it names
    sweep_stale_temps(target)  # what a killed run left beside it
    temporary = temp_sibling(target)
    created = not os.path.lexists(target)
    stream = _open(temporary, "xb", shown=path)
    undo = _NewFileUndo(path, target, temporary, stream.fileno(), created)
    forget = _register(guard, undo)
    kept = False
    settled = True
    try:
        try:
            yield Destination(stream, owned=True)
        except Interrupted:
            _close_durably(stream)
            # After the close (Windows deletes no open file): closing a reused
            # descriptor number just before the exit would do no harm.
            undo.fd = None
            kept = True
            failure = _replace(temporary, target)
            if failure is not None:
                # The stop stays the outcome (exit 130, resume commands).
                log.error("%s (%s)", failure.message, failure.hint)
            else:
                # Whole chunks in place; until the resume command is printed,
                # a second signal puts the target back as it was.
                undo.placed = True
                settled = False
            raise
        _close_durably(stream)
        undo.fd = None
        kept = True
        failure = _replace(temporary, target)
        if failure is not None:
            raise failure
    finally:
        if not stream.closed:
            stream.close()
        undo.fd = None
        if not kept:
            temporary.unlink(missing_ok=True)
        if settled:
            forget()
