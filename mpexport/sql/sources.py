"""What ``mpexport sql`` reads: a DuckDB file, a lake (a folder or a URL) or an NDJSON export.

A DuckDB file is opened as it is (:func:`~mpexport.sql.database.open_read_only`).
A lake's days and an NDJSON file are presented as one ``events`` view:

- a lake (``export --parquet``: ``date=YYYY-MM-DD/data.parquet`` under a
  folder, ``s3://``, ``gs://`` or ``az://``) gives the columns of its files
  and the ``date`` of each file's folder (Hive partitions); ``properties``
  reads as JSON, as in a DuckDB file;
- an NDJSON file (``export --output``, also gzipped) gives the columns of a
  DuckDB file's events table, read as ``export --db`` reads them (``time``
  in UTC, as without ``--project-timezone``).

The view reads copies: the day files (downloaded from an object store, or
copied from the folder) or the NDJSON file are copied into the connection's
private folder first, and the sandbox allows that folder and nothing else.
The sandbox's allowed folders are open to writes too (measured: a ``COPY
... TO`` a lake's own file replaced it), so a view over the originals would
let a query change the input; over copies, anything a query writes is gone
when ``sql`` ends. The copy costs disk space and time in proportion to the
input, so a lake's days can be chosen (``--from``/``--to``): only those are
copied.

The view is kept in a small DuckDB file in the private folder, opened
read-only like any database, so a statement that would write behaves the
same whatever the input.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpexport.errors import UsageError
from mpexport.sinks.duckdb.lock import lock_path
from mpexport.sinks.duckdb.rows import MAX_OBJECT_SIZE, rows_sql, sql_string
from mpexport.sinks.duckdb.schema import EVENT_COLUMNS
from mpexport.sinks.lake.manifest import MANIFEST_KEY
from mpexport.sinks.lake.parquet import FILE_NAME as DAY_FILE
from mpexport.sinks.lake.parquet import day_of_key
from mpexport.sinks.lake.store import is_url
from mpexport.sql.database import (
    SANDBOX,
    complaint,
    open_read_only,
    private_folder,
    sandboxed,
)

VIEW = "events"
# A DuckDB file starts with an 8-byte checksum, then these bytes (as
# export --db checks its file).
_DUCKDB_MAGIC = (8, b"DUCK")
_GZIP_MAGIC = b"\x1f\x8b"
# An empty file is an export of days without events, when it is named as one.
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json")
_HEAD_BYTES = 4096
INPUT_HINT = "give a DuckDB file, a lake folder or URL, or an NDJSON export file"


@dataclass(frozen=True)
class Opened:
    """A sandboxed connection, and the views mpexport made in it (listed by ``--tables``)."""

    con: Any
    views: tuple[str, ...] = ()


def kind_of(source: str) -> str:
    """``duckdb``, ``lake`` or ``ndjson``; raise :class:`UsageError` for anything else.

    Reads at most a few kilobytes of a file and writes nothing. A missing
    path is left to the DuckDB file's own check (its message names the fix).
    """
    if is_url(source):
        return "lake"
    path = Path(source)
    if path.is_dir():
        return "lake"
    if not path.is_file():
        return "duckdb"
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return "duckdb"  # held by another program, or denied: DuckDB's open says which
    offset, magic = _DUCKDB_MAGIC
    if head[offset:offset + len(magic)] == magic or lock_path(path).exists():
        # A file a run is creating has its lock but no header yet: its
        # open is refused as in use (exit 4), not as the wrong kind.
        return "duckdb"
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(_GZIP_MAGIC) or start.startswith(b"{"):
        return "ndjson"
    if not head and path.name.lower().endswith(NDJSON_SUFFIXES):
        return "ndjson"
    raise UsageError(f"{path} exists but is not a DuckDB database",
                     f"{INPUT_HINT}; the file was not changed")


@dataclass(frozen=True)
class Days:
    """The UTC days of a lake to read (inclusive; None: from the first, to the last)."""

    first: dt.date | None = None
    last: dt.date | None = None

    def __contains__(self, day: dt.date) -> bool:
        return ((self.first is None or day >= self.first)
                and (self.last is None or day <= self.last))

    @property
    def limited(self) -> bool:
        """True when some days may be left out."""
        return self.first is not None or self.last is not None


@contextmanager
def open_source(source: str, environ: Mapping[str, str],
                days: Days = Days()) -> Iterator[Opened]:
    """Open ``source`` for queries, sandboxed, for the block (see the module's docstring).

    ``environ`` holds the object stores' variables (endpoint, credentials)
    for a lake URL; ``days`` limits a lake's days (only a lake has days to
    choose: for a file, :class:`UsageError`).
    """
    kind = kind_of(source)
    if days.limited and kind != "lake":
        raise UsageError("--from and --to choose a lake's days",
                         "for a file, filter in the query: WHERE time >= '2024-05-01'")
    if kind == "duckdb":
        with open_read_only(Path(source)) as con:
            yield Opened(con)
        return
    with private_folder() as private:
        data = private / "data"
        data.mkdir()
        if kind == "lake":
            view = _lake_view(_copy_lake(source, data, environ, days))
        else:
            view = _ndjson_view(_copy_file(Path(source), data))
        catalog = private / "catalog.duckdb"
        _write_catalog(catalog, view, source)
        con = sandboxed(catalog, private, data=data)
        try:
            yield Opened(con, (VIEW,))
        finally:
            con.close()


def _copy_lake(source: str, data: Path, environ: Mapping[str, str], days: Days) -> list[Path]:
    """Copy a lake's day files of ``days`` under ``data`` (same keys); the copies, by day."""
    from mpexport.sinks.lake.objects import startup_error
    from mpexport.sinks.lake.store import open_store

    store = open_store(source, environ=environ)
    try:
        keys = store.list_keys()
        held = {key: day for key in keys if (day := day_of_key(key)) is not None}
        if not held and MANIFEST_KEY not in keys:
            raise UsageError(f"no lake at {source}: no date=YYYY-MM-DD/{DAY_FILE} files there",
                             f"{INPUT_HINT} ('mpexport export --parquet' writes a lake)")
        copies = []
        for key in sorted(key for key, day in held.items() if day in days):
            copy = data.joinpath(*key.split("/"))
            copy.parent.mkdir(parents=True, exist_ok=True)
            if not store.get_file(key, copy):
                raise UsageError(f"the lake {source} changed while it was read: {key} is gone",
                                 "run the query again")
            copies.append(copy)
    except OSError as exc:
        raise startup_error(exc, source, getattr(store, "masked", None)) from exc
    return copies


