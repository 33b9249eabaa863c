"""The hourly query budget, persisted across runs.

Mixpanel allows 60 export queries per rolling hour per project. A run that
starts right after another one must know what the earlier run spent, so the
wall-clock times of recent request starts are kept in a small JSON file per
(API host, project)::

    {"version": 1, "host": "https://data.mixpanel.com", "project": "12345",
     "starts": [1719741600.12, 1719741600.51, ...]}

Wall-clock time (``time.time()``) is stored because monotonic clocks do not
survive across processes. The file holds no credentials: only the host, the
project id and timestamps.

Several threads of one process and several processes (two overlapping cron
runs, a manual export while cron syncs) may record at once. Every write
re-reads the file, merges, and replaces it atomically (temp file +
``os.replace``) while holding an in-process lock and an advisory lock on a
sidecar ``.lock`` file, so no start is lost and no reader ever sees half a
file. The same file also shares the per-second limit: the limiter grants a
start only inside :meth:`HourlyState.claim`, which shows it every start other
processes recorded and records the granted one under that one lock, so the
starts of all runs of a project together stay within the limits. The lock is
held for a read, an in-memory decision and a write; waiting happens outside
it. If locking or writing fails (read-only
directory, an exotic filesystem, a file another program holds open on Windows)
the state is simply not persisted: one warning per run says what failed, on
which path, and what it costs, and the export goes on, because the budget file
is an optimisation, never a reason to fail an export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mpexport.atomic import write_atomically
from mpexport.filelock import lock, unlock

FORMAT_VERSION = 1
HOUR = 3600.0
# Kept a little longer than the hour so a limiter using an hourly safety margin
# still finds every start it needs; older entries are pruned on every write.
DEFAULT_RETENTION = HOUR + 120.0

log = logging.getLogger(__name__)

# What a failure costs, for the warning: the budget is how runs avoid 429s.
_NOT_SAVED = (
    "the next run may not know of this hour's queries, and may then be slowed "
    "by Mixpanel's rate limit (HTTP 429)"
)
_NOT_FORGOTTEN = (
    "a query that never reached Mixpanel stays counted against this hour's budget"
)
_NOT_READ = (
    "this run does not know of the queries earlier runs made this hour, and may "
    "be slowed by Mixpanel's rate limit (HTTP 429)"
)


def _normalize_host(host: str) -> str:
    # "https://data.mixpanel.com/" and "HTTPS://data.mixpanel.com" are the same
    # budget; only the trailing slash and case of the URL prefix can differ.
    return host.strip().rstrip("/").lower()


def _project_text(project: str | int | None) -> str:
    return "" if project is None else str(project).strip()


def default_path(host: str, project: str | int | None, folder: Path) -> Path:
    """Where the budget file of ``project`` on API ``host`` lives in the state ``folder``.

    ``folder`` is the run's state folder
    (:attr:`mpexport.environment.Environment.state_dir`).

    The name is a hash of host and project, so it is a safe file name whatever
    the host looks like. ``project`` is None with a legacy project secret:
    then every such project on the host shares one file, which overcounts
    (safe) rather than storing anything derived from the secret.
    """
    key = f"{_normalize_host(host)}|{_project_text(project)}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return folder / f"ratelimit-{digest}.json"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing).

    Raises OSError if the lock cannot be taken; the caller treats that like
    any other persistence failure.
    """
    with open(path, "a+b") as handle:
        lock(handle)
        try:
            yield
        finally:
            unlock(handle)


