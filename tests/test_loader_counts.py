"""Counts that must add up before a chunk commits (issue 20).

The loader's refused-line pass relies on two behaviours of DuckDB's NDJSON
reader that are not documented guarantees: ``ignore_errors`` gives one row
without properties per refused line, and ``row_number() OVER ()`` follows
the file. These tests make the reader's counts disagree with the chunk's
line count, on every way a chunk commits, and check that the chunk fails
with a reader-mismatch error and that nothing of it was stored.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport.errors import ExitCode, LoaderError, ReaderMismatchError, exit_code_for
from mpexport.fakeserver import Dataset
from mpexport.model import CompletedChunk
from mpexport.sinks.duckdb import load as load_module
from mpexport.sinks.duckdb import ordered as ordered_module
from mpexport.sinks.duckdb import repair as repair_module
from mpexport.sinks.duckdb import rows as rows_module
from tests.test_sink_duckdb import Spooler, day, load, query

# A lone surrogate escape: legal JSON that DuckDB's reader refuses, so the
# refused-line pass and the repair run for the chunk that holds it.
REFUSED_LINE = (b'{"event":"Cut","properties":{"time":%d,"distinct_id":"u-1",'
                b'"$insert_id":"cut-1","note":"\\ud83d"}}\n')

# (memory limit, replace): the fast path in file order (one loader thread:
# 256MB), the fast path's parallel window (512MB: two threads), the staged
# path (--replace always stages) and the two-step reader of small budgets
# (also what an out-of-memory chunk is loaded again with).
PATHS = {
    "fast": ("256MB", False),
    "fast-parallel": ("512MB", False),
    "staged": ("256MB", True),
    "staged-parallel": ("512MB", True),
    "fast-two-step": ("128MB", False),
    "staged-two-step": ("128MB", True),
}


def expected_paths(path: str) -> list[str]:
    """The insert functions a load on ``path`` goes through (see :func:`paths_taken`)."""
    parallel = path.endswith("-parallel")
    if PATHS[path][1]:
        return ["staged"] if parallel else ["staged", "staged in file order"]
    return ["fast", "window" if parallel else "file order"]


@pytest.fixture
def spooler(tmp_path: Path) -> Spooler:
    return Spooler(tmp_path, Dataset(seed=5, events_per_day=120))


@pytest.fixture
def paths_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The insert functions each load went through, in order (spies, not stand-ins)."""
    taken: list[str] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            taken.append(name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(load_module, "_fast_insert", spy("fast", load_module._fast_insert))
    monkeypatch.setattr(load_module, "_staged_insert",
                        spy("staged", load_module._staged_insert))
    monkeypatch.setattr(load_module, "insert_new_in_file_order",
                        spy("file order", load_module.insert_new_in_file_order))
    monkeypatch.setattr(rows_module.RowReader, "insert_new",
                        spy("window", rows_module.RowReader.insert_new))
    monkeypatch.setattr(load_module, "_store_in_file_order",
                        spy("staged in file order", load_module._store_in_file_order))
    yield taken


def with_lines(completed: CompletedChunk, lines: int) -> CompletedChunk:
    """The same spool file with another recorded line count."""
    completed.lines = lines
    return completed


def noon(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.UTC).timestamp())


def assert_only_day0_stored(db: Path, day0_rows: int) -> None:
    assert query(db, "SELECT from_date, to_date FROM _mpexport_chunks") == [(day(0), day(0))]
    assert query(db, "SELECT count(*), min(CAST(time AS DATE)), max(CAST(time AS DATE)) "
                     "FROM events") == [(day0_rows, day(0), day(0))]


# (offset of the recorded line count, a refused line in the chunk). A staged
# read with several threads that gives exactly the recorded number of rows
# runs no refused-line pass (that would be another pass over the file), so
# "one fewer recorded plus a refused line" is not checked there; every
# other path counts refused lines on every chunk.
MISCOUNTS = [
    pytest.param(path, offset, refused, id=f"{path}-{'more' if offset > 0 else 'fewer'}"
                 f"{'-refused' if refused else ''}")
    for path in PATHS
    for offset in (1, -1)
    for refused in (False, True)
    if not (refused and offset < 0 and path == "staged-parallel")
]


