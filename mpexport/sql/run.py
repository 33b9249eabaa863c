"""``mpexport sql`` as one library call: check, open read-only, run, write the result.

The input is a DuckDB file, a lake (a folder or a URL) or an NDJSON export
file (:mod:`mpexport.sql.sources`), always opened in a sandbox that reads
the input and nothing else (:mod:`mpexport.sql.database`).

The result goes to a binary stream (stdout) or to ``--output FILE``, which
is written under a temp name beside it and moved over FILE only once the
whole result is there: a query that fails halfway leaves an existing FILE
as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from mpexport.atomic import replacing
from mpexport.errors import OutputClosed, OutputFileError, UsageError, reader_gone
from mpexport.sinks.duckdb.lock import lock_path
from mpexport.sql.formats import FORMATS, render


def _check_arguments(query: str | None, tables: bool, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if tables and query is not None:
        raise UsageError("give a QUERY or --tables, not both",
                         "--tables lists the tables; a QUERY runs on its own")
    if not tables and query is None:
        raise UsageError("no QUERY given",
                         'add one, e.g. "SELECT count(*) FROM events", or pass --tables')


def _check_output(output: Path, source: str) -> None:
    from mpexport.sinks.lake.store import is_url

    directory = output.parent if str(output.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"the directory of --output does not exist: {directory}",
                         "create it first or choose another path")
    if output.is_dir():
        raise UsageError(f"--output is a directory: {output}", "give a file name")
    if is_url(source):
        return
    # The input's own files would be replaced by the result.
    db_path = Path(source)
    target = output.resolve()
    if db_path.is_dir() and target.is_relative_to(db_path.resolve()):
        raise UsageError(f"--output {output} is inside the lake {db_path}",
                         "write the result to another folder")
    own = {db_path, Path(f"{db_path}.wal"), lock_path(db_path)}
    if target in {path.resolve() for path in own}:
        raise UsageError(f"--output {output} is the input's own file",
                         "write the result to another file")


def _write(chunks: Iterable[bytes], stream: BinaryIO) -> None:
    """Copy ``chunks`` to ``stream``, flushed batch by batch; a gone reader ends quietly."""
    try:
        for data in chunks:
            stream.write(data)
            # Rows show up as they come (a long query), and a reader that
            # went away (`| head`) is noticed at the next batch.
            stream.flush()
    except OSError as exc:
        if reader_gone(exc):
            raise OutputClosed() from None
        raise


def run_sql(
    source: str | Path,
    query: str | None = None,
    *,
    tables: bool = False,
    fmt: str = "table",
    output: Path | None = None,
    stdout: BinaryIO,
    environ: Mapping[str, str] | None = None,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
) -> None:
    """Run ``query`` (or list the tables) on ``source``; write it to ``output`` or ``stdout``.

    ``source`` is a DuckDB file, a lake folder or URL, or an NDJSON file;
    ``environ`` holds the variables an object store's URL needs (endpoint,
    credentials). ``first_day`` and ``last_day`` limit a lake's UTC days
    (only those are copied and read). Raises :class:`~mpexport.errors.UsageError` for bad
    arguments, a missing or unreadable input and a query DuckDB or the
    sandbox refuses; :class:`~mpexport.errors.DatabaseLockedError` when a run
    is writing the file or another program has it open;
    :class:`~mpexport.errors.CredentialsError` and
    :class:`~mpexport.errors.UnavailableError` when a lake's object store
    refuses or cannot be reached; :class:`~mpexport.errors.OutputClosed`
    when the reader of ``stdout`` went away; and
    :class:`~mpexport.errors.OutputFileError` when ``output`` cannot be written.
    """
    from mpexport.sql.database import list_tables, run_query
    from mpexport.sql.sources import Days, open_source

    _check_arguments(query, tables, fmt)
    if first_day and last_day and first_day > last_day:
        raise UsageError(f"--from {first_day} is after --to {last_day}",
                         "swap them or widen the range")
    source = str(source)
    if output is not None:
        output = Path(output)
        _check_output(output, source)
    with open_source(source, environ or {}, Days(first_day, last_day)) as opened:
        con = opened.con
        result = list_tables(con, opened.views) if tables else run_query(con, query or "")
        chunks = render(fmt, result.columns, result.batches)
        if output is None:
            _write(chunks, stdout)
            return
        try:
            with replacing(output) as temp, open(temp, "wb" if temp == output else "xb") as handle:
                # The result streams to the temp file; a failing query (an
                # error raised by ``chunks``) leaves before the replace.
                for data in chunks:
                    handle.write(data)
        except OSError as exc:
            raise OutputFileError(f"could not write --output {output}: {exc.strerror or exc}",
                                  "check the path, its permissions and free space") from exc

