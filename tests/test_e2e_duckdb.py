"""End to end into DuckDB: exact rows, re-runs, overlaps, replace, SIGKILL and resume."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import FAULT_KINDS, Dataset
from mpexport.pipeline import SPOOL_QUEUE
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    run_cli,
    service_account_env,
    stored_keys,
)

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 20)
Key = tuple[str, str, int, str]


def db_args(url: str, db: Path, start: dt.date = START, end: dt.date = END,
            *extra: str) -> list[str]:
    return ["export", "--api-url", url, "--from", start.isoformat(), "--to", end.isoformat(),
            "--db", str(db), *extra]


def assert_exact(db: Path, lines: Iterable[bytes]) -> None:
    keys = stored_keys(db)
    assert len(keys) == len(set(keys)), "a Mixpanel key is stored twice"
    assert set(keys) == mixpanel_keys(lines)


def fetched_ranges(server: object) -> set[tuple[str, str]]:
    stats = server.stats  # type: ignore[attr-defined]
    return {(q["from_date"], q["to_date"]) for q in stats.queries()}


def test_exact_table_with_faults_then_reruns_add_nothing(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=21, events_per_day=150, quiet_every=6)
    server = make_server(dataset, faults=FAULT_KINDS)
    db = tmp_path / "events.duckdb"
    first = run_cli(db_args(server.url, db, START, END, "--chunk-days", "4"))
    assert first.code == 0, first.stderr
    assert first.stdout == b""
    assert_exact(db, dataset.lines_for_range(START, END))
    assert " already stored" in first.stderr

    # The same command again: every chunk is in the manifest, nothing is fetched.
    server.stats.clear()
    again = run_cli(db_args(server.url, db, START, END, "--chunk-days", "4"))
    assert again.code == 0, again.stderr
    assert len(server.stats) == 0
    assert "5 already loaded" in again.stderr

    # An overlapping, longer range on another grid: only the new days are
    # fetched whole-chunk, and nothing is duplicated.
    later = END + dt.timedelta(days=6)
    overlap = run_cli(db_args(server.url, db, START + dt.timedelta(days=10), later,
                              "--chunk-days", "3"))
    assert overlap.code == 0, overlap.stderr
    assert_exact(db, dataset.lines_for_range(START, later))


def test_refresh_refetches_and_adds_only_late_events(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=22, events_per_day=80)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    assert run_cli(db_args(server.url, db)).code == 0
    dataset.add_late_events(START + dt.timedelta(days=3), 7)
    result = run_cli(db_args(server.url, db, START, END, "--refresh"))
    assert result.code == 0, result.stderr
    assert_exact(db, dataset.lines_for_range(START, END))
    assert "loaded 7 events" in result.stderr


def test_replace_swaps_days_for_what_the_server_holds_now(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "events.duckdb"
    old = Dataset(seed=23, events_per_day=60)
    server = make_server(old)
    assert run_cli(db_args(server.url, db)).code == 0
    # Upstream data changed (deleted and re-imported): another dataset.
    new = Dataset(seed=24, events_per_day=40)
    server2 = make_server(new)
    middle = (START + dt.timedelta(days=7), START + dt.timedelta(days=13))
    result = run_cli(db_args(server2.url, db, *middle, "--replace", "--chunk-days", "7"))
    assert result.code == 0, result.stderr
    expected = (
        old.lines_for_range(START, middle[0] - dt.timedelta(days=1))
        + new.lines_for_range(*middle)
        + old.lines_for_range(middle[1] + dt.timedelta(days=1), END)
    )
    assert_exact(db, expected)
    assert "replaced" in result.stderr


def test_properties_round_trip_losslessly(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=25, events_per_day=100)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    assert run_cli(db_args(server.url, db, START, START + dt.timedelta(days=2))).code == 0
    source = {}
    for line in dataset.lines_for_range(START, START + dt.timedelta(days=2)):
        record = json.loads(line)
        p = record["properties"]
        source[(record["event"], p["distinct_id"], p["time"], p["$insert_id"])] = p
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id, properties, "
            "mp_processing_time_ms FROM events"
        ).fetchall()
    assert len(rows) == len(source)
    for event, distinct_id, seconds, insert_id, properties, processing in rows:
        original = source[(event, distinct_id, seconds, insert_id)]
        assert json.loads(properties) == original
        assert processing == original.get("mp_processing_time_ms")


def test_parquet_dataset_matches_table(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=26, events_per_day=50)
    server = make_server(dataset)
    db, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    result = run_cli(db_args(server.url, db, START, START + dt.timedelta(days=5),
                             "--parquet", str(out)))
    assert result.code == 0, result.stderr
    assert sorted(p.parent.name for p in out.glob("*/*.parquet")) == [
        f"date={(START + dt.timedelta(days=i)).isoformat()}" for i in range(6)
    ]
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT event, distinct_id, epoch(time)::BIGINT, insert_id "
            f"FROM read_parquet('{out}/*/*.parquet', hive_partitioning=true)"
        ).fetchall()
    assert sorted(rows) == sorted(stored_keys(db))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (SIGKILL)")
def test_sigkill_leaves_whole_days_and_rerun_resumes(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    hold_from = START + dt.timedelta(days=20)
    dataset = HeldDataset(seed=27, events_per_day=300, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    db = tmp_path / "events.duckdb"
    end = START + dt.timedelta(days=39)
    workers = 4
    args = db_args(server.url, db, START, end, "--chunk-days", "1", "--workers", str(workers))
    proc = subprocess.Popen([*cli_command(), *args], env=clean_env(service_account_env()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill while every worker is inside a held response (days 20-23). (The
        # database cannot be peeked at: the writer holds its lock.) A worker
        # takes a day only with a spool slot (workers + SPOOL_QUEUE of them)
        # and the loader gives a slot back once it committed its day: so at
        # least 24 - 8 days are committed now, and no held day can be.
        dataset.wait_held(workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    finally:
        dataset.release()

    with duckdb.connect(str(db), read_only=True) as con:
        loaded = [
            (row[0], row[1])
            for row in con.execute("SELECT from_date, to_date FROM _mpexport_chunks").fetchall()
        ]
    assert len(loaded) >= 20 + workers - (workers + SPOOL_QUEUE)
    assert all(last < hold_from for _, last in loaded)
    # Every stored day is whole and exact; no day is half there.
    per_day: dict[dt.date, set[Key]] = {}
    for key in stored_keys(db):
        day = dt.datetime.fromtimestamp(key[2], dt.UTC).date()
        per_day.setdefault(day, set()).add(key)
    for day, keys in per_day.items():
        assert (day, day) in loaded
        assert keys == mixpanel_keys(dataset.lines_for_day(day))

    server.stats.clear()
    rerun = run_cli(args)
    assert rerun.code == 0, rerun.stderr
    assert_exact(db, dataset.lines_for_range(START, end))
    refetched = fetched_ranges(server)
    assert not refetched & {(a.isoformat(), b.isoformat()) for a, b in loaded}
    assert len(refetched) == 40 - len(loaded)
