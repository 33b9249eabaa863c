"""One page of profiles from the Query API's engage endpoint: POST, verified whole, retried.

Page 0 opens a session and tells the total; pages 1..n name that session.
Each attempt reads the whole (small: one page) document and accepts it only
if it parses whole (:mod:`mpexport.mixpanel.engage_doc`): a cut or invalid
document is a retry, like a cut export body. Errors are classified once,
here: a 400 on a page sent with a session id means the session expired
(:class:`SessionExpired`, the run starts again from page 0: page 0 with
the same parameters was accepted), a 400 on page 0 is bad parameters,
401/403 are credentials, 429 waits (``Retry-After``), 5xx and broken
connections are retried with backoff.

The retry loop, the backoff, ``Retry-After`` and the sending and reading of
an attempt are the transport's (:mod:`mpexport.mixpanel.transport`), shared
with the export, so both APIs are retried alike.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from mpexport.mixpanel.credentials import CredentialKind, Credentials
from mpexport.mixpanel.endpoints import ENGAGE_PATH, Endpoint, error_text
from mpexport.mixpanel.engage_doc import EngagePage, InvalidPage, parse_page
from mpexport.mixpanel.transport import (
    FetchSettings,
    GaveUp,
    RequestGate,
    RetryableError,
    fail_for_status,
    read_blocks,
    read_error,
    send,
    with_retries,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger("mpexport.http")


class SessionExpired(Exception):
    """Mixpanel no longer knows the session: the export must start again from page 0."""


@dataclass(frozen=True)
class ProfileQuery:
    """Everything that defines the pages of a profiles export, except the page."""

    endpoint: Endpoint
    credentials: Credentials
    where: str | None = None
    cohort_id: int | None = None
    group_id: str | None = None
    properties: tuple[str, ...] = ()

    def params(self) -> dict[str, str]:
        """Query-string parameters: ``project_id`` with a service account or a token only."""
        if self.credentials.sends_project_id:
            return {"project_id": str(self.credentials.project_id)}
        return {}

    def form(self, page: int, session_id: str | None) -> dict[str, str]:
        """The form fields of page ``page`` (page 0 opens a session: no ``session_id``)."""
        form: dict[str, str] = {}
        if self.where:
            form["where"] = self.where
        if self.cohort_id is not None:
            form["filter_by_cohort"] = json.dumps({"id": self.cohort_id})
        if self.group_id is not None:
            form["data_group_id"] = self.group_id
        if self.properties:
            form["output_properties"] = json.dumps(list(self.properties), ensure_ascii=False)
        if session_id is not None:
            form["session_id"] = session_id
            form["page"] = str(page)
        return form


@dataclass(frozen=True)
class FetchedPage:
    """A page that arrived whole, and how many attempts it took."""

    page: EngagePage
    attempts: int
    seconds: float


@dataclass(frozen=True)
class PageFailure:
    """A page that still failed after its retry budget."""

    page: int
    reason: str
    attempts: int


def _fail_for_status(response: requests.Response, status: int, with_session: bool,
                     kind: CredentialKind) -> NoReturn:
    """Raise what a non-200 answer stands for; the status decides, the body words it.

    Only a 400 on a page sent with a session is particular to engage: the
    session expired. The rest is every endpoint's rule, page 0's 400 (bad
    parameters) and a wrong address included.
    """
    if status == 400 and with_session:
        # Page 0 with the same parameters was accepted, so a 400 on a page of
        # its session can only be about the session; Mixpanel's wording is not
        # specified, so none is required. A wrong verdict costs one restart
        # (the runner bounds how many).
        raise SessionExpired(error_text(read_error(response, status)))
    fail_for_status(response, status, "profiles", kind)


def fetch_page_once(
    session: requests.Session,
    query: ProfileQuery,
    page: int,
    session_id: str | None,
    settings: FetchSettings,
    stop: threading.Event,
    on_bytes: Callable[[int], None],
) -> EngagePage:
    """Make one attempt at a page; return it verified whole.

    Raises :class:`RetryableError` for what another attempt may fix,
    :class:`SessionExpired`, the library's fatal errors (400, 401, 403) and
    :class:`~mpexport.mixpanel.transport.Stopped` when ``stop`` is set.
    """
    started = time.monotonic()
    target = f"POST {query.endpoint.host}{ENGAGE_PATH} page {page}"
    fail = functools.partial(_fail_for_status, with_session=session_id is not None,
                             kind=query.credentials.kind)
    with send(session, "POST", query.endpoint.engage_url, target=target, settings=settings,
              fail=fail, params=query.params(), data=query.form(page, session_id),
              auth=query.credentials.auth()) as response:
        # One page is small: read whole, then parsed whole.
        body = b"".join(read_blocks(response, stop, on_bytes, decode=True))
    try:
        verified = parse_page(body)
    except InvalidPage as exc:
        raise RetryableError(f"incomplete or invalid page: {exc}") from None
    if verified.page != page:
        raise RetryableError(f"asked for page {page}, got page {verified.page}")
    log.info("%s -> complete: %d profiles, %d bytes in %.2fs", target, verified.count,
             verified.bytes, time.monotonic() - started)
    return verified


def fetch_page(
    session: requests.Session,
    query: ProfileQuery,
    page: int,
    session_id: str | None,
    settings: FetchSettings,
    stop: threading.Event,
    on_bytes: Callable[[int], None],
    on_retry: Callable[[int, int, str, float], None],
    rng: random.Random,
    gate: RequestGate | None = None,
) -> FetchedPage | PageFailure:
    """Fetch a page with retries through ``gate`` (the shared limiter).

    Fatal errors and :class:`SessionExpired` propagate; a spent retry budget
    gives a :class:`PageFailure`. 429s wait (``Retry-After`` or backoff,
    shared with every worker through the gate) without spending the budget.
    ``on_retry(page, attempt, reason, delay)`` hears of every failed attempt.
    """
    outcome = with_retries(
        lambda: fetch_page_once(session, query, page, session_id, settings, stop, on_bytes),
        settings=settings, rng=rng, gate=gate, stop=stop,
        on_retry=functools.partial(on_retry, page),
    )
    if isinstance(outcome, GaveUp):
        return PageFailure(page, outcome.reason, outcome.attempts)
    return FetchedPage(outcome.value, outcome.attempts, outcome.seconds)
