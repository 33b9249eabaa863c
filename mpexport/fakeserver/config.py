"""Knobs of the fake server. Every default is benign: no limits, no faults, no delay."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mpexport.fakeserver.dataset import Dataset
from mpexport.fakeserver.profiles import ProfileDataset

DEMO_USERNAME = "demo-sa.mpexport"
DEMO_SECRET = "demo-secret-not-real"
DEMO_PROJECT_ID = 4242
DEMO_API_SECRET = "demo-api-secret-not-real"
DEMO_OAUTH_TOKEN = "demo-oauth-token-not-real"

FAULT_KINDS: tuple[str, ...] = (
    "http500",
    "http502",
    "http503",
    "http429",
    "reset",
    "gzip_cut",
    "terminated_early_line",
    "export_terminated_early_line",
    "terminated_early_inline",
)
# Connection resets at each point of an attempt before the 200 body (``reset``
# is the one inside it). Kept apart from FAULT_KINDS, which tests serve all at
# once over a fixed number of chunks, and from the random ``fault_rate`` draw.
CUT_FAULT_KINDS: tuple[str, ...] = (
    "reset_before_status",
    "reset_in_error_headers",
    "reset_in_200_headers",
    "reset_in_error_body",
    "reset_in_chunked_error_body",
)
# Faults of the engage endpoint (``engage_faults``); ``cut`` is a JSON document
# cut short in a response that ends cleanly.
ENGAGE_FAULT_KINDS: tuple[str, ...] = ("http500", "http503", "http429", "reset", "cut")
# Faults of the aggregate event counts endpoint (``counts_faults``).
COUNTS_FAULT_KINDS: tuple[str, ...] = ("http500", "http429")


@dataclass
class ServerConfig:
    """Behaviour of a ``FakeMixpanelServer``.

    Rate limits count admitted requests only (see ``ratelimit.RateLimiter``).
    ``faults``/``fault_attempts``: the Nth distinct query (by its full parameter
    set, numbered from 0 in order of first arrival) gets ``faults[N % len(faults)]``
    on each of its first ``fault_attempts`` attempts. ``fail_dates``: any query
    whose range covers one of them always gets a 500. ``fault_rate``: probability
    of a random fault on any other request, drawn from ``random.Random(fault_seed)``.
    ``ttfb`` delays the status line of admitted requests (not of 400/401/404 or
    limiter 429s). ``reset_with_rst`` makes the ``reset`` fault send a TCP RST
    instead of a FIN; both end a chunked body without its terminating chunk.
    ``reset_with_rst`` applies to the ``CUT_FAULT_KINDS`` too: after reading the
    request, ``reset_before_status`` sends nothing; ``reset_in_error_headers``
    and ``reset_in_200_headers`` send a ``cut_status`` (default 502) or 200
    status line and a few headers but no blank line (so no framing header
    either); ``reset_in_error_body`` and ``reset_in_chunked_error_body`` send a
    ``cut_status`` announcing a 4041-byte HTML page (Content-Length, or one chunk
    of that size) and only its first 200 bytes.

    The engage endpoint (``/api/query/engage``) answers only when ``profiles``
    is set (404 otherwise, as before it existed). Its pages hold
    ``engage_page_size`` profiles. A session expires once it has served
    ``engage_session_pages`` complete pages (page 0 included; None: never).
    ``engage_hourly_limit``/``engage_concurrency_limit`` are the Query API's
    own limits (60 an hour and 5 at once in Mixpanel), apart from the export
    limits. ``engage_faults``: the first attempt of page number p (whatever
    its session) gets ``engage_faults[p % len(engage_faults)]``; later
    attempts succeed. ``engage_hold``: a test hook; admitted engage requests
    wait for this event before they answer, so a test can hold them open.
    See ``engage.EngageEndpoint``.

    The aggregate event counts endpoint (``/api/query/events``) counts the
    dataset's events under the same Query API limits as engage (one limiter:
    Mixpanel counts a project's Query API queries together).
    ``counts_faults``: the first attempt of the Nth distinct counts query gets
    ``counts_faults[N % len(counts_faults)]``. See ``counts.CountsEndpoint``.

    ``now``: the server's present instant (UTC). Mixpanel holds no event
    stamped later than the present, so no endpoint serves one (see
    ``served_until``). ``today`` alone pins the day but not the instant.
    """

    dataset: Dataset = field(default_factory=Dataset)
    username: str = DEMO_USERNAME
    secret: str = DEMO_SECRET
    project_id: int = DEMO_PROJECT_ID
    api_secret: str = DEMO_API_SECRET
    oauth_token: str = DEMO_OAUTH_TOKEN
    bad_auth_status: int = 401
    today: dt.date | None = None
    now: dt.datetime | None = None
    ttfb: float = 0.0
    bandwidth: int | None = None
    qps_limit: float | None = None
    hourly_limit: int | None = None
    concurrency_limit: int | None = None
    retry_after: int | None = None
    clock: Callable[[], float] = time.monotonic
    faults: Sequence[str] = ()
    fault_attempts: int = 1
    fail_dates: frozenset[dt.date] = frozenset()
    fault_rate: float = 0.0
    fault_seed: int = 0
    reset_with_rst: bool = False
    cut_status: int = 502
    gzip_threshold: int = 1400
    gzip_level: int = 1
    slice_bytes: int = 64 * 1024
    profiles: ProfileDataset | None = None
    engage_page_size: int = 1000
    engage_session_pages: int | None = None
    engage_hourly_limit: int | None = None
    engage_concurrency_limit: int | None = None
    engage_faults: tuple[str, ...] = ()
    engage_hold: threading.Event | None = None
    counts_faults: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        known = FAULT_KINDS + CUT_FAULT_KINDS
        unknown = [kind for kind in self.faults if kind not in known]
        if unknown:
            raise ValueError(f"unknown fault kinds: {unknown}; known: {known}")
        unknown = [kind for kind in self.engage_faults if kind not in ENGAGE_FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown engage fault kinds: {unknown}; known: {ENGAGE_FAULT_KINDS}")
        unknown = [kind for kind in self.counts_faults if kind not in COUNTS_FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown counts fault kinds: {unknown}; known: {COUNTS_FAULT_KINDS}")
        if self.engage_page_size < 1:
            raise ValueError("engage_page_size must be >= 1")
        if self.engage_session_pages is not None and self.engage_session_pages < 1:
            raise ValueError("engage_session_pages must be >= 1 or None")
        if self.now is not None and self.now.utcoffset() != dt.timedelta(0):
            raise ValueError("now must be an aware datetime in UTC")

    def current_date(self) -> dt.date:
        """The server's idea of today: ``today``, else the day of ``now``, else the UTC date."""
        if self.today is not None:
            return self.today
        if self.now is not None:
            return self.now.date()
        return dt.datetime.now(dt.UTC).date()

    def served_until(self) -> dt.datetime | None:
        """The last instant whose events are served (None: every day is served whole).

        ``now`` when set; the wall clock when neither ``now`` nor ``today``
        is. A pinned ``today`` without ``now`` serves that day whole: tests
        pin the day to get the same data whatever the time they run at.
        """
        if self.now is not None:
            return self.now
        if self.today is not None:
            return None
        return dt.datetime.now(dt.UTC)
