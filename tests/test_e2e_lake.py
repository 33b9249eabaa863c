"""End to end into a lake: the real CLI, the built-in server and a real S3 server (moto).

Reading back downloads every object and reads the day files with DuckDB's
``read_parquet``, as any engine would read the dataset.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import duckdb
import pytest

import mpexport
from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, FAULT_KINDS, Dataset
from mpexport.mixpanel.credentials import Credentials
from mpexport.model import QueryFilters
from mpexport.sinks.lake.lock import LEASE_VARIABLE, LOCK_KEY
from mpexport.sinks.lake.manifest import MANIFEST_KEY, LakeManifest
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    SECRET_MARKERS,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    fetched_days,
    run_cli,
    service_account_env,
    stored_keys,
)
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, dates, day_partitions

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 20)
Key = tuple[str, str, int, str]


def lake_args(url: str, lake: str, start: dt.date, end: dt.date, *extra: str) -> list[str]:
    return ["export", "--api-url", url, "--from", start.isoformat(), "--to", end.isoformat(),
            "--parquet", lake, *extra]


def span(first: dt.date, last: dt.date) -> set[dt.date]:
    return {first + dt.timedelta(days=n) for n in range((last - first).days + 1)}


def lake_keys(folder: Path) -> list[Key]:
    """Every event of the day files under ``folder``; each must lie in its own partition."""
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id, date, "
            "CAST(time AT TIME ZONE 'UTC' AS DATE) "
            f"FROM read_parquet('{folder.as_posix()}/*/*.parquet', hive_partitioning=true)"
        ).fetchall()
    wrong = [row for row in rows if str(row[4]) != row[5].isoformat()]
    assert not wrong, f"{len(wrong)} events in another day's partition"
    return [(e, d, t, i) for e, d, t, i, _, _ in rows]


def assert_exact(folder: Path, lines: Iterable[bytes]) -> None:
    keys = lake_keys(folder)
    assert len(keys) == len(set(keys)), "an event is in the lake twice"
    assert set(keys) == mixpanel_keys(lines)


def non_quiet(dataset: Dataset, first: dt.date, last: dt.date) -> list[str]:
    return [d for d in dates(first, last)
            if not dataset.is_quiet(dt.date.fromisoformat(d.removeprefix("date=")))]


def test_export_to_s3_with_faults_then_an_overlapping_rerun(
    make_server: ServerFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    dataset = Dataset(seed=61, events_per_day=120, quiet_every=6)
    server = make_server(dataset, faults=FAULT_KINDS)
    lake = s3_server.url()
    summary = tmp_path / "summary.json"
    first = run_cli(lake_args(server.url, lake, START, END, "--chunk-days", "3", "-v",
                              "--summary-json", str(summary)), env=s3_server.env())
    assert first.code == 0, first.stderr
    assert first.stdout == b""
    objects = s3_server.download(tmp_path / "first")
    assert day_partitions(objects) == non_quiet(dataset, START, END)
    assert set(objects) == {"_mpexport/manifest.json",
                            *(f"{d}/data.parquet" for d in day_partitions(objects))}
    assert_exact(tmp_path / "first", dataset.lines_for_range(START, END))
    report = json.loads(summary.read_text())
    assert report["status"] == "complete" and report["output"] == lake
    assert report["lake"] == {"url": lake, "days_written": len(day_partitions(objects))}
    assert report["events"] == len(mixpanel_keys(dataset.lines_for_range(START, END)))
    assert f"to {lake}" in first.stderr
    # No credential anywhere: not in messages (even -v), the summary or the objects.
    for secret in (SECRET_KEY, ACCESS_KEY, *SECRET_MARKERS):
        assert secret not in first.stderr
        assert secret not in summary.read_text()
        assert not any(secret.encode() in body for body in objects.values())

    # An overlapping, longer range: only the days the lake does not hold are fetched.
    server.stats.clear()
    later = END + dt.timedelta(days=6)
    again = run_cli(lake_args(server.url, lake, START + dt.timedelta(days=10), later),
                    env=s3_server.env())
    assert again.code == 0, again.stderr
    assert fetched_days(server) == span(END + dt.timedelta(days=1), later)
    s3_server.download(tmp_path / "again")
    assert_exact(tmp_path / "again", dataset.lines_for_range(START, later))


def test_the_files_read_with_natural_types(
    make_server: ServerFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=62, events_per_day=30))
    result = run_cli(lake_args(server.url, s3_server.url(), START, START), env=s3_server.env())
    assert result.code == 0, result.stderr
    s3_server.download(tmp_path)
    path = tmp_path / f"date={START}" / "data.parquet"
    with duckdb.connect() as con:
        schema = {row[0]: row[1:] for row in con.execute(
            "SELECT name, type, logical_type, converted_type "
            f"FROM parquet_schema('{path.as_posix()}')").fetchall()}
        kinds = dict(con.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path.as_posix()}')"
        ).fetchall())
    # A UTF-8 string, not JSON-annotated bytes (which polars reads as Binary).
    assert schema["properties"][0] == "BYTE_ARRAY" and schema["properties"][2] == "UTF8"
    assert "JSON" not in str(schema["properties"][1])
    assert kinds["properties"] == "VARCHAR"
    assert kinds["time"] == "TIMESTAMP WITH TIME ZONE"  # isAdjustedToUTC
    assert kinds["mp_processing_time_ms"] == "BIGINT"


def test_sync_a_lake_with_lookback(
    make_server: ServerFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    dataset = Dataset(seed=63, events_per_day=60)
    server = make_server(dataset)
    lake = s3_server.url("synced")
    sync = ["sync", "--api-url", server.url, "--parquet", lake]
    first = run_cli([*sync, "--from", "2024-06-01", "--to", "2024-06-20"], env=s3_server.env())
    assert first.code == 0, first.stderr
    assert fetched_days(server) == span(dt.date(2024, 6, 1), dt.date(2024, 6, 20))

    # Late events: one inside the lookback window, one older than it.
    dataset.add_late_events(dt.date(2024, 6, 18), 9)
    dataset.add_late_events(dt.date(2024, 6, 5), 4)
    server.stats.clear()
    summary = tmp_path / "summary.json"
    second = run_cli([*sync, "--to", "2024-06-25", "--summary-json", str(summary)],
                     env=s3_server.env())
    assert second.code == 0, second.stderr
    assert fetched_days(server) == span(dt.date(2024, 6, 15), dt.date(2024, 6, 25))
    report = json.loads(summary.read_text())
    assert report["late_events"] == 9 and "9 late events added" in second.stderr

    s3_server.download(tmp_path / "lake", "synced/")
    before_late = Dataset(seed=63, events_per_day=60)
    assert_exact(tmp_path / "lake", (
        line for day in span(dt.date(2024, 6, 1), dt.date(2024, 6, 25))
        for line in (before_late if day == dt.date(2024, 6, 5) else dataset).lines_for_day(day)
    ))


def test_db_and_lake_hold_the_same_events(
    make_server: ServerFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    dataset = Dataset(seed=64, events_per_day=80)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    args = lake_args(server.url, s3_server.url(), START, START + dt.timedelta(days=5),
                     "--db", str(db))
    result = run_cli(args, env=s3_server.env())
    assert result.code == 0, result.stderr
    dataset.add_late_events(START + dt.timedelta(days=2), 6)
    refresh = run_cli([*args, "--refresh"], env=s3_server.env())
    assert refresh.code == 0, refresh.stderr
    s3_server.download(tmp_path / "lake")
    assert sorted(lake_keys(tmp_path / "lake")) == sorted(stored_keys(db))
    assert_exact(tmp_path / "lake", dataset.lines_for_range(START, START + dt.timedelta(days=5)))
    assert not list(tmp_path.glob(".mpexport-upload-*")), "uploads staged beside the database"

    # The lake keeps its own manifest with --db too: it can go on without the database.
    server.stats.clear()
    end = START + dt.timedelta(days=7)
    alone = run_cli(["sync", "--api-url", server.url, "--parquet", s3_server.url(), "--to",
                     end.isoformat(), "--lookback", "1"], env=s3_server.env())
    assert alone.code == 0, alone.stderr
    assert fetched_days(server) == span(START + dt.timedelta(days=4), end)
    s3_server.download(tmp_path / "alone")
    assert_exact(tmp_path / "alone", dataset.lines_for_range(START, end))


def test_a_local_folder_lake_without_db(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=65, events_per_day=50)
    server = make_server(dataset)
    lake = tmp_path / "lake"
    end = START + dt.timedelta(days=6)
    first = run_cli(lake_args(server.url, str(lake), START, end, "--chunk-days", "2"))
    assert first.code == 0, first.stderr
    assert sorted(p.parent.name for p in lake.glob("*/*.parquet")) == dates(START, end)
    assert (lake / "_mpexport" / "manifest.json").is_file()
    assert_exact(lake, dataset.lines_for_range(START, end))
    assert not list(lake.rglob("*.tmp")), "no temp file left beside the day files"

    server.stats.clear()
    again = run_cli(lake_args(server.url, str(lake), START, end, "--chunk-days", "2"))
    assert again.code == 0, again.stderr
    assert len(server.stats) == 0 and "4 already loaded" in again.stderr


def test_the_library_syncs_a_lake(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=66, events_per_day=40)
    server = make_server(dataset)
    lake = tmp_path / "lake"
    credentials = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET,
                              project_id=DEMO_PROJECT_ID)
    result, load = mpexport.sync(parquet=lake, from_date="2024-06-01", to_date="2024-06-04",
                                 api_url=server.url, credentials=credentials,
                                 qps_limit=1000, hourly_limit=100_000)
    assert result.ok and load.parquet_days == 4
    assert_exact(lake, dataset.lines_for_range(dt.date(2024, 6, 1), dt.date(2024, 6, 4)))


def test_plain_http_endpoint_elsewhere_is_refused(
    make_server: ServerFactory, s3_server: S3Server
) -> None:
    server = make_server(Dataset(seed=67, events_per_day=10))
    env = {**s3_server.env(), "AWS_ENDPOINT_URL": "http://192.0.2.10:9000"}
    for dry in ([], ["--dry-run"]):
        result = run_cli([*lake_args(server.url, s3_server.url(), START, START), *dry], env=env)
        assert result.code == 2, result.stderr
        assert "AWS_ENDPOINT_URL uses plain HTTP" in result.stderr
        assert "Traceback" not in result.stderr and SECRET_KEY not in result.stderr
    assert len(server.stats) == 0


def test_a_missing_bucket_fails_before_fetching(
    make_server: ServerFactory, s3_server: S3Server
) -> None:
    server = make_server(Dataset(seed=68, events_per_day=10))
    result = run_cli(lake_args(server.url, "s3://no-such-bucket/events", START, START),
                     env=s3_server.env())
    assert result.code == 2, result.stderr
    assert "bucket does not exist" in result.stderr and SECRET_KEY not in result.stderr
    assert len(server.stats) == 0


def test_sync_needs_a_db_or_a_lake(tmp_path: Path) -> None:
    result = run_cli(["sync", "--from", "2024-06-01"])
    assert result.code == 2
    assert "--db FILE or --parquet" in result.stderr and "Traceback" not in result.stderr
    lake_only = run_cli(["export", "--from", "2024-06-01", "--to", "2024-06-02", "--parquet",
                         str(tmp_path / "lake"), "--table", "t"])
    assert lake_only.code == 2 and "--table cannot be used with --parquet alone" in (
        lake_only.stderr)


def test_help_never_imports_the_object_store() -> None:
    """``--help`` stays fast: obstore loads only when a URL is used."""
    for command in (["--help"], ["export", "--help"], ["sync", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mpexport", *command],
                              env=clean_env(), capture_output=True, timeout=60, check=True)
        imported = proc.stderr.decode()
        assert "obstore" not in imported and "mpexport.sinks" not in imported
        assert b"--parquet" in proc.stdout or command == ["--help"]


# ------------------------------------------------------------------ two writers, one lake


@dataclass
class LakeUnderTest:
    """A lake on a folder or on the S3 server, and ways to look at it from outside."""

    url: str
    env: dict[str, str]
    folder: Path | None = None
    s3: S3Server | None = None

    def object(self, key: str) -> bytes | None:
        if self.folder is not None:
            path = self.folder.joinpath(*key.split("/"))
            return path.read_bytes() if path.is_file() else None
        assert self.s3 is not None
        return self.s3.objects().get(key)

    def lock(self) -> dict[str, Any] | None:
        data = self.object(LOCK_KEY)
        return None if data is None else cast(dict[str, Any], json.loads(data))

    def manifest(self) -> LakeManifest:
        return LakeManifest.from_bytes(self.object(MANIFEST_KEY), self.url)

    def local(self, target: Path) -> Path:
        """A folder holding the lake's day files (the lake itself, or a download)."""
        if self.folder is not None:
            return self.folder
        assert self.s3 is not None
        self.s3.download(target)
        return target


