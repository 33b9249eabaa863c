"""The lake's parts: URLs, the manifest, the stores (a folder and a real S3 server), the sink."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import duckdb
import pytest

from mpexport.errors import CredentialsError, DatabaseLockedError, LoaderError, UsageError
from mpexport.fakeserver import Dataset
from mpexport.model import Chunk, CompletedChunk, QueryFilters
from mpexport.sinks.lake import lock as lock_module
from mpexport.sinks.lake import store as store_module
from mpexport.sinks.lake.lock import LEASE_VARIABLE, LOCK_KEY, LakeLock, lake_lock
from mpexport.sinks.lake.manifest import (
    MANIFEST_KEY,
    LakeManifest,
    read_manifest,
    update_manifest,
)
from mpexport.sinks.lake.objects import ObjectStore, startup_error
from mpexport.sinks.lake.parquet import ParquetCopy, day_key, utc_days
from mpexport.sinks.lake.sink import LakeCopy, LakeSink
from mpexport.sinks.lake.store import (
    LocalStore,
    Store,
    open_store,
    parse_location,
    redact,
)
from tests.helpers import PATIENCE, wait_until
from tests.s3server import SECRET_KEY, S3Server, day_partitions, running_s3_server

D0 = dt.date(2024, 3, 1)
FILTERS = QueryFilters()


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


# ------------------------------------------------------------------ locations


@pytest.mark.parametrize("text", ["lake", "out/lake", "/data/lake", r"C:\data\lake",
                                  "C:/data/lake", r"\\server\share\lake"])
def test_a_path_is_a_local_folder(text: str) -> None:
    assert parse_location(text, {}).scheme is None


@pytest.mark.parametrize("text", ["s3://bucket", "s3://bucket/events", "gs://b/p/q",
                                  "az://container/events", "S3://bucket/x"])
def test_object_store_urls(text: str) -> None:
    location = parse_location(text, {})
    assert location.scheme == text.split(":")[0].lower()
    assert not location.allow_http


@pytest.mark.parametrize(("text", "words"), [
    ("s3://KEY:SECRET@bucket/events", "credentials"),
    ("http://example.com/lake", "does not support http://"),
    ("https://bucket.s3.amazonaws.com/x", "does not support https://"),
    ("ftp://host/x", "does not support ftp://"),
    ("s3:///events", "names no bucket"),
    ("s3://bucket/x?versionId=1", "query"),
    ("", "needs a folder"),
])
def test_bad_urls_are_refused(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        parse_location(text, {})
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://localhost:9000",
                                      "http://[::1]:9000", "http://127.3.2.1"])
def test_plain_http_endpoints_only_on_loopback(endpoint: str) -> None:
    assert parse_location("s3://b/p", {"AWS_ENDPOINT_URL": endpoint}).allow_http


@pytest.mark.parametrize("name", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"])
@pytest.mark.parametrize("endpoint", ["http://192.0.2.10:9000", "http://minio.example.com",
                                      "http://10.0.0.1"])
def test_plain_http_elsewhere_is_refused(name: str, endpoint: str) -> None:
    with pytest.raises(UsageError, match=f"{name} uses plain HTTP"):
        parse_location("s3://b/p", {name: endpoint})


def test_https_endpoints_and_other_schemes_endpoints() -> None:
    assert not parse_location("s3://b/p", {"AWS_ENDPOINT_URL": "https://x.r2.dev"}).allow_http
    # An S3 endpoint does not concern a gs:// lake; Azure's own does concern az://.
    assert parse_location("gs://b/p", {"AWS_ENDPOINT_URL": "http://192.0.2.1"}).scheme == "gs"
    with pytest.raises(UsageError, match="AZURE_STORAGE_ENDPOINT"):
        parse_location("az://c/p", {"AZURE_STORAGE_ENDPOINT": "http://192.0.2.1"})


def test_redact_masks_the_secrets_of_the_environment() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_SESSION_TOKEN": "tok-123456"}
    assert redact("a s3cr3t-value b tok-123456", env) == "a *** b ***"


def test_without_obstore_a_url_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "obstore.store", None)  # import raises ImportError
    with pytest.raises(UsageError) as caught:
        open_store("s3://bucket/events", environ={})
    assert "mpexport[lake]" in caught.value.one_line()


# ------------------------------------------------------------------ manifest


def test_manifest_round_trip() -> None:
    when = dt.datetime(2024, 6, 30, 12, 0, tzinfo=dt.UTC)
    fingerprint = QueryFilters(events=("B", "A"), where='x==1').fingerprint()
    manifest = LakeManifest()
    manifest.wrote(day(0), 150, "run1", when)
    manifest.cover([day(0), day(1)], fingerprint, "run1", when)
    manifest.cover([day(1)], FILTERS.fingerprint(), "run2", when)
    manifest.wrote(day(2), 0, "run2", when)
    again = LakeManifest.from_bytes(manifest.to_bytes(), "here")
    assert again.days == manifest.days
    assert again.covered() == {fingerprint: {day(0), day(1)}, FILTERS.fingerprint(): {day(1)}}
    assert again.day_volumes() == {day(0): 150, day(2): 0}
    stored = json.loads(manifest.to_bytes())
    assert stored["format"] == 1
    assert stored["days"][day(0).isoformat()]["filters"] == [
        {"events": ["A", "B"], "limit": None, "where": "x==1"}]
    assert stored["days"][day(0).isoformat()]["written_at"] == "2024-06-30T12:00:00Z"


@pytest.mark.parametrize(("data", "words"), [
    (b"not json", "damaged"),
    (b'{"format": 1, "days": {"2024-13-01": {}}}', "damaged"),
    (b'{"format": 2, "days": {}}', "format 2"),
])
def test_a_bad_manifest_is_a_clear_error(data: bytes, words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        LakeManifest.from_bytes(data, "s3://b/p")
    assert "s3://b/p" in str(caught.value)


def test_utc_days_of_a_chunk() -> None:
    chunk = Chunk(0, day(0), day(1))
    assert utc_days(chunk) == {day(0), day(1)}
    # New York's days run 05:00 to 05:00 UTC (04:00 in summer): three UTC days.
    assert utc_days(chunk, "America/New_York") == {day(0), day(1), day(2)}
    assert utc_days(chunk, "Asia/Tokyo") == {day(-1), day(0), day(1)}


# ------------------------------------------------------------------ stores


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    if request.param == "folder":
        yield LocalStore(tmp_path / "lake")
        return
    with running_s3_server() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        # obstore reads the process's variables itself: the run passes the same ones.
        yield open_store(server.url("prefix/lake"), staging=tmp_path, environ=os.environ)


def test_store_contract(store: Store, tmp_path: Path) -> None:
    assert store.get_bytes("a/b.json") is None
    assert store.list_keys() == []
    store.put_bytes("a/b.json", b"one")
    store.put_bytes("a/b.json", b"two")
    assert store.get_bytes("a/b.json") == b"two"
    staged = store.staging_path("date=2024-01-01/data.parquet")
    staged.write_bytes(b"PAR1")
    store.put_file("date=2024-01-01/data.parquet", staged)
    assert not staged.exists(), "the staged file is consumed"
    assert store.list_keys() == ["a/b.json", "date=2024-01-01/data.parquet"]
    assert store.list_keys("a/") == ["a/b.json"]
    copy = tmp_path / "copy"
    assert store.get_file("date=2024-01-01/data.parquet", copy)
    assert copy.read_bytes() == b"PAR1"
    assert not store.get_file("missing", tmp_path / "none")
    store.delete("a/b.json")
    store.delete("a/b.json")  # gone already: not an error
    assert store.list_keys() == ["date=2024-01-01/data.parquet"]
    # A day bigger than a part: an object store uploads it in parts, still as one object.
    big = os.urandom(11 * 1024 * 1024)
    staged = store.staging_path("date=2024-01-02/data.parquet")
    staged.write_bytes(big)
    store.put_file("date=2024-01-02/data.parquet", staged)
    assert store.get_file("date=2024-01-02/data.parquet", copy)
    assert copy.read_bytes() == big


def test_a_missing_bucket_stops_before_anything_is_fetched(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="bucket does not exist") as caught:
        ParquetCopy(open_store("s3://no-such-bucket/events", staging=tmp_path,
                               environ=os.environ), "events")
    assert SECRET_KEY not in caught.value.one_line()


def test_wrong_credentials_are_exit_3() -> None:
    error = store_module.StoreError("listing s3://b/p: 403 Forbidden: SignatureDoesNotMatch")
    assert isinstance(startup_error(error, "s3://b/p"), CredentialsError)


# ------------------------------------------------------------------ the lake sink


class Spooler:
    """Spool files for chunks, as the fetch workers write them."""

    def __init__(self, root: Path, dataset: Dataset) -> None:
        self.dir = root / "spool"
        self.dir.mkdir(exist_ok=True)
        self.dataset = dataset
        self.count = 0

    def chunk(self, a: dt.date, b: dt.date, data: bytes | None = None) -> CompletedChunk:
        if data is None:
            data = b"".join(self.dataset.lines_for_range(a, b))
        self.count += 1
        path = self.dir / f"chunk-{self.count}.ndjson"
        path.write_bytes(data)
        return CompletedChunk(Chunk(self.count, a, b), path, data.count(b"\n"), len(data),
                              "0" * 64, 1, 0.0)


def lake_load(lake: Path | str, chunks: Sequence[CompletedChunk], scratch: Path,
              **kwargs: Any) -> LakeSink:
    """Load chunks through a lake sink, skipping those the lake holds, as the pipeline does."""
    scratch.mkdir()
    store = open_store(str(lake), staging=scratch, environ=os.environ)  # as the run opens it
    copy = LakeCopy(store, run_id=scratch.name, filters=FILTERS.fingerprint(),
                    project_timezone=None, staging=scratch)
    sink = LakeSink(copy, scratch, filters=FILTERS, run_id=scratch.name, **kwargs)
    for completed in chunks:
        if sink.already_done(completed.chunk):
            completed.discard()
        else:
            sink.accept(completed)
    sink.close()
    return sink


def lake_rows(lake: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return list(con.execute(
            "SELECT date, event, distinct_id, epoch(time)::BIGINT, insert_id, "
            "CAST(time AT TIME ZONE 'UTC' AS DATE) AS utc_day "
            f"FROM read_parquet('{lake}/*/*.parquet', hive_partitioning=true)").fetchall())


def keys_of(lines: Sequence[bytes]) -> set[tuple[Any, ...]]:
    keys = set()
    for line in lines:
        props = json.loads(line)["properties"]
        keys.add((json.loads(line)["event"], props.get("distinct_id"), int(props["time"]),
                  props.get("$insert_id")))
    return keys


def assert_lake_holds(lake: Path, lines: Sequence[bytes]) -> None:
    rows = lake_rows(lake)
    keys = [row[1:5] for row in rows]
    assert len(keys) == len(set(keys)), "an event is in the lake twice"
    assert set(keys) == keys_of(lines)
    assert all(str(row[0]) == row[5].isoformat() for row in rows), "an event in the wrong day"


def test_reruns_merge_into_whole_days(tmp_path: Path) -> None:
    dataset = Dataset(seed=31, events_per_day=80)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    first = lake_load(lake, [spooler.chunk(day(0), day(2)), spooler.chunk(day(3), day(3))],
                      tmp_path / "s1")
    assert first.stats.parquet_days == 4
    assert_lake_holds(lake, dataset.lines_for_range(day(0), day(3)))

    # The same chunks again: the lake's manifest holds them, nothing loads.
    again = lake_load(lake, [spooler.chunk(day(0), day(2))], tmp_path / "s2")
    assert again.stats.chunks == 0

    # Late events, and an overlapping refresh: the days read back are merged.
    dataset.add_late_events(day(2), 7)
    third = lake_load(lake, [spooler.chunk(day(2), day(4))], tmp_path / "s3", refresh=True)
    assert third.stats.rows_inserted == 7 + len(keys_of(dataset.lines_for_day(day(4))))
    assert third.stats.duplicates_skipped > 0
    assert third.stats.late_rows == 0  # day 4 is new, so the chunk is not all held days
    assert_lake_holds(lake, dataset.lines_for_range(day(0), day(4)))
    manifest = read_manifest(LocalStore(lake))
    assert manifest.covered() == {FILTERS.fingerprint(): {day(n) for n in range(5)}}
    assert manifest.days[day(2)].rows == len(keys_of(dataset.lines_for_day(day(2))))


def test_rows_outside_their_chunk_never_drop_what_the_lake_held(tmp_path: Path) -> None:
    dataset = Dataset(seed=32, events_per_day=60)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    lake_load(lake, [spooler.chunk(day(20), day(20))], tmp_path / "s1")
    dataset.add_late_events(day(20), 5)
    # Day 20's events labelled as day 2: day 20 was not read back before the
    # load, so it is read back before its file is replaced.
    odd = spooler.chunk(day(2), day(2), b"".join(dataset.lines_for_day(day(20))))
    lake_load(lake, [odd], tmp_path / "s2")
    assert_lake_holds(lake, dataset.lines_for_day(day(20)))


def test_replace_swaps_a_day_for_the_fresh_one(tmp_path: Path) -> None:
    dataset = Dataset(seed=33, events_per_day=60)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    lake_load(lake, [spooler.chunk(day(0), day(1))], tmp_path / "s1")
    subset = dataset.lines_for_day(day(1))[:5]
    sink = lake_load(lake, [spooler.chunk(day(1), day(1), b"".join(subset))], tmp_path / "s2",
                     replace=True, refresh=True)
    assert sink.stats.rows_replaced == len(keys_of(dataset.lines_for_day(day(1))))
    assert_lake_holds(lake, [*dataset.lines_for_day(day(0)), *subset])
    empty = spooler.chunk(day(0), day(0), b"")
    lake_load(lake, [empty], tmp_path / "s3", replace=True, refresh=True)
    assert not (lake / f"date={day(0)}").exists()
    assert read_manifest(LocalStore(lake)).days[day(0)].rows == 0


def test_the_files_read_with_natural_types(tmp_path: Path) -> None:
    spooler = Spooler(tmp_path, Dataset(seed=34, events_per_day=20))
    lake = tmp_path / "lake"
    lake_load(lake, [spooler.chunk(day(0), day(0))], tmp_path / "s1")
    with duckdb.connect() as con:
        schema = {name: (kind, logical, converted) for name, kind, logical, converted in
                  con.execute("SELECT name, type, logical_type, converted_type FROM "
                              f"parquet_schema('{lake / day_key(day(0))}')").fetchall()}
    kind, logical, converted = schema["properties"]
    assert kind == "BYTE_ARRAY" and converted == "UTF8" and "JSON" not in str(logical)
    kind, logical, _ = schema["time"]
    assert kind == "INT64" and "isAdjustedToUTC=1" in str(logical).replace(" ", "")


class InUse:
    """``os.replace`` onto some files refused, as Windows refuses a file a reader has open."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
        self.paths = {p.resolve() for p in paths}
        self.refused: list[Path] = []
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if Path(dst).resolve() in self.paths:
                self.refused.append(Path(dst))
                error = PermissionError(errno.EACCES, "in use", str(dst))
                error.winerror = 32  # type: ignore[attr-defined]
                raise error
            real_replace(src, dst)

        monkeypatch.setattr(store_module.os, "replace", replace)
        monkeypatch.setattr(store_module, "BACKOFF_SECONDS", (0.0,))