def _parse_starts(raw: bytes) -> list[float]:
    """The timestamps in a state file's bytes; anything malformed counts as empty."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        return []
    starts = data.get("starts")
    if not isinstance(starts, list):
        return []
    # bool is an int subclass; a hand-edited `true` is not a timestamp.
    return [
        float(v)
        for v in starts
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]


class HourlyState:
    """The request starts of the last hour for one project, shared through a file.

    Thread-safe. Timestamps are wall-clock seconds (``time.time()``).
    """

    def __init__(
        self,
        path: Path,
        *,
        host: str | None = None,
        project: str | int | None = None,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        """Use the budget file at ``path``; ``host``/``project`` are written into it for people."""
        self.path = Path(path)
        self.host = _normalize_host(host) if host is not None else None
        self.project = _project_text(project) if project is not None else None
        self.retention = retention
        self._lock = threading.Lock()
        # Timestamps this instance already knows (loaded, recorded or reported
        # as foreign), as a multiset: two starts can share one wall time on
        # coarse clocks, and must both count.
        self._seen: Counter[float] = Counter()
        self._warned = False

    @classmethod
    def for_project(cls, host: str, project: str | int | None, folder: Path) -> HourlyState:
        """The state of ``project`` on API ``host`` at its default path in ``folder``."""
        return cls(default_path(host, project, folder), host=host, project=project)

    def _fresh(self, starts: list[float], now: float) -> list[float]:
        # Entries far in the future come from a clock that was set back a lot;
        # they are dropped rather than blocking the budget for hours.
        return sorted(t for t in starts if now - self.retention < t <= now + self.retention)

    def _read(self, now: float) -> list[float]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._warn(f"read {self.path}", exc, _NOT_READ)
            return []
        return self._fresh(_parse_starts(raw), now)

    def _warn(self, failed: str, exc: OSError, consequence: str) -> None:
        # Once per instance, which is once per run: a read-only state dir
        # would otherwise warn on every single request.
        if not self._warned:
            self._warned = True
            why = exc.strerror or str(exc) or type(exc).__name__
            log.warning("query budget not persisted: cannot %s (%s); %s", failed, why,
                        consequence)

    def load(self, now: float | None = None) -> list[float]:
        """The starts (wall-clock timestamps, sorted) recorded in the last hour.

        A missing, unreadable or corrupt file counts as no starts.
        """
        now = time.time() if now is None else now
        with self._lock:
            starts = self._read(now)
            self._seen = Counter(starts)
            return starts

    def record(self, ts: float) -> list[float]:
        """Add a start at wall time ``ts``; returns starts by *other* processes found meanwhile.

        The returned timestamps appeared in the file since this instance last
        looked (another run recorded them); the limiter counts them too.
        Never raises on I/O problems: persistence is best effort.
        """
        found: list[float] = []

        def take(foreign: Sequence[float]) -> float:
            found.extend(foreign)
            return ts

        self.claim(ts, take)
        return found

    def claim(self, now: float, decide: Callable[[Sequence[float]], float | None]) -> float | None:
        """Decide on a start while no other run can record one; record it if granted.

        Under the file lock, ``decide(foreign)`` is called once with the starts
        (wall times, sorted) other processes recorded since this instance last
        looked; it returns the wall time of a start to record, or None to
        record nothing. What it returned is returned. ``now`` (wall time)
        decides which entries of the file are fresh. ``decide`` runs under the
        lock: it must be quick and must not wait.

        Never raises on I/O problems: if the file cannot be locked or read,
        ``decide([])`` still runs (this process then paces on its own, as
        without a state file) and one warning per instance says so.
        """
        with self._lock:
            lock_path = self.path.with_name(self.path.name + ".lock")
            failed = f"create the directory {self.path.parent}"
            decided = False
            ts: float | None = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                failed = f"lock {lock_path}"
                with _file_lock(lock_path):
                    on_disk = self._read(now)
                    foreign = Counter(on_disk) - self._seen
                    # Now every start on disk is in _seen, so _seen plus a
                    # granted start is the merged content.
                    self._seen.update(foreign)
                    ts = decide(sorted(foreign.elements()))
                    decided = True
                    if ts is not None:
                        self._seen[ts] += 1
                        failed = f"write {self.path}"
                        self._write(self._fresh(list(self._seen.elements()), ts))
            except OSError as exc:
                if exc.filename2 is not None:
                    # Only os.replace names two files: the temp file was
                    # written, moving it over the state file failed.
                    failed = f"replace {self.path}"
                self._warn(failed, exc, _NOT_SAVED)
                if not decided:
                    ts = decide([])
                    if ts is not None:
                        # Kept, so a later write that succeeds still saves it.
                        self._seen[ts] += 1
            # Forget what fell out of the window so memory stays bounded.
            cutoff = (now if ts is None else max(now, ts)) - self.retention
            for old in [t for t in self._seen if t <= cutoff]:
                del self._seen[old]
            return ts

    def forget(self, ts: float, now: float) -> None:
        """Take back the start recorded at wall time ``ts``: it never reached the server.

        One occurrence is removed, under the file lock, keeping every start
        other processes recorded meanwhile; ``now`` (wall time) decides which
        entries are fresh, as in :meth:`claim`. Best effort, like every write
        here: a failure warns once and the start stays in the file (it then
        counts when it need not: too many, never too few). Another run that
        had already read the start may write it back with its next one: the
        same, safe, overcount.
        """
        with self._lock:
            if self._seen[ts] <= 0:
                return  # already fallen out of the window
            lock_path = self.path.with_name(self.path.name + ".lock")
            failed = f"lock {lock_path}"
            taken = False
            try:
                with _file_lock(lock_path):
                    # What others recorded first: the start itself is on disk
                    # and in _seen, so it is not taken for a foreign one.
                    foreign = Counter(self._read(now)) - self._seen
                    self._seen.update(foreign)
                    self._seen[ts] -= 1
                    taken = True
                    failed = f"write {self.path}"
                    self._write(self._fresh(list(self._seen.elements()), now))
            except OSError as exc:
                if exc.filename2 is not None:
                    failed = f"replace {self.path}"  # see claim
                self._warn(failed, exc, _NOT_FORGOTTEN)
                if not taken:
                    # Not in the file's next write either, should one succeed.
                    self._seen[ts] -= 1
            self._seen += Counter()  # drops the count that fell to zero

    def _write(self, starts: list[float]) -> None:
        body = {
            "version": FORMAT_VERSION,
            "host": self.host,
            "project": self.project,
            "starts": starts,
        }
        # Not durable: a crash may lose the last few entries (the server's
        # 429 then covers it), but a reader never sees a torn file.
        write_atomically(self.path, json.dumps(body).encode("utf-8"))
