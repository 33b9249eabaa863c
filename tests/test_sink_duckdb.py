"""The DuckDB sink against real database files and spool files written here."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpexport.errors import LoaderError, UsageError
from mpexport.fakeserver import Dataset
from mpexport.model import Chunk, CompletedChunk, LoadStats, QueryFilters
from mpexport.sinks.duckdb import load as load_module
from mpexport.sinks.duckdb import sink as sink_module
from mpexport.sinks.duckdb.budget import ROW_GROUP_ROWS, LoaderBudget
from mpexport.sinks.duckdb.rows import RowReader, latest_per_key
from mpexport.sinks.duckdb.schema import create_schema
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.lake.sink import database_sink

D0 = dt.date(2024, 3, 1)
FILTERS = QueryFilters()
Key = tuple[str, str | None, int | None, str | None]


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


class Spooler:
    """Writes spool files for chunks the way the fetch workers do."""

    def __init__(self, root: Path, dataset: Dataset, time_in_ms: bool = False) -> None:
        self.dir = root / "spool"
        self.dir.mkdir(exist_ok=True)
        self.dataset = dataset
        self.time_in_ms = time_in_ms
        self.count = 0

    def lines(self, a: dt.date, b: dt.date) -> list[bytes]:
        return self.dataset.lines_for_range(a, b, time_in_ms=self.time_in_ms)

    def chunk(self, a: dt.date, b: dt.date, data: bytes | None = None) -> CompletedChunk:
        if data is None:
            data = b"".join(self.lines(a, b))
        self.count += 1
        path = self.dir / f"chunk-{self.count}.ndjson"
        path.write_bytes(data)
        return CompletedChunk(
            Chunk(self.count, a, b), path, data.count(b"\n"), len(data), "0" * 64, 1, 0.0
        )


def source_key(line: bytes, time_in_ms: bool = False) -> Key:
    record = json.loads(line)
    props = record["properties"]
    unit = 1_000 if time_in_ms else 1_000_000
    micros = props["time"] * unit
    return (record["event"], props.get("distinct_id"), micros, props.get("$insert_id"))


def expected_keys(lines: Iterable[bytes], time_in_ms: bool = False) -> set[Key]:
    return {source_key(line, time_in_ms) for line in lines}


def stored_keys(db: Path, table: str = "events") -> list[Key]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            f"SELECT event, distinct_id, epoch_us(time), insert_id FROM {table}"
        ).fetchall()
    return [(e, d, t, i) for e, d, t, i in rows]


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return list(con.execute(sql).fetchall())


def load(db: Path, chunks: Sequence[CompletedChunk], **kwargs: Any) -> DuckDBSink:
    kwargs.setdefault("filters", FILTERS)
    kwargs.setdefault("run_id", "test-run")
    sink = database_sink(db, **kwargs)  # with parquet_dir, the pair of --db --parquet
    for completed in chunks:
        if not sink.already_done(completed.chunk):
            sink.accept(completed)
        else:
            completed.path.unlink()
    sink.close()
    return sink


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(seed=11, events_per_day=150)


@pytest.fixture
def spooler(tmp_path: Path, dataset: Dataset) -> Spooler:
    return Spooler(tmp_path, dataset)


# ------------------------------------------------------------------ loading


def test_one_row_per_distinct_key(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    lines = spooler.lines(day(0), day(5))
    sink = load(db, [spooler.chunk(day(0), day(2)), spooler.chunk(day(3), day(5))])
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(lines)
    assert sink.stats.rows_inserted == len(keys)
    assert sink.stats.duplicates_skipped == len(lines) - len(keys) > 0
    assert sink.stats.chunks == 2
    assert not list(spooler.dir.iterdir()), "spool files are deleted once loaded"


def test_same_insert_id_other_event_both_kept(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    load(db, [spooler.chunk(day(0), day(1))])
    (pairs,) = query(
        db,
        "SELECT count(*) FROM (SELECT insert_id FROM events GROUP BY ALL "
        "HAVING count(DISTINCT event) > 1)",
    )[0:1]
    assert pairs[0] > 0


def test_loading_the_same_chunk_twice_adds_nothing(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    load(db, [spooler.chunk(day(0), day(1))])
    before = sorted(stored_keys(db))
    again = load(db, [spooler.chunk(day(0), day(1))], refresh=True)
    assert again.stats.rows_inserted == 0
    assert again.stats.duplicates_skipped == len(spooler.lines(day(0), day(1)))
    assert sorted(stored_keys(db)) == before


def test_overlapping_chunk_grid_adds_nothing_wrong(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    load(db, [spooler.chunk(day(0), day(2)), spooler.chunk(day(3), day(5))])
    # A second grid that straddles the first one's boundaries and extends it.
    grid = [(0, 1), (2, 3), (4, 5), (6, 7)]
    load(db, [spooler.chunk(day(a), day(b)) for a, b in grid], refresh=True)
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(spooler.lines(day(0), day(7)))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cuts=st.lists(st.integers(min_value=1, max_value=6), unique=True, max_size=6))
def test_any_chunking_loads_the_same_keys(tmp_path_factory: pytest.TempPathFactory,
                                          cuts: list[int]) -> None:
    root = tmp_path_factory.mktemp("chunking")
    spooler = Spooler(root, Dataset(seed=5, events_per_day=40, long_values=False))
    bounds = [0, *sorted(cuts), 7]
    chunks = [spooler.chunk(day(a), day(b - 1)) for a, b in itertools.pairwise(bounds)]
    db = root / "out.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(load_module, "BATCH_ROWS", 50)  # tiny batches exercise the time slicing
        load(db, chunks)
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(spooler.lines(day(0), day(6)))


def test_properties_round_trip_losslessly(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    odd = {
        "event": "Odd",
        "properties": {
            "time": 1709251200, "distinct_id": "", "$insert_id": "odd-1",
            "big": 123456789012345678901234567890, "neg": -9223372036854775809,
            "float": 0.1, "null": None, "nested": {"a": [1, {"b": None}, "x\u2028y"]},
            "emoji": "🎉 日本語 \u2029", "escaped": "quote \" backslash \\ tab \t",
        },
    }
    extra = (json.dumps(odd, ensure_ascii=False) + "\n").encode()
    lines = [*spooler.lines(day(0), day(1)), extra]
    assert b"\xe2\x80\xa8" in b"".join(lines), "raw U+2028 is present in the source"
    load(db, [spooler.chunk(day(0), day(1), b"".join(lines))])
    source = {source_key(line): json.loads(line)["properties"] for line in lines}
    rows = query(
        db, "SELECT event, distinct_id, epoch_us(time), insert_id, properties FROM events"
    )
    assert len(rows) == len(source)
    for event, distinct_id, micros, insert_id, props in rows:
        assert json.loads(props) == source[(event, distinct_id, micros, insert_id)]


def test_typed_columns(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    line = (
        b'{"event":"Sign Up","properties":{"time":1704103311,"distinct_id":"u-81",'
        b'"$insert_id":"hpu","mp_processing_time_ms":1704103315874}}\n'
        b'{"event":"Frac","properties":{"time":1704103311.25,"distinct_id":7}}\n'
    )
    load(db, [spooler.chunk(dt.date(2024, 1, 1), dt.date(2024, 1, 1), line)])
    types = dict(query(db, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'events'"))
    assert types["time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["properties"] == "JSON"
    rows = query(db, "SELECT event, epoch_us(time), distinct_id, insert_id, "
                     "mp_processing_time_ms FROM events ORDER BY event")
    assert rows == [
        ("Frac", 1704103311_250000, "7", None, None),
        ("Sign Up", 1704103311_000000, "u-81", "hpu", 1704103315874),
    ]
    (instant,) = query(db, "SELECT time FROM events WHERE event = 'Sign Up'")[0]
    assert instant == dt.datetime(2024, 1, 1, 10, 1, 51, tzinfo=dt.UTC)


def test_replace_swaps_the_chunk_days(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    load(db, [spooler.chunk(day(0), day(2))])
    (day1_before,) = query(db, f"SELECT count(*) FROM events WHERE time::DATE = DATE '{day(1)}'")[0]
    subset = spooler.lines(day(1), day(1))[:10]
    sink = load(db, [spooler.chunk(day(1), day(1), b"".join(subset + subset))],
                replace=True, refresh=True)
    assert sink.stats.rows_replaced == day1_before
    assert sink.stats.rows_inserted == len(expected_keys(subset))
    assert sink.stats.duplicates_skipped == len(subset)
    keys = set(stored_keys(db))
    others = spooler.lines(day(0), day(0)) + spooler.lines(day(2), day(2))
    assert keys == expected_keys(others) | expected_keys(subset)


def test_empty_spool_is_a_loaded_chunk(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    sink = load(db, [spooler.chunk(day(0), day(0), b"")])
    assert sink.stats == LoadStats(chunks=1)
    assert query(db, "SELECT received, inserted, duplicates FROM _mpexport_chunks") == [(0, 0, 0)]
    assert query(db, "SELECT count(*) FROM events") == [(0,)]
    again = DuckDBSink(db, filters=FILTERS, run_id="r")
    assert again.already_done(Chunk(0, day(0), day(0)))
    again.close()


def test_manifest_row_per_chunk(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    chunks = [spooler.chunk(day(0), day(1)), spooler.chunk(day(2), day(2))]
    sizes = [(c.lines, c.bytes) for c in chunks]
    load(db, chunks, run_id="run-42", table="ev")
    rows = query(db, "SELECT table_name, from_date, to_date, filters, received, inserted, "
                     "duplicates, replaced, bytes, sha256, run_id, loaded_at "
                     "FROM _mpexport_chunks ORDER BY from_date")
    assert [(r[1], r[2]) for r in rows] == [(day(0), day(1)), (day(2), day(2))]
    for row, (lines, size) in zip(rows, sizes, strict=True):
        assert row[0] == "ev" and row[3] == FILTERS.fingerprint() and row[10] == "run-42"
        assert row[4] == lines and row[8] == size and row[4] == row[5] + row[6]
        assert row[7] == 0 and row[9] == "0" * 64 and row[11] is not None
    (total,) = query(db, "SELECT sum(inserted) FROM _mpexport_chunks")[0]
    assert query(db, "SELECT count(*) FROM ev") == [(total,)]


def test_already_done_refresh_and_covered_days(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    load(db, [spooler.chunk(day(0), day(2)), spooler.chunk(day(5), day(5))])
    sink = DuckDBSink(db, filters=FILTERS, run_id="r")
    assert sink.covered_days(FILTERS) == {day(0), day(1), day(2), day(5)}
    assert sink.already_done(Chunk(0, day(0), day(2)))
    assert sink.already_done(Chunk(0, day(1), day(1)))  # another grid, fully covered
    assert not sink.already_done(Chunk(0, day(2), day(3)))
    assert not sink.already_done(Chunk(0, day(4), day(5)))
    other = QueryFilters(events=("Purchase",))
    assert sink.covered_days(other) == set()
    sink.close()
    # Every sink is closed: an open one keeps its loader thread alive.
    other_filters = DuckDBSink(db, filters=other, run_id="r")
    assert not other_filters.already_done(Chunk(0, day(0), day(0)))
    other_filters.close()
    refreshing = DuckDBSink(db, filters=FILTERS, run_id="r", refresh=True)
    assert not refreshing.already_done(Chunk(0, day(0), day(0)))
    refreshing.close()
    other_table = DuckDBSink(db, table="other", filters=FILTERS, run_id="r")
    assert not other_table.already_done(Chunk(0, day(0), day(0)))
    other_table.close()


def test_refused_data_fails_only_that_chunk(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    bad = spooler.chunk(day(1), day(1), b'{"event":"x","properties":{"time":1}}\n[1,2]\n')
    sink = load(db, [spooler.chunk(day(0), day(0)), bad, spooler.chunk(day(2), day(2))])
    assert [f.chunk.from_date for f in sink.failed_chunks] == [day(1)]
    assert sink.stats.chunks == 2
    assert query(db, "SELECT from_date FROM _mpexport_chunks ORDER BY 1") == [(day(0),), (day(2),)]
    assert not list(spooler.dir.iterdir())


def _row_groups(db: Path) -> tuple[int, int]:
    """(row groups, rows in the largest) of the events table."""
    [(groups, largest)] = query(
        db, "SELECT count(DISTINCT row_group_id), max(count) FROM pragma_storage_info('events')")
    return int(groups), int(largest)


def test_rows_are_written_in_small_row_groups(tmp_path: Path) -> None:
    """The loader writes row groups of ROW_GROUP_ROWS, not DuckDB's 122,880 (memory)."""
    spooler = Spooler(tmp_path, Dataset(seed=5, events_per_day=12_000, long_values=False))
    db = tmp_path / "out.duckdb"
    lines = spooler.lines(day(0), day(3))
    load(db, [spooler.chunk(day(0), day(3))])
    groups, largest = _row_groups(db)
    assert largest == ROW_GROUP_ROWS
    assert groups >= len(set(lines)) // ROW_GROUP_ROWS >= 2
    assert set(stored_keys(db)) == expected_keys(lines)