@pytest.fixture(params=["folder", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakeUnderTest:
    if request.param == "folder":
        return LakeUnderTest(str(tmp_path / "lake"), {}, folder=tmp_path / "lake")
    s3: S3Server = request.getfixturevalue("s3_server")
    return LakeUnderTest(s3.url(), s3.env(), s3=s3)


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*cli_command(), *args], env=clean_env({**service_account_env(),
                                                                    **env}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def read_until(proc: subprocess.Popen[bytes], words: str) -> list[str]:
    """Read ``proc``'s stderr up to a line with ``words``; fail if it ends first."""
    assert proc.stderr is not None
    seen: list[str] = []
    while not any(words in line for line in seen):
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the run ended without saying {words!r}: {seen}")
        seen.append(line.decode("utf-8", "replace"))
    return seen


def test_a_second_writer_exits_4_naming_the_holder(
    make_server: ServerFactory, lake: LakeUnderTest, tmp_path: Path
) -> None:
    end = START + dt.timedelta(days=3)
    dataset = HeldDataset(seed=71, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    first = start_cli(lake_args(server.url, lake.url, START, end, "--chunk-days", "1",
                                "--workers", "2"), lake.env)
    try:
        # Both workers are mid-download: the first run holds the lake.
        dataset.wait_held(2)
        holder = lake.lock()
        assert holder is not None
        second = run_cli(lake_args(server.url, lake.url, START, end, "--event", "Purchase"),
                         env=lake.env)
        assert first.poll() is None
        assert len(server.stats) == 2, "the second run fetched nothing"
    finally:
        dataset.release()
    _, first_err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, first_err.decode()
    assert second.code == 4, second.stderr
    assert lake.url in second.stderr
    assert f"pid {holder['pid']} on {holder['host']}" in second.stderr
    assert holder["command"] == "mpexport export"
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert lake.lock() is None, "released at the end"
    assert_exact(lake.local(tmp_path / "read"), dataset.lines_for_range(START, end))


def test_wait_lock_waits_then_both_runs_events_are_in_the_lake(
    make_server: ServerFactory, lake: LakeUnderTest, tmp_path: Path
) -> None:
    first_end = START + dt.timedelta(days=3)
    second_from, second_to = START + dt.timedelta(days=2), START + dt.timedelta(days=5)
    dataset = HeldDataset(seed=72, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    first = start_cli(lake_args(server.url, lake.url, START, first_end, "--chunk-days", "1",
                                "--workers", "1"), lake.env)
    try:
        dataset.wait_held(1)
        # A narrower run over overlapping days: the one that used to replace
        # the first run's days with its own copy.
        second = start_cli(lake_args(server.url, lake.url, second_from, second_to,
                                     "--event", "Purchase", "--wait-lock", "600", "-v"),
                           lake.env)
        read_until(second, "waiting for the lake's lock")
        assert first.poll() is None
        assert len(server.stats) == 1, "the waiting run fetched nothing"
    finally:
        dataset.release()
    _, first_err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, first_err.decode()
    _, second_err = second.communicate(timeout=PATIENCE)
    assert second.returncode == 0, second_err.decode()
    assert lake.lock() is None
    purchases = dataset.lines_for_range(first_end + dt.timedelta(days=1), second_to,
                                        events=["Purchase"])
    assert purchases
    assert_exact(lake.local(tmp_path / "read"),
                 [*dataset.lines_for_range(START, first_end), *purchases])
    # Both runs' manifest entries survive.
    covered = lake.manifest().covered()
    assert covered == {
        QueryFilters().fingerprint(): span(START, first_end),
        QueryFilters(events=("Purchase",)).fingerprint(): span(second_from, second_to),
    }


def test_a_killed_holder_blocks_the_lake_only_until_its_lease_runs_out(
    make_server: ServerFactory, lake: LakeUnderTest, tmp_path: Path
) -> None:
    end = START + dt.timedelta(days=2)
    dataset = HeldDataset(seed=73, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    args = lake_args(server.url, lake.url, START, end, "--chunk-days", "1", "--workers", "1")
    killed = start_cli(args, {**lake.env, LEASE_VARIABLE: "1"})
    try:
        dataset.wait_held(1)
        holder = lake.lock()
        assert holder is not None and holder["lease_seconds"] == 1
        killed.kill()  # SIGKILL: nothing of it runs any more, its lock stays behind
        killed.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    left = lake.lock()
    assert left is not None and left["token"] == holder["token"]
    server.stats.clear()
    after = run_cli([*args, "--wait-lock", "600"], env=lake.env)
    assert after.code == 0, after.stderr
    assert (f"took over the lake's lock from pid {holder['pid']} on {holder['host']}"
            in after.stderr)
    assert lake.lock() is None
    assert_exact(lake.local(tmp_path / "read"), dataset.lines_for_range(START, end))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_releases_the_lock(
    make_server: ServerFactory, lake: LakeUnderTest
) -> None:
    dataset = HeldDataset(seed=74, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    proc = start_cli(lake_args(server.url, lake.url, START, START + dt.timedelta(days=2),
                               "--chunk-days", "1", "--workers", "1"), lake.env)
    try:
        dataset.wait_held(1)
        assert lake.lock() is not None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    assert proc.returncode == 130, err.decode()
    assert lake.lock() is None, "released on the way out"


def test_a_db_run_with_parquet_holds_the_lake_too(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = HeldDataset(seed=75, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    lake = tmp_path / "lake"
    first = start_cli(lake_args(server.url, str(lake), START, START, "--db",
                                str(tmp_path / "events.duckdb")), {})
    try:
        dataset.wait_held(1)
        holder = json.loads((lake / LOCK_KEY).read_bytes())
        alone = run_cli(lake_args(server.url, str(lake), START, START))
    finally:
        dataset.release()
    _, err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, err.decode()
    assert alone.code == 4 and f"pid {holder['pid']}" in alone.stderr, alone.stderr
    assert not (lake / LOCK_KEY).exists()
