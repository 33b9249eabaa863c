"""Engage paging sessions and the engage fault schedule."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from mpexport.fakeserver.profiles import Profile
from mpexport.fakeserver.request import ApiError

# Sessions kept at once; opening one more forgets the oldest (which then
# answers as expired). Bounds memory on a long-running demo or benchmark.
MAX_SESSIONS = 64


@dataclass
class _Session:
    results: list[Profile]
    served: int = 0


def session_error(session_id: str) -> ApiError:
    """The 400 for a session the server does not know (never opened, expired)."""
    return ApiError(
        400,
        f"session_id {session_id!r} is unknown or has expired; "
        "request page 0 without a session_id to start a new session",
    )


class SessionStore:
    """Open sessions: each fixes its result set when page 0 opens it.

    With ``page_limit`` a session expires once it has served that many
    complete pages (counted by ``claim``); ``None`` never expires one.
    Session ids are deterministic: the Nth session of a server with the same
    ``seed`` always has the same id.
    """

    def __init__(self, page_limit: int | None, seed: int = 0) -> None:
        self.page_limit = page_limit
        self.seed = seed
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._opened = 0

    def open(self, results: list[Profile]) -> str:
        """Start a session over ``results``; return its id."""
        with self._lock:
            self._opened += 1
            digest = hashlib.sha256(f"{self.seed}:{self._opened}".encode()).hexdigest()
            # Shaped like Mixpanel's ids: a number, a dash and a few letters.
            session_id = f"{1_700_000_000 + self._opened}-{digest[:6].upper()}"
            self._sessions[session_id] = _Session(results)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            return session_id

    def check(self, session_id: str) -> None:
        """Raise the session 400 unless ``session_id`` may still serve a page."""
        with self._lock:
            self._live(session_id)

    def claim(self, session_id: str) -> list[Profile]:
        """Count one served page against the session; return its result set.

        Check and count are one step, so concurrent pages of one session can
        never serve more than ``page_limit`` pages between them.
        """
        with self._lock:
            session = self._live(session_id)
            session.served += 1
            if self.page_limit is not None and session.served >= self.page_limit:
                # Its last page: the next request for it is refused.
                del self._sessions[session_id]
            return session.results

    def peek(self, session_id: str) -> list[Profile]:
        """The session's result set, without counting a page (for a broken answer)."""
        with self._lock:
            return self._live(session_id).results

    def _live(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise session_error(session_id)
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class PageFaults:
    """The first attempt of page number p gets ``kinds[p % len(kinds)]``.

    Keyed by the page number alone (not the session), so a client that
    retries a page, or restarts from page 0 in a new session, succeeds: the
    same "first attempt" rule as the export faults (``faults.FaultPlanner``).
    """

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = tuple(kinds)
        self._lock = threading.Lock()
        self._attempted: set[int] = set()

    def choose(self, page: int) -> str | None:
        """The fault for this attempt of ``page``, or None to serve it."""
        if not self.kinds:
            return None
        with self._lock:
            if page in self._attempted:
                return None
            self._attempted.add(page)
        return self.kinds[page % len(self.kinds)]
