"""What tests share: the CLI runner, environments, expected output, and ways to wait.

A plain module (tests import it: ``from tests.helpers import ...``); the
fixtures live in ``conftest.py``.

The CLI runs as a subprocess. ``MPEXPORT_TEST_COMMAND`` (shell words) replaces
``python -m mpexport``, so the same tests can run against a frozen build.

No test sleeps for a while and then asserts what another thread or process
got done meanwhile: it waits for an observable condition (``wait_until``), an
event, or a point the server reached (``HeldDataset``), with a generous
deadline that only guards against a hang.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpexport.fakeserver import (
    DEMO_API_SECRET,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    FakeMixpanelServer,
)

# A fixed "today" keeps ranges and the server's future-date check stable.
TODAY = dt.date(2024, 6, 30)
SECRET_MARKERS = (DEMO_SECRET, DEMO_API_SECRET)

# How long a test waits for something that should happen: only a guard
# against a hang, never a statement about speed (timings live in `make bench`).
PATIENCE = 60.0


def cli_command() -> list[str]:
    """The command that runs mpexport: the test override or ``python -m mpexport``."""
    override = os.environ.get("MPEXPORT_TEST_COMMAND")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "mpexport"]


def service_account_env() -> dict[str, str]:
    """Environment with the demo service account."""
    return {
        "MP_USERNAME": DEMO_USERNAME,
        "MP_SECRET": DEMO_SECRET,
        "MP_PROJECT_ID": str(DEMO_PROJECT_ID),
    }


# The built-in server enforces no limits unless a test asks it to, so the
# client's pacing is lifted too unless a test sets it.
UNPACED = {"MPEXPORT_QPS_LIMIT": "1000", "MPEXPORT_HOURLY_LIMIT": "1000000"}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the user's MP_*/MPEXPORT_* settings, plus ``extra``.

    Keeps the per-test state dir; lifts client pacing unless ``extra`` sets it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MP_", "MPEXPORT_"))}
    env["PYTHONUTF8"] = "1"
    env["MPEXPORT_STATE_DIR"] = os.environ["MPEXPORT_STATE_DIR"]
    env["MPEXPORT_CONFIG_DIR"] = os.environ["MPEXPORT_CONFIG_DIR"]
    env.update(UNPACED)
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    """What a CLI run left behind."""

    code: int
    stdout: bytes
    stderr: str

    def lines(self) -> list[bytes]:
        return self.stdout.splitlines(keepends=True)


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    credentials: bool = True,
    timeout: float = 120,
    cwd: Path | None = None,
) -> CliResult:
    """Run the CLI to completion and capture both streams."""
    extra = service_account_env() if credentials else {}
    extra.update(env or {})
    proc = subprocess.run(
        [*cli_command(), *args],
        env=clean_env(extra),
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


ServerFactory = Callable[..., FakeMixpanelServer]


def expected_stdout(dataset: Dataset, chunks: Sequence[tuple[dt.date, dt.date]]) -> bytes:
    """The exact bytes an export of these chunks writes: chunk by chunk, in order."""
    return b"".join(b"".join(dataset.lines_for_range(a, b)) for a, b in chunks)


def day_chunks(start: dt.date, end: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    """The (from, to) pairs of a plan with ``days`` per chunk."""
    pairs = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + dt.timedelta(days=days - 1))
        pairs.append((cursor, last))
        cursor = last + dt.timedelta(days=1)
    return pairs


def fetched_days(server: object) -> set[dt.date]:
    """Every day the built-in server was asked for, over all its export queries."""
    days: set[dt.date] = set()
    for q in server.stats.queries():  # type: ignore[attr-defined]
        day = dt.date.fromisoformat(q["from_date"])
        while day <= dt.date.fromisoformat(q["to_date"]):
            days.add(day)
            day += dt.timedelta(days=1)
    return days


def stored_keys(db: Path, table: str = "events") -> list[tuple[str, str, int, str]]:
    """Mixpanel keys (event, distinct_id, epoch seconds, $insert_id) of a table's rows."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            f"SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM {table}"
        ).fetchall()
    return [(e, d, t, i) for e, d, t, i in rows]


