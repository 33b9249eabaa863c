"""Profiles as NDJSON: one profile per line, as the API listed them, written once all are in.

Pages wait as files (:class:`~mpexport.profile_export.resume.PageFiles`) until
every page of one session has arrived, then go out in page order, each
profile once: a profile Mixpanel lists twice in a session is written where
it is first listed (as the database keeps it). Writing
earlier would make a session that expires midway impossible to recover
without writing some profiles twice; writing at the end makes a stopped run
resumable (its pages stay) and leaves stdout empty until the export is whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpexport.errors import OutputClosed, OutputFileError, UsageError, reader_gone
from mpexport.profile_export.resume import PageFiles, SessionState

if TYPE_CHECKING:
    from mpexport.interrupt import InterruptGuard


class NdjsonProfiles:
    """The NDJSON sink: keeps pages in ``files``, writes them to ``stream`` or ``output``.

    ``output`` (a path) is written beside its final name and put in place
    whole; otherwise ``stream`` (the run's stdout, from its environment)
    receives the lines.
    ``written_pages`` counts the pages written out so far; ``duplicates`` the
    profiles :meth:`finish` skipped as listed before in the session.
    """

    def __init__(self, files: PageFiles, *, stream: BinaryIO | None = None,
                 output: Path | None = None, guard: InterruptGuard | None = None) -> None:
        self.files = files
        self._stream = stream
        self._output = output
        self._guard = guard
        self.written_pages = 0
        self.duplicates = 0
        self._in_place = False  # --output is a device or pipe, written as it goes

    @property
    def spool_dir(self) -> Path:
        """Where fetched pages wait: beside the pages already kept."""
        return self.files.directory

    @property
    def pages_out(self) -> int:
        """Pages the destination holds now: a temp file that was never put in place holds none."""
        return self.written_pages if self._output is None or self._in_place else 0

    def open(self) -> None:
        """Take the session directory (fails while another run holds it)."""
        self.files.open()

    def close(self) -> None:
        """Release the session directory; its pages stay for a rerun."""
        self.files.close()

    def resume(self, key: str) -> tuple[SessionState | None, set[int]]:
        """The kept session of these options and its stored pages."""
        return self.files.resume(key)

    def begin(self, state: SessionState) -> None:
        """A new session: drop every page of the one before."""
        self.files.begin(state)

    def store(self, page: int, path: Path, profiles: int) -> None:
        """Keep a verified page; ``path`` (a spool file) becomes the sink's."""
        self.files.store(page, path)

    def discard(self) -> None:
        """The session expired: drop its pages."""
        self.files.discard_pages()

    def finish(self, state: SessionState) -> int:
        """Write every page in order; return the profiles written. The pages are then removed."""
        if self._output is not None:
            from mpexport.atomic import replacing

            try:
                with replacing(self._output) as temporary, open(temporary, "wb") as target:
                    self._in_place = temporary == self._output
                    count = self._write(state, target)
            except OSError as error:
                raise OutputFileError(
                    f"could not write {self._output}: {error.strerror or error}",
                    "the profiles are kept; fix the cause and run the same command again",
                ) from None
        else:
            stream = self._stream
            if stream is None:
                raise UsageError("there is no binary stdout to write the profiles to",
                                 "give an output file or stream")
            try:
                count = self._write(state, stream)
                stream.flush()
            except OSError as error:
                if reader_gone(error):
                    raise OutputClosed() from None
                # Disk full, an I/O error: the run's outcome (exit 1), not a bug.
                raise OutputFileError(
                    f"could not write to stdout: {error.strerror or error}",
                    "the profiles are kept; fix the cause and run the same command again",
                ) from None
        self.files.remove()
        return count

    def _write(self, state: SessionState, stream: BinaryIO) -> int:
        from mpexport.mixpanel.engage_doc import distinct_id_of

        # Digests, not ids: 8 bytes (plus the set's overhead) a profile keeps
        # millions in memory; a collision (odds about n**2 / 2**65) would drop
        # one profile, far rarer than any other way to lose one.
        seen: set[bytes] = set()
        lines = 0
        for page in range(state.pages):
            if self._guard is not None:
                # Between pages only: the output always ends on a whole page.
                self._guard.raise_if_requested()
            with self.files.page_path(page).open("rb") as source:
                out: list[bytes] = []
                for line in source:  # one profile a line, as parse_page wrote it
                    key = hashlib.blake2b(distinct_id_of(line).encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest()
                    if key in seen:
                        self.duplicates += 1
                        continue
                    seen.add(key)
                    out.append(line)
                stream.write(b"".join(out))  # a page is small: one write per page
                lines += len(out)
            self.written_pages += 1
        return lines