def test_a_file_with_default_row_groups_loads_on(tmp_path: Path) -> None:
    """A database written with DuckDB's own row groups (older mpexport) takes new chunks.

    Its last row group holds more rows than ROW_GROUP_ROWS, and a user's
    index makes DuckDB append into it; --replace deletes from it.
    """
    spooler = Spooler(tmp_path, Dataset(seed=5, events_per_day=12_000, long_values=False))
    db = tmp_path / "out.duckdb"
    first = spooler.lines(day(0), day(1))
    with duckdb.connect(str(db)) as con:  # DuckDB's defaults, as before ROW_GROUP_ROWS
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con, "events")
        old = spooler.chunk(day(0), day(1))
        RowReader(LoaderBudget.from_text()).insert(
            con, "INSERT INTO events", str(old.path), latest_per_key)
        con.execute("CREATE INDEX users_index ON events (insert_id)")
    assert _row_groups(db)[0] == 1 and len(set(first)) > ROW_GROUP_ROWS
    later = spooler.lines(day(2), day(2))
    load(db, [spooler.chunk(day(2), day(2))])
    load(db, [spooler.chunk(day(1), day(1))], replace=True)
    assert sorted(stored_keys(db)) == sorted(expected_keys(first + later))


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "table", ["", "1abc", "bad-name", "a b", "x" * 64, "_mpexport_chunks", "_MPEXPORT_x", 'a"b']
)
def test_bad_table_name(tmp_path: Path, table: str) -> None:
    with pytest.raises(UsageError):
        DuckDBSink(tmp_path / "out.duckdb", table=table, filters=FILTERS, run_id="r")
    assert not (tmp_path / "out.duckdb").exists()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as info:
        DuckDBSink(tmp_path / "nope" / "out.duckdb", filters=FILTERS, run_id="r")
    assert str(tmp_path / "nope") in info.value.message


