"""Where NDJSON goes: the caller's stream, stdout, or ``--output FILE`` written by us.

A new ``--output`` file is written beside its name (the file a symlink names)
and put in place when the run ends with whole chunks: complete, some chunks
failed, or stopped (the file then ends on the last whole chunk, and the
resume command appends the rest with ``--append``). Any other error leaves an
existing file as it was. ``--append`` adds to the file; an error undoes this
run's additions and a stop keeps only its whole chunks, so running the
printed command (or the same one again) never duplicates a line. A device
or pipe (``/dev/null``, a FIFO) is written to, never replaced.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from mpexport.atomic import in_place, temp_sibling
from mpexport.errors import Interrupted, OutputFileError, UsageError

log = logging.getLogger(__name__)


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


def _open(path: Path, mode: str) -> BinaryIO:
    try:
        return cast(BinaryIO, open(path, mode))
    except OSError as error:
        raise UsageError(f"cannot write --output {path}: {error.strerror or error}",
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
        os.replace(temporary, target)
    except OSError as error:
        # Windows refuses to replace a file another program has open.
        return OutputFileError(
            f"could not replace {target}: {error.strerror or error}",
            f"the events are in {temporary}; close what holds {target.name} and rename it",
        )
    return None


@contextmanager
def ndjson_destination(given: BinaryIO | None, path: Path | None,
                       append: bool) -> Iterator[Destination]:
    """Open where the run's NDJSON goes; put an ``--output`` file in place at the end."""
    if given is not None:
        yield Destination(given)
        return
    if path is None:
        yield Destination(sys.stdout.buffer)
        return
    if in_place(path):
        with _open(path, "ab" if append else "wb") as stream:
            yield Destination(stream)
        return
    if append:
        with _open(path, "ab") as stream:
            start = stream.tell()
            try:
                yield Destination(stream, start, owned=True)
            except Interrupted:
                raise  # the runner kept the whole chunks; the resume appends the rest
            except BaseException:
                # Undo this run's lines: running the command again adds them once.
                stream.truncate(start)
                raise
        return
    target = Path(os.path.realpath(path))  # through a symlink, to the file it names
    temporary = temp_sibling(target)
    stream = _open(temporary, "xb")
    kept = False
    try:
        try:
            yield Destination(stream, owned=True)
        except Interrupted:
            _close_durably(stream)
            kept = True
            failure = _replace(temporary, target)
            if failure is not None:
                # The stop stays the outcome (exit 130, resume commands).
                log.error("%s (%s)", failure.message, failure.hint)
            raise
        _close_durably(stream)
        kept = True
        failure = _replace(temporary, target)
        if failure is not None:
            raise failure
    finally:
        if not stream.closed:
            stream.close()
        if not kept:
            temporary.unlink(missing_ok=True)
