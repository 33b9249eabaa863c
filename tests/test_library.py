"""The library API: what a Python user gets from ``mpexport.export``."""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from pathlib import Path

import pytest

import mpexport
from mpexport.errors import CredentialsError, UsageError
from mpexport.events import ChunkDone, ChunkRetry, PlanReady
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.transport import FetchSettings
from tests.helpers import ServerFactory

CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
FAST = FetchSettings(backoff_base=0.01, backoff_cap=0.05)


def test_export_returns_result_and_reports_progress(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=4, events_per_day=60, quiet_every=4)
    server = make_server(dataset, faults=("reset", "gzip_cut"))
    out = io.BytesIO()
    events: list[object] = []
    result = mpexport.export(
        dt.date(2024, 4, 1), "2024-04-20", output=out, credentials=CREDS, chunk_days=5,
        workers=3, api_url=server.url, progress=events.append, settings=FAST,
    )
    expected = dataset.lines_for_range(dt.date(2024, 4, 1), dt.date(2024, 4, 20))
    assert Counter(out.getvalue().splitlines(keepends=True)) == Counter(expected)
    assert result.ok and result.events == len(expected) and result.chunks_total == 4
    assert [c.chunk.index for c in result.completed] == [0, 1, 2, 3]
    assert all(c.attempts == 2 for c in result.completed)  # each chunk faulted once
    assert isinstance(events[0], PlanReady)
    assert sum(isinstance(e, ChunkDone) for e in events) == 4
    assert sum(isinstance(e, ChunkRetry) for e in events) == 4


def test_failed_ranges_in_result(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=4, events_per_day=10),
                         fail_dates=frozenset({dt.date(2024, 4, 3)}))
    result = mpexport.export(
        "2024-04-01", "2024-04-09", output=io.BytesIO(), credentials=CREDS, chunk_days=3,
        api_url=server.url, retries=1, settings=FetchSettings(backoff_base=0.01),
    )
    assert not result.ok
    assert [f.chunk.label() for f in result.failed] == ["2024-04-01..2024-04-03"]
    assert len(result.completed) == 2


def test_credentials_error_is_typed(make_server: ServerFactory) -> None:
    server = make_server()
    with pytest.raises(CredentialsError):
        mpexport.export("2024-04-01", "2024-04-02", output=io.BytesIO(), api_url=server.url,
                        credentials=Credentials(api_secret="nope"))


def test_usage_error_before_any_request(make_server: ServerFactory) -> None:
    server = make_server()
    with pytest.raises(UsageError):
        mpexport.export("2024-04-02", "2024-04-01", output=io.BytesIO(), api_url=server.url,
                        credentials=CREDS)
    assert len(server.stats) == 0


def test_credentials_repr_hides_secrets() -> None:
    assert DEMO_SECRET not in repr(CREDS)
    assert "xyz" not in repr(Credentials(api_secret="xyz"))


def test_sync_library_call(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=49, events_per_day=20)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    result, stats = mpexport.sync(db, from_date="2024-06-01", to_date="2024-06-10",
                                  credentials=CREDS, api_url=server.url, qps_limit=100,
                                  hourly_limit=10_000)
    assert result.ok and stats.rows_inserted > 0
    dataset.add_late_events(dt.date(2024, 6, 9), 3)
    result, stats = mpexport.sync(db, to_date="2024-06-12", credentials=CREDS,
                                  api_url=server.url, qps_limit=100, hourly_limit=10_000)
    assert result.ok and stats.late_rows == 3


def test_spool_stays_bounded_while_a_slow_head_chunk_holds_stdout(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # The first day fails (and is retried with backoff) while later days
    # arrive: stdout must wait for it, and the waiting chunks must not pile up
    # on disk beyond the workers plus a small queue.
    dataset = Dataset(seed=50, events_per_day=30)
    server = make_server(dataset, fail_dates=frozenset({dt.date(2024, 4, 1)}))
    spool = tmp_path / "spool"
    spool.mkdir()
    most = 0

    def watch(_event: object) -> None:
        nonlocal most
        most = max(most, sum(1 for _ in spool.rglob("*.ndjson")))

    result = mpexport.export(
        "2024-04-01", "2024-04-30", output=io.BytesIO(), credentials=CREDS, chunk_days=1,
        workers=2, api_url=server.url, progress=watch, spool_dir=spool, qps_limit=100,
        hourly_limit=10_000, retries=3, settings=FetchSettings(backoff_base=0.3),
    )
    assert [f.chunk.label() for f in result.failed] == ["2024-04-01"]
    assert len(result.completed) == 29
    assert 0 < most <= 2 + 4


def test_reader_gone_on_posix_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from mpexport import errors
    from mpexport.errors import reader_gone

    assert reader_gone(BrokenPipeError())
    assert not reader_gone(OSError(errno.ENOSPC, "disk full"))
    assert not reader_gone(OSError(errno.EINVAL, "Invalid argument"))
    monkeypatch.setattr(errors, "ON_WINDOWS", True)
    assert reader_gone(OSError(errno.EINVAL, "Invalid argument"))
