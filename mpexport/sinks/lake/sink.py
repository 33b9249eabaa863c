"""The lake as the sink: ``--parquet DIR|URL`` without ``--db``.

Each chunk goes through the DuckDB sink's machinery into a scratch database
in a temp folder (deleted when the run ends), so deduplication, typing,
repairs and the memory budget are those of ``--db``. After each commit the
UTC days the chunk touched are written to the lake from the scratch table,
each day's file whole, then the lake's manifest records them
(:class:`~mpexport.sinks.parquet.ParquetCopy`).

The scratch table holds only this run's events, so before a day already in
the lake is written, its file is read back into the table (deduplicated on
Mixpanel's key): the new file is the old one plus what this run added, as
``--db`` would hold it. Days that the chunk is expected to touch are read
back before it loads, so the counts of new and duplicate events mean what
they mean with ``--db``; a day touched unexpectedly is read back before its
file is replaced, so nothing the lake held is ever lost.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb.rows import key_match, sql_string
from mpexport.sinks.duckdb.schema import quote_ident
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.parquet import ParquetCopy, day_key, day_window, pending_days, utc_days

if TYPE_CHECKING:
    from mpexport.interrupt import InterruptGuard
    from mpexport.request import ExportRequest

SCRATCH_NAME = "lake.duckdb"
TABLE = "events"


class LakeCopy(ParquetCopy):
    """A Parquet copy whose table is a scratch one: days the lake holds are read back first."""

    failure_hint = ("the days written so far are in the lake; "
                    "rerun the same command to fetch the rest")
    in_use_note = ("the lake keeps the old file whole; rerun to write it "
                   "(with --refresh if the lake held that day before)")

    def __init__(self, location: str, *, run_id: str, filters: str,
                 project_timezone: str | None, staging: Path) -> None:
        super().__init__(location, TABLE, run_id=run_id, filters=filters,
                         project_timezone=project_timezone, staging=staging)
        self.staging = staging
        self.seeded: set[dt.date] = set()

    def seed(self, con: Any, days: Iterable[dt.date]) -> None:
        """Read the lake's files of ``days`` into the table, once per day and run."""
        todo = sorted(set(days) & self.held - self.seeded)
        if todo:
            self._guarded("reading Parquet files from", lambda: self._seed(con, todo))

    def _seed(self, con: Any, days: list[dt.date]) -> None:
        target = quote_ident(self.table)
        for day in days:
            path = self.staging / f"seed-{day.isoformat()}.parquet"
            try:
                if self.store.get_file(day_key(day), path):
                    window = day_window(day)
                    # Files of older versions hold properties as JSON, newer
                    # ones as text: the cast reads both.
                    con.execute(
                        f"INSERT INTO {target} SELECT p.event, p.time, p.distinct_id, "
                        "p.insert_id, p.mp_processing_time_ms, CAST(p.properties AS JSON) "
                        f"FROM read_parquet({sql_string(str(path))}) AS p "
                        f"ANTI JOIN (SELECT event, distinct_id, time, insert_id FROM {target} "
                        f"WHERE {window}) AS e ON {key_match('p', 'e')}"
                    )
            finally:
                path.unlink(missing_ok=True)
            self.seeded.add(day)

    def flush(self, con: Any, chunk: Any = None) -> None:
        # A row outside its chunk's days (odd data) makes a day pending that
        # was not read back: read it now, before its file is replaced.
        days = self._guarded("reading the pending days of", lambda: pending_days(con, TABLE))
        self.seed(con, days)
        super().flush(con, chunk)


class LakeSink(DuckDBSink):
    """A DuckDB sink over a scratch file whose days go to the lake after each commit.

    What is held, for skipping and for a sync's range, is the lake's manifest's.
    """

    def __init__(self, lake: LakeCopy, scratch: Path, **kwargs: Any) -> None:
        self.lake = lake
        super().__init__(scratch / SCRATCH_NAME, table=TABLE, parquet=lake, **kwargs)

    def _open(self) -> Any:
        con = super()._open()
        covered = self.lake.manifest.covered()
        with self._lock:
            self._covered = covered
            self._covered_at_open = frozenset(covered.get(self._fingerprint, ()))
            self.day_volumes = self.lake.manifest.day_volumes()
        return con

    def _load(self, con: Any, completed: CompletedChunk) -> None:
        chunk = completed.chunk
        if not self._loader.stopping:
            self.lake.seed(con, utc_days(chunk, self.lake.project_timezone))
        before = self.stats.chunks
        try:
            super()._load(con, completed)
        except BaseException:
            if self.stats.chunks > before:
                # Committed to the scratch table, not written to the lake:
                # a resume must fetch it again.
                self.stats.chunks -= 1
                with self._lock:
                    self.loaded_days.difference_update(
                        chunk.from_date + dt.timedelta(days=n) for n in range(chunk.days))
            raise


@contextmanager
def open_lake(
    location: str,
    request: ExportRequest,
    *,
    run_id: str | None = None,
    replace: bool = False,
    refresh: bool = False,
    memory_limit: str | None = None,
    guard: InterruptGuard | None = None,
    spool_dir: Path | None = None,
) -> Iterator[LakeSink]:
    """Open the lake at ``location`` and its scratch database; abort and delete it on the way out.

    Fails before anything is fetched when the lake cannot be reached or read.
    The loader thread has ended and the scratch folder is gone when the block is left.
    """
    from mpexport.database import check_replace
    from mpexport.spool import spool_folder

    check_replace(request, replace)
    run_id = run_id or uuid.uuid4().hex
    check_stop: Callable[[], None] | None = guard.raise_if_requested if guard else None
    # A spool folder: locked while the run lives, removed by a later run if
    # this one is killed.
    with spool_folder(spool_dir) as scratch:
        lake = LakeCopy(location, run_id=run_id, filters=request.filters.fingerprint(),
                        project_timezone=request.project_timezone, staging=scratch)
        sink = LakeSink(lake, scratch, filters=request.filters, run_id=run_id,
                        replace=replace, refresh=refresh or replace,
                        project_timezone=request.project_timezone,
                        memory_limit=memory_limit, check_stop=check_stop)
        try:
            if check_stop is not None:
                check_stop()
            yield sink
        finally:
            sink.abort()  # a no-op once the run closed it
