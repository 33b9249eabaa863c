"""A sync remembers the range it was asked for: cut-short first runs, cron lines with --from.

Each test ends with the store exact from the first ``--from`` to ``--to``, and
no sync exits 0 while a day of that range is missing.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import Dataset
from mpexport.sinks.lake.lock import LakeLock
from mpexport.sinks.lake.store import open_store
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    fetched_days,
    run_cli,
    service_account_env,
    stored_keys,
    wait_until,
)
from tests.s3server import S3Server

D = dt.date(2024, 3, 2)  # the first --from


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


def days(first: int, last: int) -> set[dt.date]:
    return {day(i) for i in range(first, last + 1)}


def lake_keys(folder: Path) -> list[tuple[str, str, int, str]]:
    if not any(folder.glob("*/*.parquet")):
        return []
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id "
            f"FROM read_parquet('{folder}/*/*.parquet')").fetchall()
    return [(e, d, t, i) for e, d, t, i in rows]


def store_args(kind: str, path: Path) -> list[str]:
    return ["--db", str(path)] if kind == "db" else ["--parquet", str(path)]


def stored(kind: str, path: Path) -> list[tuple[str, str, int, str]]:
    return stored_keys(path) if kind == "db" else lake_keys(path)


def sync(url: str, kind: str, path: Path, *args: str) -> int:
    """``mpexport sync`` with one-day chunks and no retries; the exit code."""
    result = run_cli(["sync", "--api-url", url, *store_args(kind, path), "--chunk-days", "1",
                      "--retries", "0", *args])
    assert "Traceback" not in result.stderr
    return result.code


def assert_exact(kind: str, path: Path, dataset: Dataset, last: int) -> None:
    keys = stored(kind, path)
    assert len(keys) == len(set(keys)), "an event is stored twice"
    assert set(keys) == mixpanel_keys(dataset.lines_for_range(D, day(last)))


@pytest.fixture(params=["db", "lake"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    kind = str(request.param)
    yield kind, tmp_path / ("events.duckdb" if kind == "db" else "lake")


def test_a_first_sync_whose_first_day_fails_is_completed_by_later_syncs(
    make_server: ServerFactory, store: tuple[str, Path]
) -> None:
    kind, path = store
    dataset = Dataset(seed=81, events_per_day=40)
    failing = make_server(dataset, fail_dates=frozenset({D}))
    assert sync(failing.url, kind, path, "--from", D.isoformat(), "--to", day(5).isoformat()) == 1
    assert set(stored(kind, path)) == mixpanel_keys(dataset.lines_for_range(day(1), day(5)))

    # The cron line, no --from: the first day is still asked for, and still failing.
    again = make_server(dataset, fail_dates=frozenset({D}))
    assert sync(again.url, kind, path, "--to", day(5).isoformat()) == 1
    assert D in fetched_days(again)

    healed = make_server(dataset)
    assert sync(healed.url, kind, path, "--to", day(6).isoformat(), "--lookback", "2") == 0
    # The missing first day, the lookback window, the new day: not the settled days.
    assert fetched_days(healed) == {D} | days(3, 6)
    assert_exact(kind, path, dataset, 6)


class FirstDayHeld(HeldDataset):
    """Holds only responses that include the first day (``hold_from``) mid-body."""

    def iter_range(self, from_date: dt.date, to_date: dt.date, *args: Any,
                   **kwargs: Any) -> Iterator[list[bytes]]:
        if from_date > self.hold_from:
            return Dataset.iter_range(self, from_date, to_date, *args, **kwargs)
        return super().iter_range(from_date, to_date, *args, **kwargs)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (SIGKILL)")
def test_a_first_sync_killed_after_later_days_committed_is_completed_by_a_plain_sync(
    make_server: ServerFactory, store: tuple[str, Path]
) -> None:
    kind, path = store
    last = 9
    dataset = FirstDayHeld(seed=82, events_per_day=300, hold_from=D)
    server = make_server(dataset, **HOLD_SERVER)
    args = ["sync", "--api-url", server.url, *store_args(kind, path), "--from", D.isoformat(),
            "--to", day(last).isoformat(), "--chunk-days", "1", "--workers", "2"]
    # A killed run holds a lake until its lease runs out: a short one here.
    env = clean_env({**service_account_env(), "MPEXPORT_LAKE_LEASE_SECONDS": "1"})
    proc = subprocess.Popen([*cli_command(), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # One worker is inside the first day; the other fetched every later
        # day. It takes a day only with a spool slot, which the loader gives
        # back once it committed one: so days were committed after the first.
        dataset.wait_held(1)
        wait_until(lambda: fetched_days(server) >= days(0, last),
                   "every later day to be asked for", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    finally:
        dataset.release()
    kept = {dt.datetime.fromtimestamp(t, dt.UTC).date() for _e, _d, t, _i in stored(kind, path)}
    assert D not in kept and kept, "the run was killed after a later day committed"

    server.stats.clear()
    assert sync(server.url, kind, path, "--to", day(last).isoformat(),
                "--wait-lock", str(PATIENCE)) == 0
    assert D in fetched_days(server)
    assert_exact(kind, path, dataset, last)


def test_a_cron_line_with_a_fixed_from_reads_only_the_lookback(
    make_server: ServerFactory, store: tuple[str, Path]
) -> None:
    kind, path = store
    dataset = Dataset(seed=83, events_per_day=3)
    server = make_server(dataset)
    last = 59
    cron = ("--from", D.isoformat(), "--to", day(last).isoformat(), "--lookback", "5")
    assert sync(server.url, kind, path, *cron) == 0
    assert fetched_days(server) == days(0, last)
    for _run in range(2):
        server.stats.clear()
        assert sync(server.url, kind, path, *cron) == 0
        # The 5 days before the newest, and the newest: 6 requests, not 60.
        assert fetched_days(server) == days(last - 5, last)
        assert len(server.stats.queries()) == 6
    assert_exact(kind, path, dataset, last)

    # An earlier --from extends the range: only the new early days, and the lookback.
    server.stats.clear()
    assert sync(server.url, kind, path, "--from", day(-3).isoformat(),
                "--to", day(last).isoformat(), "--lookback", "5") == 0
    assert fetched_days(server) == days(-3, -1) | days(last - 5, last)
    # ... and is recorded: the next plain sync keeps those days in its range.
    server.stats.clear()
    assert sync(server.url, kind, path, "--to", day(last).isoformat(), "--lookback", "5",
                "--refresh") == 0
    assert fetched_days(server) == days(-3, last)
    keys = stored(kind, path)
    assert set(keys) == mixpanel_keys(dataset.lines_for_range(day(-3), day(last)))
    assert len(keys) == len(set(keys))


def test_a_dry_run_plans_the_missing_days_and_records_nothing(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=84, events_per_day=10)
    db = tmp_path / "events.duckdb"
    failing = make_server(dataset, fail_dates=frozenset({day(1)}))
    assert sync(failing.url, "db", db, "--from", D.isoformat(), "--to", day(4).isoformat()) == 1

    server = make_server(dataset)
    before = db.read_bytes()
    # An earlier --from in a dry run: planned, not recorded.
    plan = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--to",
                    day(4).isoformat(), "--from", day(-2).isoformat(), "--dry-run"])
    assert plan.code == 0, plan.stderr
    assert day(-2).isoformat() in plan.stdout.decode()
    assert db.read_bytes() == before and len(server.stats) == 0
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT from_date FROM _mpexport_sync").fetchall() == [(D,)]
    assert sync(server.url, "db", db, "--to", day(4).isoformat()) == 0
    assert day(1) in fetched_days(server) and day(-2) not in fetched_days(server)


def test_a_later_from_moves_the_start_and_says_so(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=85, events_per_day=5)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    assert sync(server.url, "db", db, "--from", D.isoformat(), "--to", day(3).isoformat()) == 0
    moved = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--from",
                     day(2).isoformat(), "--to", day(3).isoformat()])
    assert moved.code == 0, moved.stderr
    assert (f"this sync's range now starts at {day(2).isoformat()} (it started at "
            f"{D.isoformat()})") in moved.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT from_date FROM _mpexport_sync").fetchall() == [(day(2),)]


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_lake_dry_run_plans_from_the_manifest_and_writes_nothing(
    make_server: ServerFactory, tmp_path: Path, s3_server: S3Server, where: str
) -> None:
    dataset = Dataset(seed=86, events_per_day=10)
    failing = make_server(dataset, fail_dates=frozenset({day(1)}))
    lake = str(tmp_path / "lake") if where == "folder" else s3_server.url()
    env = s3_server.env() if where == "s3" else {}
    first = run_cli(["sync", "--api-url", failing.url, "--parquet", lake, "--from", D.isoformat(),
                     "--to", day(4).isoformat(), "--chunk-days", "1", "--retries", "0"], env=env)
    assert first.code == 1, first.stderr

    def snapshot() -> dict[str, bytes]:
        return folder_files(tmp_path / "lake") if where == "folder" else s3_server.objects()

    server = make_server(dataset)
    holder = None
    if where == "folder":
        # A sync holds the lake meanwhile: a dry run plans all the same.
        holder = LakeLock(open_store(lake))
        holder.acquire()
    try:
        before = snapshot()
        plan = run_cli(["sync", "--api-url", server.url, "--parquet", lake, "--to",
                        day(4).isoformat(), "--dry-run"], env=env)
        assert plan.code == 0, plan.stderr
        assert snapshot() == before
    finally:
        if holder is not None:
            holder.release()
    before = snapshot()
    assert plan.stdout.decode().count(day(1).isoformat()) >= 1
    assert snapshot() == before and len(server.stats) == 0
    # A new folder is not made by a dry run either.
    missing = tmp_path / "new-lake"
    plan = run_cli(["sync", "--api-url", server.url, "--parquet", str(missing), "--from",
                    D.isoformat(), "--to", day(1).isoformat(), "--dry-run"])
    assert plan.code == 0, plan.stderr
    assert not missing.exists()
