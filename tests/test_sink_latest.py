"""Which copy of an event the loader keeps, on each of its paths, against real DuckDB files.

Of the copies sharing Mixpanel's key (event, distinct_id, time, $insert_id)
the table keeps the latest processed (``mp_processing_time_ms``; a missing
one is the earliest); copies processed at the same instant are ordered by a
hash of their properties, so the choice never depends on line order or on
the path that loaded the chunk; a stored row gives way only to a newer copy.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpexport.model import Chunk, CompletedChunk, QueryFilters
from mpexport.sinks.duckdb import load as load_module
from mpexport.sinks.duckdb.schema import create_schema
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.lake.parquet import day_window
from mpexport.sinks.lake.sink import seed_day

DAY = dt.date(2024, 3, 1)
NOON = int(dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC).timestamp())
FILTERS = QueryFilters()


def line(insert_id: str, tag: str, processed: int | None, *, name: str = "Purchase",
         extra: str = "") -> bytes:
    """One event line; ``extra`` is raw JSON text spliced into its properties."""
    props: dict[str, Any] = {"time": NOON, "distinct_id": "u-1", "$insert_id": insert_id,
                             "tag": tag}
    if processed is not None:
        props["mp_processing_time_ms"] = processed
    text = json.dumps({"event": name, "properties": props}, separators=(",", ":"))
    if extra:
        text = text[:-2] + "," + extra + "}}"
    return text.encode() + b"\n"


class Loads:
    """Chunks of one day through a real sink, counting the chunks that were staged."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.db = root / "events.duckdb"
        self.count = 0
        self.staged = 0
        staged = load_module._staged_insert

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.staged += 1
            return staged(*args, **kwargs)

        monkeypatch.setattr(load_module, "_staged_insert", counting)

    def load(self, lines: Sequence[bytes], **kwargs: Any) -> DuckDBSink:
        self.count += 1
        path = self.root / f"chunk-{self.count}.ndjson"
        data = b"".join(lines)
        path.write_bytes(data)
        completed = CompletedChunk(Chunk(self.count, DAY, DAY), path, len(lines), len(data),
                                   "0" * 64, 1, 0.0)
        sink = DuckDBSink(self.db, filters=FILTERS, run_id=f"run-{self.count}", refresh=True,
                          **kwargs)
        sink.accept(completed)
        sink.close()
        return sink

    def tags(self) -> dict[str, str]:
        """The stored copy of each $insert_id, by its tag."""
        with duckdb.connect(str(self.db), read_only=True) as con:
            rows = con.execute("SELECT insert_id, properties->>'tag' FROM events").fetchall()
        assert len(rows) == len({i for i, _ in rows}), "a key is stored twice"
        return dict(rows)


# Copies of four events in one chunk: "a" has three processing times, "b"
# one copy without any, "c" two copies processed at the same instant, "d"
# two copies without a processing time.
COPIES = [
    line("a", "a-early", 100), line("a", "a-latest", 300), line("a", "a-middle", 200),
    line("b", "b-untimed", None), line("b", "b-timed", 50),
    line("c", "c-one", 70), line("c", "c-two", 70),
    line("d", "d-one", None), line("d", "d-two", None),
]