@pytest.mark.parametrize(("path", "offset", "refused"), MISCOUNTS)
def test_a_line_count_the_reader_disagrees_with_fails_the_chunk(
    tmp_path: Path, spooler: Spooler, paths_taken: list[str],
    path: str, offset: int, refused: bool,
) -> None:
    memory, replace = PATHS[path]
    db = tmp_path / "out.duckdb"
    first = load(db, [spooler.chunk(day(0), day(0))], memory_limit=memory)
    day0_rows = first.stats.rows_inserted
    data = b"".join(spooler.lines(day(1), day(1)))
    if refused:
        data += REFUSED_LINE % noon(day(1))
    lines = data.count(b"\n")
    bad = with_lines(spooler.chunk(day(1), day(1), data), lines + offset)
    paths_taken.clear()

    with pytest.raises(ReaderMismatchError) as caught:
        load(db, [bad], memory_limit=memory, replace=replace)

    error = caught.value
    assert isinstance(error, LoaderError)
    assert exit_code_for(error) == ExitCode.PARTIAL == 1
    assert paths_taken == expected_paths(path)
    read = lines - (1 if refused else 0)
    assert error.message == (
        f"loading {day(1).isoformat()}: DuckDB's JSON reader gave {read} rows and "
        f"{1 if refused else 0} refused lines for a chunk of {lines + offset} lines, "
        f"a DuckDB reader mismatch (duckdb {duckdb.__version__})"
    )
    assert error.hint is not None and "nothing of this chunk was stored" in error.hint
    assert "please report it" in error.hint
    assert_only_day0_stored(db, day0_rows)
    assert not list(spooler.dir.iterdir()), "the spool file is deleted"


def _dropping_refused_lines(real: Callable[[str], str]) -> Callable[[str], str]:
    """A reader that, as a future DuckDB might, gives no row at all for a refused line."""
    def reader(path: str) -> str:
        return f"(SELECT * FROM {real(path)} WHERE properties IS NOT NULL)"
    return reader


