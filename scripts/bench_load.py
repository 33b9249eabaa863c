"""Benchmark the DuckDB sink.

(a) The sink's load rate (dedupe, manifest, one transaction per chunk)
    against a bare DuckDB ``read_json`` of the same bytes into the same schema.
(b) Loading one chunk into a table that already holds ``--big-rows`` rows
    against loading it into an empty table: the dedupe is restricted to the
    chunk's time window, so the ratio should stay near 1.

Prints a Markdown table. Example::

    .venv/bin/python scripts/bench_load.py --events 500000 --big-rows 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

import duckdb

from mpexport.fakeserver import Dataset
from mpexport.model import Chunk, CompletedChunk, QueryFilters
from mpexport.sinks.duckdb.schema import EVENT_COLUMNS, create_schema
from mpexport.sinks.duckdb.sink import DuckDBSink

START = dt.date(2024, 5, 1)
FILTERS = QueryFilters()


def make_spools(root: Path, events: int, per_day: int) -> list[tuple[dt.date, Path, int]]:
    """Write one NDJSON file per day until about ``events`` lines exist."""
    dataset = Dataset(seed=42, events_per_day=per_day, long_values=True)
    out: list[tuple[dt.date, Path, int]] = []
    total = 0
    day = START
    while total < events:
        lines = dataset.lines_for_day(day)
        path = root / f"master-{day.isoformat()}.ndjson"
        path.write_bytes(b"".join(lines))
        out.append((day, path, len(lines)))
        total += len(lines)
        day += dt.timedelta(days=1)
    return out


def timed(repeats: int, setup: Callable[[], object], run: Callable[[object], None]) -> float:
    """Median seconds of ``run`` over ``repeats``; ``setup`` runs untimed before each."""
    samples = []
    for _ in range(repeats):
        state = setup()
        started = time.perf_counter()
        run(state)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def copies(spools: list[tuple[dt.date, Path, int]], work: Path) -> list[CompletedChunk]:
    """Fresh spool copies (the sink deletes what it loads)."""
    spool = work / f"spool-{uuid.uuid4().hex}"
    spool.mkdir()
    chunks = []
    for index, (day, master, lines) in enumerate(spools):
        path = spool / master.name
        shutil.copyfile(master, path)
        size = path.stat().st_size
        chunks.append(CompletedChunk(Chunk(index, day, day), path, lines, size, "", 1, 0.0))
    return chunks


def sink_load(db: Path, chunks: list[CompletedChunk]) -> None:
    """Load chunks through the sink, as an export does."""
    sink = DuckDBSink(db, filters=FILTERS, run_id="bench", refresh=True)
    for completed in chunks:
        sink.accept(completed)
    sink.close()


def bare_load(db: Path, paths: list[Path]) -> None:
    """The floor: one read_json of all files straight into the table, no dedupe."""
    columns = ", ".join(f'"{name}" {kind}' for name, kind in EVENT_COLUMNS)
    files = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    with duckdb.connect(str(db), config={"preserve_insertion_order": False}) as con:
        con.execute(f"CREATE TABLE events ({columns})")
        con.execute(
            f"""INSERT INTO events
            SELECT event, to_timestamp(CAST(properties->>'$.time' AS DOUBLE)),
                   properties->>'$.distinct_id', properties->>'$."$insert_id"',
                   TRY_CAST(properties->>'$.mp_processing_time_ms' AS BIGINT), properties
            FROM read_json({files}, format = 'newline_delimited',
                           columns = {{'event': 'VARCHAR', 'properties': 'JSON'}})"""
        )


def create_tables(db: Path) -> None:
    """A database file with mpexport's tables and no rows (a sink makes them on its first write)."""
    with duckdb.connect(str(db)) as con:
        create_schema(con, "events")