def test_a_file_in_use_does_not_stop_the_run_and_is_written_next_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    dataset = Dataset(seed=35, events_per_day=40)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    lake_load(lake, [spooler.chunk(day(0), day(1))], tmp_path / "s1")
    dataset.add_late_events(day(1), 3)
    held = lake / day_key(day(1))
    before = held.read_bytes()
    in_use = InUse(monkeypatch, held)
    caplog.set_level(logging.WARNING, logger="mpexport")
    chunks = [spooler.chunk(day(0), day(0)), spooler.chunk(day(1), day(2))]
    sink = lake_load(lake, chunks, tmp_path / "s2", refresh=True)
    assert in_use.refused and sink.stats.chunks == 2
    assert held.read_bytes() == before, "readers keep the old, whole file"
    assert any(str(held) in r.getMessage() for r in caplog.records)
    covered = read_manifest(LocalStore(lake)).covered()[FILTERS.fingerprint()]
    assert day(2) not in covered, "a chunk whose file was not written is not held"

    monkeypatch.undo()
    lake_load(lake, [spooler.chunk(day(0), day(0)), spooler.chunk(day(1), day(2))],
              tmp_path / "s3")
    assert_lake_holds(lake, dataset.lines_for_range(day(0), day(2)))


def test_a_failed_upload_is_a_loader_error_and_the_day_is_not_held(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    spooler = Spooler(tmp_path, Dataset(seed=36, events_per_day=30))
    real_put = ObjectStore.put_file

    def put_file(self: ObjectStore, key: str, path: Path) -> None:
        if key == day_key(day(1)):
            raise store_module.StoreError(f"uploading {key}: 503 Slow Down")
        real_put(self, key, path)

    monkeypatch.setattr(ObjectStore, "put_file", put_file)
    with pytest.raises(LoaderError, match="503 Slow Down") as caught:
        lake_load(s3_server.url(), [spooler.chunk(day(0), day(0)),
                                    spooler.chunk(day(1), day(1))], tmp_path / "s1")
    assert "rerun the same command" in caught.value.one_line()
    objects = s3_server.objects()
    assert day_partitions(objects) == [f"date={day(0)}"]
    held = LakeManifest.from_bytes(objects[MANIFEST_KEY], "").covered()
    assert held == {FILTERS.fingerprint(): {day(0)}}


@pytest.mark.parametrize("url", ["gs://bucket/events", "az://container/events"])
def test_gcs_and_azure_stores_open_without_a_request(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Same library, same code path as S3; no GCS or Azure server here, so no request."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    store = open_store(url, staging=tmp_path, environ=os.environ)
    assert isinstance(store, ObjectStore) and store.url == url


# ------------------------------------------------------------------ one writer per lake


def test_conditional_writes(store: Store) -> None:
    first = store.create_bytes("_mpexport/lock.json", b"one")
    assert first is not None
    assert store.create_bytes("_mpexport/lock.json", b"two") is None, "create-if-absent"
    found = store.get_versioned("_mpexport/lock.json")
    assert found is not None and found.data == b"one" and found.version == first
    second = store.replace_bytes_if("_mpexport/lock.json", b"three", first)
    assert second is not None and second != first
    # Two takers that read the same version: only the first one's write happens.
    assert store.replace_bytes_if("_mpexport/lock.json", b"four", first) is None
    assert store.get_bytes("_mpexport/lock.json") == b"three"
    assert not store.delete_if("_mpexport/lock.json", first)
    assert store.delete_if("_mpexport/lock.json", second)
    assert store.get_versioned("_mpexport/lock.json") is None
    assert store.replace_bytes_if("_mpexport/lock.json", b"five", second) is None
    assert not store.delete_if("_mpexport/lock.json", second)


def stored_lock(store: Store) -> dict[str, Any]:
    data = store.get_bytes(LOCK_KEY)
    assert data is not None, "no lock object"
    found: dict[str, Any] = json.loads(data)
    return found


def test_a_second_lock_is_refused_naming_the_holder(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-not-to-be-seen")
    first = LakeLock(store)
    first.acquire()
    try:
        held = stored_lock(store)
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        assert held["command"] == "mpexport (library)"  # never argv
        raw = store.get_bytes(LOCK_KEY) or b""
        assert b"session-token" not in raw and SECRET_KEY.encode() not in raw
        with pytest.raises(DatabaseLockedError) as caught:
            LakeLock(store).acquire()
        line = caught.value.one_line()
        assert f"pid {os.getpid()} on {socket.gethostname()}" in line
        assert store.url in line and "--wait-lock" in line
        assert caught.value.exit_code == 4
    finally:
        first.release()
    assert store.get_bytes(LOCK_KEY) is None, "released: deleted"
    second = LakeLock(store)
    second.acquire()
    second.release()


def test_the_lock_is_released_on_errors(store: Store) -> None:
    with pytest.raises(KeyboardInterrupt), lake_lock(store):
        assert store.get_bytes(LOCK_KEY) is not None
        raise KeyboardInterrupt
    assert store.get_bytes(LOCK_KEY) is None


class WallClock:
    """The lock's wall clock, moved by the test (the lease is judged by it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = dt.datetime(2024, 6, 30, 12, 0, tzinfo=dt.UTC)
        monkeypatch.setattr(lock_module, "_wall", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class SameRead:
    """A store whose lock reads all wait for each other: every taker sees the same version."""

    def __init__(self, store: Store, parties: int) -> None:
        self.store = store
        self.barrier = threading.Barrier(parties, timeout=PATIENCE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_versioned(self, key: str) -> Any:
        found = self.store.get_versioned(key)
        self.barrier.wait()
        return found


def test_an_expired_lease_is_taken_over_by_one_run_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = WallClock(monkeypatch)
    dead = LakeLock(store, lease=600)
    dead.acquire()
    dead._stop.set()  # a killed holder: no more renewals, no release
    clock.advance(601)
    same_read = cast(Store, SameRead(store, 3))
    takers = [LakeLock(same_read, lease=600) for _ in range(3)]
    results: list[Any] = [None] * 3

    def take(n: int) -> None:
        results[n] = takers[n].try_acquire()

    threads = [threading.Thread(target=take, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [taker for taker, result in zip(takers, results, strict=True) if result is None]
    assert len(winners) == 1, "exactly one taker wins"
    [winner] = winners
    assert winner.taken_over is not None and f"pid {os.getpid()}" in winner.taken_over.text
    assert stored_lock(store)["token"] == winner.token
    # The old holder finds out at its next renewal and writes nothing more.
    assert not dead.renew()
    with pytest.raises(LoaderError, match="lost the lock"):
        dead.check()
    dead.release()
    assert stored_lock(store)["token"] == winner.token, "the old holder left it alone"
    winner.check()
    winner.release()
    assert store.get_bytes(LOCK_KEY) is None


def test_a_lease_not_renewed_in_time_stops_the_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = WallClock(monkeypatch)
    held = LakeLock(store, lease=600)
    held.acquire()
    held._stop.set()
    held.check()
    assert held.renew()  # renewing pushes the lease forward
    clock.advance(599)
    held.check()
    clock.advance(2)  # e.g. a laptop asleep: another run may hold the lake by now
    with pytest.raises(LoaderError, match="lease could not be renewed"):
        held.check()
    held.release()


def test_the_holder_renews_its_lease(store: Store) -> None:
    # Renewed every quarter lease: long enough that a busy machine's pauses
    # never let it run out (check() and release() would then refuse).
    held = LakeLock(store, lease=2.0)
    held.acquire()
    try:
        wait_until(lambda: stored_lock(store)["renewals"] >= 2, "two renewals")
        held.check()
    finally:
        held.release()
    assert store.get_bytes(LOCK_KEY) is None


def test_a_wait_for_the_lock_ends_when_the_holder_releases(store: Store) -> None:
    holder = LakeLock(store)
    holder.acquire()
    polls: list[int] = []

    def check_stop() -> None:
        # Called at every poll of the waiting run: the holder lets go at the second.
        polls.append(1)
        if len(polls) == 2:
            holder.release()

    waiter = LakeLock(store)
    waiter.acquire(wait_seconds=10 * PATIENCE, check_stop=check_stop)
    assert len(polls) == 2 and stored_lock(store)["token"] == waiter.token
    waiter.release()


@pytest.mark.parametrize(("text", "ok"), [("2.5", True), ("0", False), ("x", False),
                                          ("-1", False), ("nan", False)])
def test_lease_from_the_environment(text: str, ok: bool) -> None:
    if ok:
        assert lock_module.lease_seconds({LEASE_VARIABLE: text}) == 2.5
    else:
        with pytest.raises(UsageError, match=LEASE_VARIABLE):
            lock_module.lease_seconds({LEASE_VARIABLE: text})
    assert lock_module.lease_seconds({}) == lock_module.LEASE_SECONDS


# ------------------------------------------------------------------ manifests that merge


def test_manifest_writes_merge_with_what_the_lake_holds(tmp_path: Path) -> None:
    """Even without the lock, a manifest write keeps the entries another run stored."""
    dataset = Dataset(seed=37, events_per_day=30)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    # Run 1 starts (it read the manifest: empty), then run 2 writes a whole run.
    (tmp_path / "s1").mkdir()
    early = LakeCopy(str(lake), run_id="run1", filters=FILTERS.fingerprint(),
                     project_timezone=None, staging=tmp_path / "s1")
    purchases = QueryFilters(events=("Purchase",))
    lake_load(lake, [spooler.chunk(day(5), day(6))], tmp_path / "s2")
    sink = LakeSink(early, tmp_path / "s1", filters=FILTERS, run_id="run1")
    sink.accept(spooler.chunk(day(0), day(0)))
    sink.close()
    covered = read_manifest(LocalStore(lake)).covered()
    assert covered == {FILTERS.fingerprint(): {day(0), day(5), day(6)}}
    # Entries of other filters survive too.
    manifest = read_manifest(LocalStore(lake))
    changes = LakeManifest()
    changes.cover([day(0)], purchases.fingerprint(), "run3", dt.datetime.now(dt.UTC))
    merged = update_manifest(LocalStore(lake), changes)
    assert merged.covered() == {FILTERS.fingerprint(): {day(0), day(5), day(6)},
                                purchases.fingerprint(): {day(0)}}
    assert merged.days[day(5)].rows == manifest.days[day(5)].rows


def test_days_are_read_back_when_written_not_from_the_listing(tmp_path: Path) -> None:
    dataset = Dataset(seed=38, events_per_day=40)
    spooler = Spooler(tmp_path, dataset)
    lake = tmp_path / "lake"
    (tmp_path / "s1").mkdir()
    # Listed while the lake was empty...
    early = LakeCopy(str(lake), run_id="run1", filters=FILTERS.fingerprint(),
                     project_timezone=None, staging=tmp_path / "s1")
    # ...then the day was written whole by another run.
    lake_load(lake, [spooler.chunk(day(0), day(0))], tmp_path / "s2")
    subset = dataset.lines_for_day(day(0))[:3]
    sink = LakeSink(early, tmp_path / "s1", filters=FILTERS, run_id="run1", refresh=True)
    sink.accept(spooler.chunk(day(0), day(0), b"".join(subset)))
    sink.close()
    assert_lake_holds(lake, dataset.lines_for_day(day(0)))


def test_sync_from_is_recorded_at_once_per_filters(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    scratch = tmp_path / "s1"
    scratch.mkdir()
    copy = LakeCopy(str(lake), run_id="run1", filters=FILTERS.fingerprint(),
                    project_timezone=None, staging=scratch)
    sink = LakeSink(copy, scratch, filters=FILTERS, run_id="run1")
    try:
        assert sink.sync_from() is None
        sink.record_sync_from(day(1))
        # Stored before the run ends: a kill now keeps it.
        stored = json.loads((lake / MANIFEST_KEY).read_bytes())
        assert stored["sync_from"] == {FILTERS.fingerprint(): day(1).isoformat()}
        assert sink.sync_from() == day(1)
    finally:
        sink.close()
    other = QueryFilters(events=("Purchase",))
    scratch = tmp_path / "s2"
    scratch.mkdir()
    copy = LakeCopy(str(lake), run_id="run2", filters=other.fingerprint(),
                    project_timezone=None, staging=scratch)
    sink = LakeSink(copy, scratch, filters=other, run_id="run2")
    try:
        assert sink.sync_from() is None, "per filters"
        sink.record_sync_from(day(3))
    finally:
        sink.close()
    manifest = read_manifest(LocalStore(lake))
    assert manifest.sync_from == {FILTERS.fingerprint(): day(1), other.fingerprint(): day(3)}


def test_manifests_without_sync_from_still_read() -> None:
    old = b'{"format": 1, "written_by": "mpexport 0.9", "days": {\n "2024-03-01": ' \
          b'{"rows":5,"filters":[{"events":[],"limit":null,"where":null}],' \
          b'"run_id":"r","written_at":"2024-06-30T12:00:00Z"}\n}}\n'
    manifest = LakeManifest.from_bytes(old, "here")
    assert manifest.sync_from == {} and manifest.days[day(0)].rows == 5
    manifest.record_sync_from(FILTERS.fingerprint(), day(0))
    again = LakeManifest.from_bytes(manifest.to_bytes(), "here")
    assert again.sync_from == {FILTERS.fingerprint(): day(0)} and again.days == manifest.days