@pytest.mark.parametrize("path", PATHS)
def test_a_reader_that_drops_refused_lines_fails_the_chunk(
    tmp_path: Path, spooler: Spooler, paths_taken: list[str],
    monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:
    """Without the check the chunk would commit with the refused event missing."""
    memory, replace = PATHS[path]
    db = tmp_path / "out.duckdb"
    first = load(db, [spooler.chunk(day(0), day(0))], memory_limit=memory)
    day0_rows = first.stats.rows_inserted
    data = b"".join(spooler.lines(day(1), day(1))) + REFUSED_LINE % noon(day(1))
    lines = data.count(b"\n")
    dropping = _dropping_refused_lines(rows_module.reader_sql)
    monkeypatch.setattr(rows_module, "reader_sql", dropping)
    monkeypatch.setattr(ordered_module, "reader_sql", dropping)
    paths_taken.clear()

    with pytest.raises(ReaderMismatchError) as caught:
        load(db, [spooler.chunk(day(1), day(1), data)], memory_limit=memory, replace=replace)

    assert paths_taken == expected_paths(path)
    assert caught.value.message.startswith(
        f"loading {day(1).isoformat()}: DuckDB's JSON reader gave {lines - 1} rows and "
        f"0 refused lines for a chunk of {lines} lines, a DuckDB reader mismatch"
    )
    assert_only_day0_stored(db, day0_rows)


@pytest.mark.parametrize("path", PATHS)
def test_refused_line_numbers_that_do_not_follow_the_file_fail_the_chunk(
    tmp_path: Path, spooler: Spooler, paths_taken: list[str],
    monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:
    """Row numbers out of file order name readable lines: the repair would store a copy
    of a readable event and lose the refused one, with every count adding up."""
    memory, replace = PATHS[path]
    db = tmp_path / "out.duckdb"
    first = load(db, [spooler.chunk(day(0), day(0))], memory_limit=memory)
    day0_rows = first.stats.rows_inserted
    data = REFUSED_LINE % noon(day(1)) + b"".join(spooler.lines(day(1), day(1)))
    real = repair_module.count_refused

    def shifted(con: Any, reader: str) -> repair_module.ReaderCount:
        found = real(con, reader)
        return repair_module.ReaderCount(found.rows, [n + 1 for n in found.refused])

    monkeypatch.setattr(rows_module, "count_refused", shifted)
    # The file-order path names refused lines in its scan of the file.
    scan = ordered_module.ScannedChunk.scan

    def shifted_scan(self: Any, path: Path, first: int) -> list[int]:
        return [n + 1 for n in scan(self, path, first)]

    monkeypatch.setattr(ordered_module.ScannedChunk, "scan", shifted_scan)
    paths_taken.clear()

    with pytest.raises(ReaderMismatchError) as caught:
        load(db, [spooler.chunk(day(1), day(1), data)], memory_limit=memory, replace=replace)

    assert paths_taken == expected_paths(path)
    assert caught.value.message.startswith(
        f"loading {day(1).isoformat()}: DuckDB's JSON reader named 1 refused lines, "
        "of which 0 are refused when read again, a DuckDB reader mismatch"
    )
    assert_only_day0_stored(db, day0_rows)


@pytest.mark.parametrize("path", ["fast", "staged"])
def test_line_numbers_that_differ_between_the_two_reads_fail_the_chunk(
    tmp_path: Path, spooler: Spooler, paths_taken: list[str], monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """With one loader thread both paths leave out copies by line number: numbers that
    named other lines in the insert than in the scan would store the wrong copies."""
    replace = PATHS[path][1]
    db = tmp_path / "out.duckdb"
    first = load(db, [spooler.chunk(day(0), day(0))], memory_limit="256MB")
    day0_rows = first.stats.rows_inserted
    lines = spooler.lines(day(1), day(1))
    data = b"".join(lines) + b"".join(lines[:5])  # five more copies, after the originals
    copies = len(lines) + 5 - len(set(lines))  # the dataset's copies are byte for byte
    picked = False
    pick, numbered = ordered_module.ScannedChunk.pick_losers, ordered_module.numbered_sql

    def picking(self: Any) -> None:
        nonlocal picked
        pick(self)
        picked = True

    def shifted_after_the_scan(source: str, first: int = 0) -> str:
        return numbered(source, first + (1 if picked else 0))

    monkeypatch.setattr(ordered_module.ScannedChunk, "pick_losers", picking)
    monkeypatch.setattr(ordered_module, "numbered_sql", shifted_after_the_scan)
    paths_taken.clear()

    with pytest.raises(ReaderMismatchError) as caught:
        load(db, [spooler.chunk(day(1), day(1), data)], memory_limit="256MB", replace=replace)

    assert picked and copies >= 5
    assert paths_taken == expected_paths(path)
    assert caught.value.message.startswith(
        f"loading {day(1).isoformat()}: DuckDB's JSON reader numbered lines differently on "
        f"two reads of the file ({len(lines) + 5} rows kept of {len(lines) + 5}, {copies} "
        "copies left out), a DuckDB reader mismatch"
    )
    assert_only_day0_stored(db, day0_rows)


@pytest.mark.parametrize("path", PATHS)
def test_counts_that_add_up_commit_as_before(
    tmp_path: Path, spooler: Spooler, paths_taken: list[str], path: str,
) -> None:
    memory, replace = PATHS[path]
    db = tmp_path / "out.duckdb"
    data = b"".join(spooler.lines(day(1), day(1))) + REFUSED_LINE % noon(day(1))
    sink = load(db, [spooler.chunk(day(1), day(1), data)], memory_limit=memory,
                replace=replace)
    assert paths_taken == expected_paths(path)
    assert sink.failed_chunks == []
    assert sink.stats.repaired == 1
    assert query(db, "SELECT received FROM _mpexport_chunks") == [(data.count(b"\n"),)]
    assert query(db, "SELECT count(*) FROM events WHERE insert_id = 'cut-1'") == [(1,)]