def fill_big(db: Path, rows: int) -> None:
    """Create the schema and ``rows`` synthetic events over the year before START."""
    create_tables(db)
    span_us = 365 * 86_400 * 1_000_000
    start_us = int(dt.datetime(2023, 5, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
    with duckdb.connect(str(db)) as con:
        # Ordered by time like an export's chunks, so zonemaps are as tight as
        # in a real table built up chunk by chunk.
        con.execute(
            f"""INSERT INTO events
            SELECT 'Page View', make_timestamptz({start_us} + i * ({span_us} // {rows})),
                   'u-' || (i % 5000), md5(i::VARCHAR)[:16], NULL,
                   ('{{"time":' || (({start_us} + i * ({span_us} // {rows})) // 1000000)
                    || ',"$browser":"Chrome","i":' || i || '}}')::JSON
            FROM range({rows}) AS r(i)"""
        )


def undo_chunk(db: Path, day: dt.date) -> None:
    """Remove one loaded day again so each repeat loads into the same table."""
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"DELETE FROM events WHERE CAST(time AS DATE) = DATE '{day}'")
        con.execute("DELETE FROM _mpexport_chunks")


def main(argv: list[str] | None = None) -> int:
    """Run both comparisons and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--per-day", type=int, default=50_000, help="events per day (= chunk)")
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mpexport-bench-", dir=args.dir))
    try:
        began = time.perf_counter()
        spools = make_spools(work, args.events, args.per_day)
        events = sum(n for _, _, n in spools)
        size = sum(p.stat().st_size for _, p, _ in spools)
        print(f"generated {events} events, {size / 1e6:.0f} MB, {len(spools)} days "
              f"in {time.perf_counter() - began:.1f}s", file=sys.stderr)

        def fresh_db() -> Path:
            return work / f"db-{uuid.uuid4().hex}.duckdb"

        def sink_setup() -> tuple[Path, list[CompletedChunk]]:
            return fresh_db(), copies(spools, work)

        def sink_run(state: object) -> None:
            db, chunks = cast(tuple[Path, list[CompletedChunk]], state)
            sink_load(db, chunks)

        def bare_run(state: object) -> None:
            bare_load(state, [p for _, p, _ in spools])  # type: ignore[arg-type]

        sink_s = timed(args.repeats, sink_setup, sink_run)
        bare_s = timed(args.repeats, fresh_db, bare_run)

        one = spools[:1]
        empty_db = fresh_db()
        create_tables(empty_db)
        big_db = fresh_db()
        began = time.perf_counter()
        fill_big(big_db, args.big_rows)
        print(f"filled {args.big_rows} rows in {time.perf_counter() - began:.1f}s",
              file=sys.stderr)

        def one_chunk(db: Path) -> tuple[Callable[[], object], Callable[[object], None]]:
            def setup() -> object:
                undo_chunk(db, one[0][0])
                return copies(one, work)

            def run(state: object) -> None:
                sink_load(db, state)  # type: ignore[arg-type]

            return setup, run

        empty_s = timed(args.repeats, *one_chunk(empty_db))
        big_s = timed(args.repeats, *one_chunk(big_db))
        chunk_events = one[0][2]
        cpus = os.cpu_count()
        print(f"\nDuckDB {duckdb.__version__}, {cpus} CPUs, median of {args.repeats}\n")
        print("| case | events | seconds | events/s | ratio |")
        print("|---|---:|---:|---:|---:|")
        print(f"| bare read_json into schema | {events} | {bare_s:.2f} | {events / bare_s:,.0f} "
              "| 1.00 |")
        print(f"| DuckDBSink ({len(spools)} chunks, dedupe, manifest) | {events} | {sink_s:.2f} "
              f"| {events / sink_s:,.0f} | {sink_s / bare_s:.2f} |")
        print(f"| one chunk into empty table | {chunk_events} | {empty_s:.2f} "
              f"| {chunk_events / empty_s:,.0f} | 1.00 |")
        print(f"| one chunk into {args.big_rows:,}-row table | {chunk_events} | {big_s:.2f} "
              f"| {chunk_events / big_s:,.0f} | {big_s / empty_s:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
