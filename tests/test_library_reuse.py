"""The library called again and again in one process: no thread, file or state outlives a run.

A notebook, an Airflow worker or a web service calls ``mpexport.export()``
many times. Every run below is followed by the same checks: no thread whose
name starts with "mpexport" is alive, and the spool directory is empty.
Runs are stopped at known points (a progress callback that waits until the
server holds responses mid-body, then sets ``cancel``): no sleeps, and no
assertion about how long anything took.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

import mpexport
from mpexport.cli.demo import mixpanel_keys
from mpexport.errors import CredentialsError, Interrupted
from mpexport.events import ChunkDone, ProgressEvent
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.interrupt import CANCELLED, InterruptGuard
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.transport import FetchSettings
from tests.helpers import (
    HOLD_SERVER,
    HeldDataset,
    ServerFactory,
    day_chunks,
    expected_stdout,
    stored_keys,
)

CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
FAST = FetchSettings(backoff_base=0.01, backoff_cap=0.05)
# The built-in server enforces no limits here: the client's pacing is lifted too.
QPS, HOURLY = 1000.0, 1_000_000
START, END = dt.date(2024, 5, 1), dt.date(2024, 5, 6)
WORKERS = 3


def mpexport_threads() -> list[str]:
    """Names of the live threads mpexport started."""
    return [t.name for t in threading.enumerate() if t.name.startswith("mpexport")]


def assert_nothing_left(spool: Path) -> None:
    """What every run, however it ended, must leave behind: nothing."""
    assert mpexport_threads() == []
    assert list(spool.iterdir()) == []


def cancel_when_held(
    dataset: HeldDataset, cancel: threading.Event, held: int
) -> Callable[[ProgressEvent], None]:
    """A progress callback: at the first chunk done, wait for ``held`` responses held, cancel."""

    def progress(event: ProgressEvent) -> None:
        if isinstance(event, ChunkDone) and not cancel.is_set():
            # Workers are now blocked in reads of responses that never end
            # (until release): only cutting their connections can free them.
            dataset.wait_held(held)
            cancel.set()

    return progress


def test_export_again_and_again_in_one_process(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=71, events_per_day=40)
    server = make_server(dataset)
    held = HeldDataset(seed=72, events_per_day=60, hold_from=START + dt.timedelta(days=1))
    holding = make_server(held, **HOLD_SERVER)
    spool = tmp_path / "spool"
    spool.mkdir()
    expected = expected_stdout(dataset, day_chunks(START, END, 1))

    def export(url: str, credentials: Credentials = CREDS) -> bytes:
        out = io.BytesIO()
        mpexport.export(START, END, output=out, api_url=url, credentials=credentials,
                        chunk_days=1, workers=WORKERS, settings=FAST, spool_dir=spool,
                        qps_limit=QPS, hourly_limit=HOURLY)
        return out.getvalue()

    # 1. A normal run: the exact bytes.
    assert export(server.url) == expected
    assert_nothing_left(spool)

    # 2. Bad credentials: a typed error, the other workers stopped and joined.
    with pytest.raises(CredentialsError):
        export(server.url, credentials=Credentials(api_secret="nope"))
    assert_nothing_left(spool)

    # 3. Cancelled mid-run while every other worker is blocked mid-body.
    cancel = threading.Event()
    out = io.BytesIO()
    try:
        with pytest.raises(Interrupted) as stopped:
            mpexport.export(
                START, END, output=out, api_url=holding.url, credentials=CREDS, chunk_days=1,
                workers=WORKERS, settings=FAST, spool_dir=spool, cancel=cancel,
                progress=cancel_when_held(held, cancel, WORKERS - 1),
                qps_limit=QPS, hourly_limit=HOURLY,
            )
        # Checked while the server still holds its responses: the workers
        # ended because their connections were cut, not because data came.
        assert_nothing_left(spool)
    finally:
        held.release()
    assert stopped.value.signal_name == CANCELLED
    # The first day whole (it was written before the cancel), nothing after it.
    assert out.getvalue() == b"".join(held.lines_for_day(START))
    assert stopped.value.remaining == [(START + dt.timedelta(days=1), END)]
    assert stopped.value.result.interrupted  # type: ignore[attr-defined]

    # 4. A normal run again: nothing of the cancelled run leaks into it.
    assert export(server.url) == expected
    assert_nothing_left(spool)


def test_database_runs_leave_no_loader_and_resume_exactly(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    held = HeldDataset(seed=73, events_per_day=60, hold_from=START + dt.timedelta(days=1))
    server = make_server(held, **HOLD_SERVER)
    spool = tmp_path / "spool"
    spool.mkdir()
    db = tmp_path / "events.duckdb"
    cancel = threading.Event()
    try:
        with pytest.raises(Interrupted):
            mpexport.export(
                START, END, db=db, api_url=server.url, credentials=CREDS, chunk_days=1,
                workers=WORKERS, settings=FAST, spool_dir=spool, cancel=cancel,
                progress=cancel_when_held(held, cancel, WORKERS - 1),
                qps_limit=QPS, hourly_limit=HOURLY,
            )
        assert_nothing_left(spool)
        # A new file the stopped run committed nothing to is not left behind;
        # one it committed to is closed: another connection can open it at once.
        days: set[dt.date] = set()
        if db.exists():
            with duckdb.connect(str(db)) as con:
                days = {row[0] for row in con.execute("SELECT from_date FROM _mpexport_chunks")
                        .fetchall()}
            stored = stored_keys(db)
            assert set(stored) == set().union(
                *(mixpanel_keys(held.lines_for_day(d)) for d in days))
        assert days <= {START}
    finally:
        held.release()

    # The same file again in the same process: the rest, exactly once.
    result = mpexport.export(START, END, db=db, api_url=server.url, credentials=CREDS,
                             chunk_days=1, workers=WORKERS, settings=FAST, spool_dir=spool,
                             qps_limit=QPS, hourly_limit=HOURLY)
    assert result.ok
    assert_nothing_left(spool)
    stored = stored_keys(db)
    assert len(stored) == len(set(stored))
    assert set(stored) == mixpanel_keys(held.lines_for_range(START, END))


def test_a_cancel_ends_the_wait_for_a_locked_database(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    from mpexport.sinks.duckdb.lock import database_lock

    server = make_server(Dataset(seed=74, events_per_day=5))
    db = tmp_path / "events.duckdb"
    cancel = threading.Event()
    cancel.set()
    with database_lock(db), pytest.raises(Interrupted):
        # Without the poll this would wait the whole ten minutes for the lock.
        mpexport.export(START, END, db=db, api_url=server.url, credentials=CREDS,
                        wait_lock=600, cancel=cancel, qps_limit=QPS, hourly_limit=HOURLY)
    assert len(server.stats) == 0
    assert mpexport_threads() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_only_records_the_stop_request() -> None:
    guard = InterruptGuard()
    previous = signal.getsignal(signal.SIGINT)
    with guard.installed():
        os.kill(os.getpid(), signal.SIGINT)
        # Nothing was raised here (the handler ran on the way to this line):
        # the run decides where to stop.
        assert guard.stop_requested() and guard.pending == "SIGINT"
        with pytest.raises(Interrupted) as stopped:
            guard.raise_if_requested()
    assert stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is previous
    assert not InterruptGuard().stop_requested()  # a new run starts with no request


def test_debug_belongs_to_one_cli_invocation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpexport.cli.main import run

    for name in list(os.environ):
        if name.startswith("MP_"):
            monkeypatch.delenv(name)
    args = ["export", "--from", "2024-05-01", "--to", "2024-05-02"]

    def stderr_of(argv: list[str]) -> str:
        assert run(argv) == 3  # no credentials
        return capsys.readouterr().err

    assert "Traceback" in stderr_of([*args, "--debug"])
    assert "Traceback" not in stderr_of(args)
    assert "Traceback" in stderr_of(["--debug", *args])
    assert "Traceback" not in stderr_of(args)
