"""What a profiles export reports as it goes (progress events) and when it ends (the result)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpexport.events import BytesReceived, Notice, WaitingForBudget
from mpexport.mixpanel.engage import PageFailure
from mpexport.model import RunOutcome


@dataclass(frozen=True)
class PagesPlanned:
    """The session's size is known: ``pages`` in all, ``done`` of them already stored."""

    pages: int
    done: int
    total: int  # profiles, as page 0 said


@dataclass(frozen=True)
class PageDone:
    """A page arrived whole and was stored."""

    page: int
    profiles: int
    bytes: int
    attempts: int


@dataclass(frozen=True)
class PageRetry:
    """An attempt at ``page`` failed; it is tried again after ``delay`` seconds."""

    page: int
    attempt: int
    reason: str
    delay: float


@dataclass(frozen=True)
class PageFailed:
    """A page failed after its whole retry budget."""

    failure: PageFailure


ProfileEvent = (
    Notice | PagesPlanned | BytesReceived | PageRetry | PageDone | PageFailed | WaitingForBudget
)
ProfileProgress = Callable[[ProfileEvent], None]


@dataclass
class ProfileLoad:
    """What the database did at the end of a run."""

    table: str
    mode: str  # "replace" (a full snapshot) or "upsert" (a filtered export)
    rows: int = 0  # profiles written into the table
    replaced: int = 0  # rows the snapshot removed, or rows the upsert updated
    duplicates: int = 0  # profiles listed twice in the session (one kept)
    repaired: int = 0  # properties stored repaired (see mixpanel.engage_doc)


@dataclass
class ProfileResult(RunOutcome[PageFailure]):
    """What a profiles export did: the library's return value and the CLI's summary.

    ``ok`` when every page arrived and the profiles were written out.
    """

    pages_total: int = 0  # of the session (0 until page 0 arrived)
    pages_stored: int = 0  # of the session, this run's and earlier runs'
    pages_fetched: int = 0  # by this run (a session that expired included)
    pages_resumed: int = 0  # stored by an earlier run of the session
    total: int | None = None  # profiles, as Mixpanel's page 0 said
    profiles: int = 0  # profiles written out (stdout, the file or the table)
    profiles_received: int = 0  # profiles on the pages this run fetched
    duplicates: int = 0  # profiles listed twice in the session, written once
    # Pages NDJSON output holds after a stop while writing out (stdout, a
    # device); a file is put in place whole or not at all, so 0 there.
    pages_written: int = 0
    retries: int = 0
    session_restarts: int = 0
    load: ProfileLoad | None = None
