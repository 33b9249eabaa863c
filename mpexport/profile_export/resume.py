"""A profiles export's session and the pages it has, so that a rerun continues it.

Mixpanel fixes a profile listing when page 0 opens its session; pages 1..n of
that session can be fetched later, in any order, until the session expires.
Pages of two sessions must never be mixed: a profile can move between pages
when the listing is made again. So what a run keeps is one session (its id,
its size, the options that made it) and the pages of that session it has
stored. A rerun with the same options continues it; when Mixpanel says the
session expired, everything of it is dropped and the export starts again
from page 0.

A database keeps this in its own tables, in the same transactions as the
pages (:mod:`mpexport.profile_export.duckdb`). NDJSON output keeps it here, in the
state directory (:class:`PageFiles`): profiles reach stdout only once every
page of one session is in, so a stopped run leaves stdout untouched and its
rerun writes every profile exactly once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from mpexport.atomic import write_atomically
from mpexport.errors import DatabaseLockedError, UnavailableError
from mpexport.filelock import try_lock, unlock

FORMAT_VERSION = 1
SESSION_FILE = "session.json"
LOCK_FILE = ".lock"
_PAGE_PREFIX = "page-"
_PAGE_SUFFIX = ".ndjson"
# Kept pages of a run nobody resumed are profiles (personal data) on disk:
# another run removes them after this long. Mixpanel's sessions do not live
# that long, so nothing resumable is lost.
STALE_SECONDS = 24 * 3600
# A stored session older than this is never resumed, even when every page is
# in: its profiles are a day old, and Mixpanel's sessions do not live that
# long, so a rerun starts again from page 0 rather than write stale data.
MAX_RESUME_SECONDS = STALE_SECONDS
# Mixes into the hash that names the account in a fingerprint (see account_key).
_ACCOUNT_SALT = b"mpexport profiles session account v1\0"


@dataclass(frozen=True)
class SessionState:
    """One engage session: what page 0 said, and which options opened it."""

    session_id: str
    total: int
    page_size: int
    fingerprint: str
    started: float  # wall-clock seconds when page 0 arrived

    @property
    def pages(self) -> int:
        """Pages the session has: page 0 even when it holds no profile."""
        return pages_for(self.total, self.page_size)

    def too_old(self, now: float) -> bool:
        """True when the session is past :data:`MAX_RESUME_SECONDS` at ``now``."""
        return now - self.started > MAX_RESUME_SECONDS

    def missing(self, done: set[int]) -> list[int]:
        """The session's pages not in ``done``, in order."""
        return [page for page in range(self.pages) if page not in done]


def pages_for(total: int, page_size: int) -> int:
    """Pages that hold ``total`` profiles, ``page_size`` to a page (at least page 0)."""
    return max(1, math.ceil(total / page_size))


def session_from_page0(session_id: str, total: int | None, page_size: int, count: int,
                       fingerprint: str) -> SessionState:
    """The session page 0 opened; without a total only a short page 0 says it is all."""
    if total is None:
        if count < page_size:
            total = count
        else:
            raise UnavailableError(
                "Mixpanel's first page of profiles did not say how many there are",
                "the pages cannot be planned; try again later",
            )
    return SessionState(session_id, total, page_size, fingerprint, time.time())


def account_key(username: str | None, secret: str | None, api_secret: str | None,
                project_id: int | None) -> str:
    """A salted hash that tells accounts (and projects) apart without holding a secret.

    A legacy API secret has no project id, so the secret is what names the
    project: without it every project would share one session and one run
    could write out another project's pages. The fingerprint is stored (the
    session file, the database), so only this digest goes there: the secret
    is long and random, which makes the hash irreversible in practice. An
    OAuth token is not part of it: tokens are replaced as they expire, so a
    new one must resume its project's session, which the project id names.
    """
    identity = json.dumps([username, secret, api_secret, project_id]).encode("utf-8")
    return hashlib.sha256(_ACCOUNT_SALT + identity).hexdigest()[:32]