@pytest.mark.skipif(sys.platform == "win32" or getattr(os, "geteuid", lambda: -1)() == 0,
                    reason="mode bits are POSIX only; root can write anywhere")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="not writable"):
        DuckDBSink(locked / "out.duckdb", filters=FILTERS, run_id="r")


@pytest.mark.parametrize("content", [b"", b"hello, not a database\n", b"x" * 5000])
def test_non_duckdb_file_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    before = path.stat()
    with pytest.raises(UsageError, match="not a DuckDB database"):
        DuckDBSink(path, filters=FILTERS, run_id="r")
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_table_with_foreign_schema(tmp_path: Path) -> None:
    db = tmp_path / "out.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE events (a INTEGER)")
    with pytest.raises(UsageError, match="other columns"):
        DuckDBSink(db, filters=FILTERS, run_id="r")


# ------------------------------------------------------ abort and crashes


def assert_whole_chunks(db: Path, dataset: Dataset) -> int:
    """Every manifest chunk's days hold exactly its rows; other days hold none."""
    loaded = query(db, "SELECT from_date, to_date FROM _mpexport_chunks")
    expected: set[Key] = set()
    for first, last in loaded:
        expected |= expected_keys(dataset.lines_for_range(first, last))
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected
    return len(loaded)


def test_abort_leaves_whole_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """abort() in the middle of a chunk's transaction rolls that chunk back, every time.

    The loader is held inside chunk 4's transaction, after its rows were
    inserted, until abort() has asked it to stop: no timing decides where
    the abort lands.
    """
    dataset = Dataset(seed=3, events_per_day=3000, long_values=False)
    spooler = Spooler(tmp_path, dataset)
    chunks = [spooler.chunk(day(n), day(n)) for n in range(8)]
    held_index = chunks[3].chunk.index
    in_transaction = threading.Event()
    real_load = sink_module.load_chunk
    sinks: list[DuckDBSink] = []

    def load_holding_one(con: Any, completed: CompletedChunk, **kwargs: Any) -> Any:
        check_stop = kwargs.pop("check_stop")
        if completed.chunk.index != held_index:
            return real_load(con, completed, check_stop=check_stop, **kwargs)
        rows_before = con.execute("SELECT count(*) FROM events").fetchone()[0]

        def hold_once_rows_are_in() -> None:
            rows_now = con.execute("SELECT count(*) FROM events").fetchone()[0]
            if rows_now > rows_before and not in_transaction.is_set():
                in_transaction.set()
                assert sinks[0]._loader._stop.wait(60), "abort() never came"
            check_stop()

        return real_load(con, completed, check_stop=hold_once_rows_are_in, **kwargs)

    monkeypatch.setattr(sink_module, "load_chunk", load_holding_one)
    monkeypatch.setattr(sink_module, "QUEUE_SIZE", 8)  # every chunk queued at once
    db = tmp_path / "out.duckdb"
    sink = DuckDBSink(db, filters=FILTERS, run_id="r")
    sinks.append(sink)
    for completed in chunks:
        sink.accept(completed)
    assert in_transaction.wait(60), "the loader never reached chunk 4's rows"
    sink.abort()
    sink._loader.thread.join(60)  # abort() bounds its own wait; the test waits for the end
    assert not sink._loader.thread.is_alive()
    assert not list(spooler.dir.iterdir()), "queued spool files are deleted"
    # The three chunks before the held one committed; the held one was rolled
    # back with its rows already inserted; nothing after it was started.
    assert assert_whole_chunks(db, dataset) == 3


