"""What ``mpexport profiles`` shows: progress on stderr, the summary line and the summary JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

from mpexport.cli.progress import StderrProgress, failed_note, retry_note
from mpexport.cli.progress import describe as describe_shared
from mpexport.cli.summary import Report, loaded_line, traffic
from mpexport.events import BytesReceived
from mpexport.profile_export.model import (
    PageDone,
    PageFailed,
    PageRetry,
    PagesPlanned,
    ProfileEvent,
    ProfileResult,
)


def describe(event: ProfileEvent) -> str | None:
    """The one-line note an event deserves on stderr, if any."""
    if isinstance(event, PageRetry):
        return retry_note(f"page {event.page}", event.attempt, event.reason, event.delay)
    if isinstance(event, PageFailed):
        failure = event.failure
        return failed_note(f"page {failure.page}", failure.attempts, failure.reason)
    if isinstance(event, (PagesPlanned, PageDone, BytesReceived)):
        return None
    return describe_shared(event)  # notes and budget waits read as for events


class PageProgress(StderrProgress):
    """Progress of a profiles export's pages: one bar, or a line of pages and profiles."""

    def __init__(self, stream: TextIO | None = None, mode: str = "bars",
                 interval: float = 5.0) -> None:
        super().__init__(stream, mode, interval)
        self._pages = self._done = self._profiles = 0

    def __call__(self, event: ProfileEvent) -> None:
        """Update the display (and print a note) for one event."""
        if isinstance(event, PagesPlanned):
            self._pages, self._done = event.pages, event.done
            self._open(event.pages, event.done)
        elif isinstance(event, PageDone):
            self._done += 1
            self._profiles += event.profiles
            for bar in self._bars:
                bar.update(1)
        self._note(describe(event))

    def _open(self, pages: int, done: int) -> None:
        if not self._begin():
            return
        self._close_bars()  # a new session: the pages start again
        self._bars = [self._bar(total=pages, initial=done, desc="pages", unit="page")]

    def status_line(self) -> str:
        """``mpexport: 12/40 pages, 12000 profiles, 90s``: the lines mode's line."""
        elapsed = time.monotonic() - self._started
        return (f"mpexport: {self._done}/{self._pages} pages, {self._profiles} profiles, "
                f"{elapsed:.0f}s")


@dataclass
class ProfileReport(Report[ProfileResult]):
    """What the CLI knows of a profiles run, for the summary line and JSON."""

    output: str  # the database file, the --output file, or "stdout"
    table: str | None = None

    def to_json(self, code: int) -> dict[str, Any]:
        """The machine-readable summary (``--summary-json``)."""
        r = self.result or ProfileResult()
        load = r.load
        return {
            **self.head(code, "profiles"),
            "output": self.output,
            "table": self.table,
            "pages": {
                "total": r.pages_total,
                "stored": r.pages_stored,
                "fetched": r.pages_fetched,
                "resumed": r.pages_resumed,
                "failed": [{"page": f.page, "reason": f.reason} for f in r.failed],
            },
            "profiles": r.profiles,
            "profiles_received": r.profiles_received,
            "total": r.total,
            "mode": load.mode if load else None,
            "replaced": load.replaced if load else None,
            "duplicates": r.duplicates,
            "repaired": load.repaired if load else None,
            "bytes": r.bytes,
            "duration_seconds": round(r.seconds, 3),
            "retries": r.retries,
            "session_restarts": r.session_restarts,
            "error": self.error,
        }

    def summary_line(self) -> str:
        """The one-line human summary of a finished run."""
        r = self.result
        assert r is not None
        pages = f"{r.pages_stored}/{r.pages_total} pages"
        if r.pages_resumed:
            pages += f" ({r.pages_resumed} stored by an earlier run)"
        tail = f"{pages}, {traffic(r.bytes, r.seconds)}, {r.retries} retries"
        if r.session_restarts:
            tail += f", {r.session_restarts} session restarts"
        if r.load is None:
            twice = f" ({r.duplicates} listed twice, written once)" if r.duplicates else ""
            return f"mpexport: {r.profiles} profiles{twice} in {tail}"
        load = r.load
        if load.mode == "replace":
            how = f"snapshot replaced, {load.replaced} rows before"
        else:
            how = f"upserted, {load.replaced} updated"
        extras = [how]
        if load.duplicates:
            extras.append(f"{load.duplicates} listed twice, kept once")
        if load.repaired:
            extras.append(f"{load.repaired} repaired")
        return loaded_line(load.rows, "profiles", self.output, load.table, extras, tail)