def fingerprint(*, base_url: str, account: str | None, project_id: int | None,
                where: str | None, cohort_id: int | None, group_id: str | None,
                properties: tuple[str, ...]) -> str:
    """A stable key for what defines a session's listing (a rerun must match it).

    ``account`` is :func:`account_key` of the credentials (None without any).
    """
    return json.dumps(
        {"api": base_url.rstrip("/").lower(), "account": account, "project": project_id,
         "where": where or None, "cohort": cohort_id, "group": group_id,
         "properties": list(properties)},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def page_name(page: int) -> str:
    """The file name of a stored page."""
    return f"{_PAGE_PREFIX}{page:06d}{_PAGE_SUFFIX}"


def _page_number(name: str) -> int | None:
    if not (name.startswith(_PAGE_PREFIX) and name.endswith(_PAGE_SUFFIX)):
        return None
    digits = name[len(_PAGE_PREFIX):-len(_PAGE_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def profiles_dir(state_dir: Path) -> Path:
    """Where NDJSON runs keep their sessions: ``profiles/`` in the run's state folder."""
    return state_dir / "profiles"


class PageFiles:
    """One session and its pages as files in a directory of their own.

    The directory is named after the options' fingerprint, so runs with other
    options never meet it. A page file is complete or absent: it is renamed
    into place only once whole (see :meth:`store`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock: IO[bytes] | None = None

    @classmethod
    def for_fingerprint(cls, key: str, parent: Path) -> PageFiles:
        """The folder in ``parent`` (:func:`profiles_dir`) of the session of fingerprint ``key``."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return cls(parent / digest)

    def open(self) -> None:
        """Create and lock the directory (private: it holds profiles); drop temp files.

        Raises :class:`~mpexport.errors.DatabaseLockedError` while another run
        exports the same profiles: two runs must not share one session's pages.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.directory / LOCK_FILE, "a+b")  # noqa: SIM115 - held until close()
        if not try_lock(handle):
            handle.close()
            raise DatabaseLockedError(
                "another mpexport run is exporting the same profiles right now",
                "wait for it to finish; it keeps its pages in " + str(self.directory),
            )
        self._lock = handle
        clear_stale(self.directory.parent, keep=self.directory)
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the directory's lock (the pages stay for a rerun)."""
        handle, self._lock = self._lock, None
        if handle is not None:
            with contextlib.suppress(OSError):
                unlock(handle)
            handle.close()

    def resume(self, key: str) -> tuple[SessionState | None, set[int]]:
        """The session kept here if it was opened with ``key``, and its stored pages."""
        try:
            data = json.loads((self.directory / SESSION_FILE).read_bytes())
            state = SessionState(**{k: data[k] for k in SessionState.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None, set()
        if data.get("version") != FORMAT_VERSION or state.fingerprint != key:
            return None, set()
        return state, {p for p in self.pages_done() if p < state.pages}

    def pages_done(self) -> set[int]:
        """Numbers of the pages stored here."""
        if not self.directory.is_dir():
            return set()
        found = (_page_number(path.name) for path in self.directory.iterdir())
        return {page for page in found if page is not None}

    def begin(self, state: SessionState) -> None:
        """Forget every page of an earlier session, then record ``state``."""
        self.discard_pages()
        body = {"version": FORMAT_VERSION, **asdict(state)}
        write_atomically(self.directory / SESSION_FILE, json.dumps(body).encode("utf-8"),
                         mode=0o600, durable=True)

    def store(self, page: int, path: Path) -> None:
        """Put a verified page (a spool file in this directory) in place as page ``page``."""
        os.replace(path, self.directory / page_name(page))

    def page_path(self, page: int) -> Path:
        """The file of stored page ``page``."""
        return self.directory / page_name(page)

    def discard_pages(self) -> None:
        """Drop every stored page (the session expired or another one begins)."""
        for page in self.pages_done():
            self.page_path(page).unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the directory and everything in it (the export was written out)."""
        self.close()  # Windows deletes no file that is still open
        shutil.rmtree(self.directory, ignore_errors=True)


def clear_stale(parent: Path, *, keep: Path | None = None, now: float | None = None,
                max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove session directories under ``parent`` untouched for ``max_age``; return them."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for directory in parent.iterdir():
        if not directory.is_dir() or directory == keep:
            continue
        with contextlib.suppress(OSError):
            newest = max([directory.stat().st_mtime,
                          *(p.stat().st_mtime for p in directory.iterdir())])
            if now - newest > max_age and not _in_use(directory):
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory)
    return removed


def _in_use(directory: Path) -> bool:
    """True while a live run holds the directory's lock."""
    with open(directory / LOCK_FILE, "a+b") as handle:
        if not try_lock(handle):
            return True
        unlock(handle)
        return False