_KILL_CHILD = textwrap.dedent(
    """
    import datetime as dt, faulthandler, os, sys, threading
    from pathlib import Path
    from mpexport.sinks.duckdb import load as load_duckdb, sink as sink_duckdb
    from mpexport.fakeserver import Dataset
    from mpexport.model import Chunk, CompletedChunk, QueryFilters
    from mpexport.sinks.duckdb.sink import DuckDBSink

    root, hold = Path(sys.argv[1]), int(sys.argv[2])

    def say(text):
        # One write per line: the loader thread and the main thread both
        # report, and print() would let their lines interleave.
        os.write(1, text.encode() + b"\\n")

    # Stuck (or never killed) for this long: show where, and end.
    faulthandler.dump_traceback_later(120, exit=True)
    real_load = sink_duckdb.load_chunk

    def load(con, completed, **kwargs):
        # Chunk `hold` stops inside its transaction once its rows are in,
        # says so, and waits there for the SIGKILL.
        check_stop = kwargs.pop("check_stop")
        if completed.chunk.index != hold:
            return real_load(con, completed, check_stop=check_stop, **kwargs)
        before = con.execute("SELECT count(*) FROM events").fetchone()[0]

        def hold_once_rows_are_in():
            if con.execute("SELECT count(*) FROM events").fetchone()[0] > before:
                say("holding")
                threading.Event().wait()
            check_stop()

        return real_load(con, completed, check_stop=hold_once_rows_are_in, **kwargs)

    sink_duckdb.load_chunk = load
    load_duckdb.BATCH_ROWS = 700  # several slices per chunk
    sink_duckdb.QUEUE_SIZE = 4  # the parent's arithmetic counts on it
    dataset = Dataset(seed=3, events_per_day=3000, long_values=False)
    sink = DuckDBSink(root / "out.duckdb", filters=QueryFilters(), run_id="k")
    for n in range(40):
        day = dt.date(2024, 3, 1) + dt.timedelta(days=n)
        data = b"".join(dataset.lines_for_range(day, day))
        path = root / f"spool-{n}.ndjson"
        path.write_bytes(data)
        sink.accept(CompletedChunk(Chunk(n, day, day), path, data.count(b"\\n"), len(data),
                                   "", 1, 0.0))
        say(f"accepted {n}")
    sink.close()
    say("closed")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (SIGKILL)")
@pytest.mark.parametrize("kill_at", ["inside-a-transaction", "with-chunks-queued"])
def test_sigkill_leaves_whole_chunks(tmp_path: Path, kill_at: str) -> None:
    """SIGKILL leaves whole chunks: inside chunk 5's transaction with its rows
    in, or wherever the loader is once chunk 8 was queued."""
    hold = 5 if kill_at == "inside-a-transaction" else -1
    signal_line = b"holding" if hold >= 0 else b"accepted 8"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(tmp_path), str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        seen = []
        for line in proc.stdout:  # ends when the child does (at the latest after 120 s)
            seen.append(line.strip())
            if seen[-1] == signal_line:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert seen and seen[-1] == signal_line, (seen, proc.stderr.read().decode())
    proc.stderr.close()
    loaded = assert_whole_chunks(tmp_path / "out.duckdb",
                                 Dataset(seed=3, events_per_day=3000, long_values=False))
    if hold >= 0:
        assert loaded == hold  # chunks 0-4 committed; chunk 5's rows rolled back
    else:
        # Chunk 8 went into a queue of 4: the loader had taken chunk 4, so
        # it had committed chunks 0-3.
        assert 4 <= loaded <= 40


# ------------------------------------------------------------------ Parquet


def test_parquet_equals_table(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    pq = tmp_path / "parquet"
    load(db, [spooler.chunk(day(0), day(2)), spooler.chunk(day(3), day(3))], parquet_dir=pq)
    # Overlapping reload, then a replace of one day: files must follow the table.
    load(db, [spooler.chunk(day(1), day(4))], parquet_dir=pq, refresh=True)
    subset = spooler.lines(day(2), day(2))[:5]
    load(db, [spooler.chunk(day(2), day(2), b"".join(subset))], parquet_dir=pq,
         refresh=True, replace=True)
    # Beside the day folders only the lake's manifest (_mpexport/, which engines skip).
    assert sorted(p.name for p in pq.iterdir()) == [
        "_mpexport", *(f"date={day(n)}" for n in range(5))]
    assert all(
        [f.name for f in (pq / f"date={day(n)}").iterdir()] == ["data.parquet"] for n in range(5)
    )
    glob = str(pq / "*" / "*.parquet")
    cols = "event, time, distinct_id, insert_id, mp_processing_time_ms, properties::VARCHAR"
    with duckdb.connect(str(db), read_only=True) as con:
        table = sorted(con.execute(f"SELECT {cols} FROM events").fetchall())
        files = sorted(con.execute(
            f"SELECT {cols} FROM read_parquet('{glob}', hive_partitioning=true)"
        ).fetchall())
        wrong = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
            "WHERE date <> CAST(time AT TIME ZONE 'UTC' AS DATE)"
        ).fetchone()
    assert files == table
    assert wrong == (0,)
    assert len(table) == len(expected_keys(spooler.lines(day(0), day(4)))) - (
        len(expected_keys(spooler.lines(day(2), day(2)))) - len(expected_keys(subset))
    )


def test_rows_outside_their_chunks_days_are_still_deduplicated(
    tmp_path: Path, spooler: Spooler
) -> None:
    """A chunk whose events lie far from its own days falls back to the staged path."""
    db = tmp_path / "out.duckdb"
    lines = spooler.lines(day(20), day(20))
    load(db, [spooler.chunk(day(20), day(20))])
    # The same events again, labelled as another, distant day: the fast path
    # sees an empty window there, inserts, notices rows outside it, rolls
    # back and dedupes against the stored rows instead.
    sink = load(db, [spooler.chunk(day(2), day(2), b"".join(lines))])
    assert sink.stats.rows_inserted == 0
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(lines)


def test_fast_path_drops_copies_within_the_chunk(tmp_path: Path, spooler: Spooler) -> None:
    db = tmp_path / "out.duckdb"
    lines = spooler.lines(day(4), day(4))
    doubled = b"".join(lines) + b"".join(lines[:50])
    sink = load(db, [spooler.chunk(day(4), day(4), doubled)])
    keys = stored_keys(db)
    assert len(keys) == len(set(keys)) == len(expected_keys(lines))
    assert sink.stats.duplicates_skipped == len(lines) + 50 - len(keys)


def test_a_lost_lake_lock_stops_the_parquet_writes_of_a_database(
    tmp_path: Path, spooler: Spooler
) -> None:
    """--db --parquet: every day file and manifest write first checks the lake's lock."""
    db, out = tmp_path / "out.duckdb", tmp_path / "lake"
    lost = threading.Event()
    checks: list[int] = []

    def lake_check() -> None:
        checks.append(1)
        if lost.is_set():
            raise LoaderError("this run lost the lock of the lake", "rerun")

    load(db, [spooler.chunk(day(0), day(1))], parquet_dir=out, lake_check=lake_check)
    written = {p.parent.name: p.read_bytes() for p in out.glob("*/*.parquet")}
    assert len(written) == 2 and checks  # each day file and the manifest were checked first

    lost.set()  # another run took the lake over (a lapsed lease)
    with pytest.raises(LoaderError, match="lost the lock"):
        load(db, [spooler.chunk(day(1), day(2))], parquet_dir=out, lake_check=lake_check)
    assert {p.parent.name: p.read_bytes() for p in out.glob("*/*.parquet")} == written


def test_the_lake_lock_is_checked_again_after_a_days_copy_is_built(
    tmp_path: Path, spooler: Spooler
) -> None:
    """A COPY can take minutes (a laptop asleep): the lock is checked again before the upload."""
    db, out = tmp_path / "out.duckdb", tmp_path / "lake"
    calls: list[int] = []

    def lake_check() -> None:
        calls.append(1)
        if len(calls) == 2:  # passed before the day's COPY, lost by the time it is built
            raise LoaderError("this run lost the lock of the lake", "rerun")

    with pytest.raises(LoaderError, match="lost the lock"):
        load(db, [spooler.chunk(day(0), day(0))], parquet_dir=out, lake_check=lake_check)
    assert list(out.glob("*/*.parquet")) == []