def _lake_view(files: list[Path]) -> str:
    """The SELECT of the events view over the lake's day files (typed and empty without days)."""
    if not files:
        columns = [f"NULL::{kind} AS {name}" for name, kind in EVENT_COLUMNS]
        return f"SELECT {', '.join(columns)}, NULL::DATE AS date WHERE false"
    paths = ", ".join(sql_string(str(path)) for path in files)
    # Files keep properties as text, for every engine (see
    # mpexport.sinks.lake.parquet); here it is JSON, as in a DuckDB file.
    return ("SELECT * REPLACE (CAST(properties AS JSON) AS properties) "
            f"FROM read_parquet([{paths}], hive_partitioning = true, "
            "hive_types = {'date': DATE})")


def _copy_file(path: Path, data: Path) -> Path:
    with path.open("rb") as handle:
        packed = handle.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    copy = data / ("events.ndjson.gz" if packed else "events.ndjson")
    try:
        shutil.copyfile(path, copy)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}",
                         "check its permissions and the temp folder's free space") from exc
    return copy


def _ndjson_view(copy: Path) -> str:
    """The SELECT of the events view over an NDJSON export: the events table's columns.

    Unlike the loader's, this reader fails on a line it cannot read: a
    query's answer never leaves events out without saying so.
    """
    compression = "gzip" if copy.name.endswith(".gz") else "none"
    reader = (f"read_json({sql_string(str(copy))}, format = 'newline_delimited', "
              "columns = {'event': 'VARCHAR', 'properties': 'JSON'}, "
              f"maximum_object_size = {MAX_OBJECT_SIZE}, compression = '{compression}')")
    return rows_sql(reader)


def _write_catalog(catalog: Path, view: str, source: str) -> None:
    """Create the DuckDB file that holds the events view (with access: it reads the copies)."""
    import duckdb

    try:
        with duckdb.connect(str(catalog), config=dict(SANDBOX)) as con:
            con.execute(f"CREATE VIEW {VIEW} AS {view}")
    except duckdb.Error as exc:
        raise UsageError(f"cannot read {source}: {complaint(exc)}", INPUT_HINT) from exc