# -- waiting for what other threads and processes did ---------------------------------


def wait_until(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = PATIENCE,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    """Poll until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds.

    With ``proc``, also fail at once if that process ended first (it can no
    longer bring the condition about). The timeout is a guard against a hang,
    not a measurement.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            if condition():
                return
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


class HeldDataset(Dataset):
    """A ``Dataset`` whose responses for days from ``hold_from`` on stop mid-body.

    The server sends the first part of such a response (all but its last
    line, in slices: give the server ``HOLD_SERVER``, a small ``slice_bytes``
    and no gzip, so that the part leaves the server at once; a held day must
    be larger than a slice), then holds the rest until ``release()``. A test
    can so stop, kill or race a run at a known point: ``held`` counts
    responses stopped mid-body now; no response for a held day can complete
    before ``release()``.

    Only the server's streaming path (``iter_range``) is held;
    ``lines_for_range`` and ``lines_for_day`` answer at once, so a test can
    compute expected output while responses are held.
    """

    def __init__(self, *args: Any, hold_from: dt.date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_from = hold_from
        self._released = threading.Event()
        self._hold_cond = threading.Condition()
        self._held = 0
        self._ever_held = 0

    @property
    def held(self) -> int:
        """Responses stopped mid-body right now."""
        with self._hold_cond:
            return self._held

    @property
    def ever_held(self) -> int:
        """Responses that were stopped mid-body at some point."""
        with self._hold_cond:
            return self._ever_held

    def wait_held(self, count: int, timeout: float = PATIENCE) -> None:
        """Wait until ``count`` responses are stopped mid-body at once."""
        with self._hold_cond:
            ok = self._hold_cond.wait_for(lambda: self._held >= count, timeout=timeout)
        assert ok, f"only {self.held} of {count} responses reached the hold point"

    def release(self) -> None:
        """Let every held response (and every later one) finish."""
        self._released.set()

    def lines_for_range(self, *args: Any, **kwargs: Any) -> list[bytes]:
        out: list[bytes] = []
        for batch in Dataset.iter_range(self, *args, **kwargs):
            out.extend(batch)
        return out

    def iter_range(
        self, from_date: dt.date, to_date: dt.date, *args: Any, **kwargs: Any
    ) -> Iterator[list[bytes]]:
        batches = Dataset.iter_range(self, from_date, to_date, *args, **kwargs)
        if to_date < self.hold_from or self._released.is_set():
            yield from batches
            return
        lines = [line for batch in batches for line in batch]
        if len(lines) < 2:
            raise AssertionError(f"{from_date}..{to_date}: too few lines to hold mid-body")
        yield lines[:-1]
        # The server asks for more only after it has written the slices of the
        # part above: the response is mid-body now.
        with self._hold_cond:
            self._held += 1
            self._ever_held += 1
            self._hold_cond.notify_all()
        try:
            # Bounded, so that a failed test never leaves a server thread behind.
            self._released.wait(timeout=10 * PATIENCE)
        finally:
            with self._hold_cond:
                self._held -= 1
                self._hold_cond.notify_all()
        yield lines[-1:]


# Server settings that make a HeldDataset's first part leave the server at once.
HOLD_SERVER = {"slice_bytes": 4096, "gzip_threshold": 1 << 40}


def pids_holding_open(path: Path) -> set[int]:
    """Processes that have ``path`` open (Linux: read from ``/proc``)."""
    target = os.path.realpath(path)
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    pids.add(int(entry.name))
                    break
            except OSError:
                continue
    return pids


CAN_SEE_OPEN_FILES = sys.platform.startswith("linux") and Path("/proc/self/fd").is_dir()