def _setups() -> dict[str, Callable[[Loads, pytest.MonkeyPatch], dict[str, Any]]]:
    def fast(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        return {}

    def staged(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        # Another event of the day stored first: the chunk is deduplicated
        # against the table, on the staged path.
        loads.load([line("other", "other", 1)])
        return {}

    def sliced(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        staged(loads, monkeypatch)
        monkeypatch.setattr(load_module, "BATCH_ROWS", 2)
        return {}

    def parallel(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        # Two loader threads: the fast path's window over whole rows, not
        # the one-thread read in file order.
        return {"memory_limit": "512MB", "cpus": 2}

    def staged_parallel(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        # Two threads stage whole rows and dedupe them against the table.
        staged(loads, monkeypatch)
        return parallel(loads, monkeypatch)

    def sliced_parallel(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        sliced(loads, monkeypatch)
        return parallel(loads, monkeypatch)

    def two_step(loads: Loads, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        return {"memory_limit": "96MB"}  # below one statement's floor: raw rows staged first

    return {"fast": fast, "parallel": parallel, "staged": staged, "sliced": sliced,
            "staged_parallel": staged_parallel, "sliced_parallel": sliced_parallel,
            "two_step": two_step}


SETUPS = _setups()


@pytest.mark.parametrize("order", ["as listed", "reversed"])
@pytest.mark.parametrize("path", sorted(SETUPS))
def test_a_chunk_keeps_the_latest_copy_of_each_event(
    path: str, order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = Loads(tmp_path, monkeypatch)
    kwargs = SETUPS[path](loads, monkeypatch)
    before = loads.staged
    lines = COPIES if order == "as listed" else COPIES[::-1]
    sink = loads.load(lines, **kwargs)
    assert loads.staged - before == path.startswith(("staged", "sliced"))
    assert sink.budget.threads == (2 if "parallel" in path else 1)
    tags = loads.tags()
    assert tags["a"] == "a-latest" and tags["b"] == "b-timed"
    # Ties: the copy whose properties hash highest, the same on every path
    # and in either order.
    assert tags["c"] == _highest_hash(loads.db, COPIES[5:7])
    assert tags["d"] == _highest_hash(loads.db, COPIES[7:9])
    assert sink.stats.rows_inserted == 4
    assert sink.stats.duplicates_skipped == len(COPIES) - 4
    assert sink.stats.updated == 0


def _highest_hash(db: Path, copies: Sequence[bytes]) -> str:
    """The tag of the copy whose properties, read as the loader reads them, hash highest."""
    source = db.with_name("ties.ndjson")
    source.write_bytes(b"".join(copies))
    with duckdb.connect() as con:
        (tag,) = con.execute(
            f"SELECT properties->>'tag' FROM read_json('{source.as_posix()}', format = "
            "'newline_delimited', columns = {'event': 'VARCHAR', 'properties': 'JSON'}) "
            "ORDER BY hash(properties) DESC LIMIT 1"
        ).fetchone()
    return str(tag)


@pytest.mark.parametrize("budget", [{}, {"memory_limit": "512MB", "cpus": 2}],
                         ids=["one-thread", "two-threads"])
def test_a_stored_event_gives_way_only_to_a_newer_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: dict[str, Any]
) -> None:
    loads = Loads(tmp_path, monkeypatch)
    loads.load([line("same", "stored", 200), line("later", "stored", 200),
                line("untimed", "stored", None), line("earlier", "stored", 200),
                line("missing", "stored", 200), line("both", "stored", None)], **budget)
    sink = loads.load(**budget, lines=[
        line("same", "equal", 200), line("later", "newer", 201),
        line("untimed", "timed", 1), line("earlier", "older", 199),
        line("missing", "untimed", None), line("both", "also untimed", None),
        line("new", "new", 5),
    ])
    assert loads.tags() == {"same": "stored", "later": "newer", "untimed": "timed",
                            "earlier": "stored", "missing": "stored", "both": "stored",
                            "new": "new"}
    assert (sink.stats.rows_inserted, sink.stats.updated, sink.stats.duplicates_skipped) \
        == (1, 2, 4)
    with duckdb.connect(str(loads.db), read_only=True) as con:
        rows = con.execute("SELECT received, inserted, duplicates, updated FROM _mpexport_chunks "
                           "ORDER BY loaded_at").fetchall()
    assert rows == [(6, 6, 0, 0), (7, 1, 4, 2)]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_repaired_copy_competes_with_the_other_copies_of_its_event(
    threads: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line DuckDB refuses is repaired after the others are read: it must still win if newer.

    One loader thread (256MB) picks among all copies, repaired ones
    included, before inserting anything. Two threads insert the readable
    lines first, so a repaired copy of an inserted key sends the chunk to
    the staged path, while repaired lines of new keys stay on the fast path.
    """
    budget = {"memory_limit": "256MB"} if threads == 1 else {"memory_limit": "512MB", "cpus": 2}
    loads = Loads(tmp_path, monkeypatch)
    lone = r'"note":"cut \ud83d"'  # a lone surrogate: refused by DuckDB, repaired
    sink = loads.load([
        line("x", "readable", 100), line("x", "repaired", 200, extra=lone),
        line("y", "readable", 300), line("y", "repaired", 200, extra=lone),
        line("z", "repaired", 1, extra=lone),
    ], **budget)
    assert sink.budget.threads == threads
    assert loads.staged == (threads > 1)
    assert loads.tags() == {"x": "repaired", "y": "readable", "z": "repaired"}
    assert (sink.stats.rows_inserted, sink.stats.repaired, sink.stats.updated) == (3, 3, 0)
    assert sink.stats.duplicates_skipped == 2

    (tmp_path / "other").mkdir()
    other = Loads(tmp_path / "other", monkeypatch)
    other.load([line("x", "readable", 100), line("z", "repaired", 1, extra=lone)], **budget)
    assert other.staged == 0 and other.tags() == {"x": "readable", "z": "repaired"}


def test_a_manifest_without_the_updated_column_gains_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = Loads(tmp_path, monkeypatch)
    loads.load([line("a", "first", 1)])
    with duckdb.connect(str(loads.db)) as con:  # as files written before the column existed
        con.execute("ALTER TABLE _mpexport_chunks DROP COLUMN updated")
    loads.load([line("a", "second", 2)])
    with duckdb.connect(str(loads.db), read_only=True) as con:
        rows = con.execute("SELECT inserted, updated FROM _mpexport_chunks "
                           "ORDER BY loaded_at").fetchall()
    assert rows == [(1, 0), (0, 1)]
    assert loads.tags() == {"a": "second"}


def test_a_lake_day_read_back_keeps_the_newer_copy(tmp_path: Path) -> None:
    """A day read back after this run stored rows of it: the lake's copy stays unless older."""
    db = tmp_path / "scratch.duckdb"
    columns = ("event, time, distinct_id, insert_id, mp_processing_time_ms, "
               "properties")

    def rows(tags: dict[str, tuple[str, int | None]]) -> str:
        return " UNION ALL ".join(
            f"SELECT 'Purchase' AS event, make_timestamptz({NOON * 1_000_000}::BIGINT) AS time, "
            f"'u-1' AS distinct_id, '{key}' AS insert_id, "
            f"{'NULL' if ms is None else ms}::BIGINT AS mp_processing_time_ms, "
            f"'{{\"tag\":\"{tag}\"}}' AS properties" for key, (tag, ms) in tags.items())

    file = tmp_path / "day.parquet"
    lake = rows({"older": ("lake", 1), "newer": ("lake", 9), "equal": ("lake", 5),
                 "held": ("lake", 3)})
    run = rows({"older": ("run", 2), "newer": ("run", 8), "equal": ("run", 5),
                "run": ("run", None)})
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con, "events")  # the sink makes it with its first write
        con.execute(f"COPY ({lake}) TO '{file.as_posix()}'")
        con.execute(f"INSERT INTO events ({columns}) {run}")
        seed_day(con, file, day_window(DAY))
        stored = dict(con.execute("SELECT insert_id, properties->>'tag' FROM events").fetchall())
        (count,) = con.execute("SELECT count(*) FROM events").fetchone()
    assert count == 5
    assert stored == {"older": "run", "newer": "lake", "equal": "lake", "held": "lake",
                      "run": "run"}


# (key, processing time, tag, refused): a copy of an event; refused copies
# carry a lone surrogate, so DuckDB refuses the line and the loader repairs it.
_COPY = st.tuples(st.sampled_from("abcd"), st.sampled_from([None, 1, 2]),
                  st.sampled_from(["t1", "t2"]), st.booleans())


@settings(max_examples=20, deadline=None)
@given(copies=st.lists(_COPY, min_size=1, max_size=10),
       earlier=st.lists(_COPY, max_size=4))
def test_every_path_keeps_the_same_copy_the_latest(
    tmp_path_factory: pytest.TempPathFactory, copies: list[tuple[str, int | None, str, bool]],
    earlier: list[tuple[str, int | None, str, bool]],
) -> None:
    """``earlier`` copies, when drawn, are stored by a chunk of their own first."""
    lone = r'"note":"cut \ud83d"'

    def lines_of(drawn: list[tuple[str, int | None, str, bool]]) -> list[bytes]:
        return [line(key, tag, processed, extra=lone if refused else "")
                for key, processed, tag, refused in drawn]

    stored: dict[str, dict[str, tuple[str, int | None]]] = {}
    for path, setup in SETUPS.items():
        root = tmp_path_factory.mktemp(path)
        with pytest.MonkeyPatch.context() as patch:
            loads = Loads(root, patch)
            kwargs = setup(loads, patch)
            if earlier:
                loads.load(lines_of(earlier), **kwargs)
            loads.load(lines_of(copies), **kwargs)
        with duckdb.connect(str(loads.db), read_only=True) as con:
            rows = con.execute("SELECT insert_id, properties->>'tag', mp_processing_time_ms "
                               "FROM events WHERE insert_id <> 'other'").fetchall()
        assert len(rows) == len({i for i, _, _ in rows}), f"{path}: a key is stored twice"
        stored[path] = {i: (tag, mp) for i, tag, mp in rows}
    every = earlier + copies
    latest = {key: max((p for k, p, _, _ in every if k == key), key=lambda p: -1 if p is None
                       else p) for key, _, _, _ in every}
    for path, table in stored.items():
        assert {i: mp for i, (_, mp) in table.items()} == latest, path
        assert table == stored["fast"], f"{path} kept other copies than the file-order path"
