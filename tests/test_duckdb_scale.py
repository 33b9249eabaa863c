"""The loader at real volumes: memory budgets that slow it down, odd events that still load."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpexport.environment import Environment
from mpexport.errors import LoaderError, UsageError
from mpexport.model import Chunk, CompletedChunk, QueryFilters
from mpexport.sinks.duckdb import load as load_module
from mpexport.sinks.duckdb import repair as duckdb_repair
from mpexport.sinks.duckdb.budget import (
    DEFAULT_MEMORY_LIMIT,
    MIB,
    LoaderBudget,
    choose_budget,
    default_budget,
    parse_size,
)
from mpexport.sinks.duckdb.repair import refused_line_numbers, repair_line, write_repairs
from mpexport.sinks.duckdb.rows import reader_sql
from mpexport.sinks.duckdb.sink import DuckDBSink

DAY = dt.date(2024, 3, 1)
T0 = 1709251200  # 2024-03-01T00:00:00Z

# One line of each kind Mixpanel's export can hold that looks odd but is legal.
ODD_LINES: dict[str, bytes] = {
    "lone high surrogate": b'{"event":"a","properties":{"time":%d,"distinct_id":"u1",'
                           b'"$insert_id":"i1","s":"cut \\ud83d"}}',
    "lone low surrogate": b'{"event":"a","properties":{"time":%d,"distinct_id":"u2",'
                          b'"$insert_id":"i2","s":"\\ude00 cut"}}',
    "cut UTF-8": b'{"event":"a","properties":{"time":%d,"distinct_id":"u3",'
                 b'"$insert_id":"i3","s":"\xe6\x97"}}',
    "cut UTF-8 in a key": b'{"event":"a","properties":{"time":%d,"distinct_id":"u4",'
                          b'"$insert_id":"i4","k\xf0\x9f":1}}',
    "raw control character": b'{"event":"a","properties":{"time":%d,"distinct_id":"u5",'
                             b'"$insert_id":"i5","s":"tab\there"}}',
    "escaped backslash then u": b'{"event":"a","properties":{"time":%d,"distinct_id":"u6",'
                                b'"$insert_id":"i6","s":"C:\\\\ud83d"}}',
    "paired surrogates": b'{"event":"a","properties":{"time":%d,"distinct_id":"u7",'
                         b'"$insert_id":"i7","s":"\\ud83d\\ude00"}}',
    "number as distinct_id": b'{"event":"a","properties":{"time":%d,"distinct_id":12345,'
                             b'"$insert_id":"i8"}}',
    "no distinct_id": b'{"event":"a","properties":{"time":%d,"$insert_id":"i9"}}',
    "no $insert_id": b'{"event":"a","properties":{"time":%d,"distinct_id":"u10"}}',
    "NUL escape": b'{"event":"a","properties":{"time":%d,"distinct_id":"u11",'
                  b'"$insert_id":"i11","s":"a\\u0000b"}}',
    "30-digit integer": b'{"event":"a","properties":{"time":%d,"distinct_id":"u12",'
                        b'"$insert_id":"i12","n":123456789012345678901234567890}}',
    "empty and dotted keys": b'{"event":"a","properties":{"time":%d,"distinct_id":"u13",'
                             b'"$insert_id":"i13","":"e","a.b":1}}',
    "no mp_processing_time_ms, U+2028": '{"event":"a","properties":{"time":%d,'
                                        '"distinct_id":"u14","$insert_id":"i14",'
                                        '"s":"x\u2028y"}}'.encode(),
}
# Times no timestamp holds: once stored with a NULL time (and so in no
# Parquet day file), now refused with their chunk (tests/test_untimed_events.py).
UNTIMED_LINES: dict[str, bytes] = {
    "time far beyond year 9999": b'{"event":"a","properties":{"time":1e30,"distinct_id":"u15",'
                                 b'"$insert_id":"i15"}}',
    "time as a 27-digit integer": b'{"event":"a","properties":{"time":123456789012345678901234567,'
                                  b'"distinct_id":"u16","$insert_id":"i16"}}',
    "time near the BIGINT limit": b'{"event":"a","properties":{"time":9.2e12,"distinct_id":"u17",'
                                  b'"$insert_id":"i17"}}',
}
REFUSED_BY_DUCKDB = {"lone high surrogate", "lone low surrogate", "cut UTF-8",
                     "cut UTF-8 in a key", "raw control character"}


def odd_body() -> bytes:
    return b"".join((line % (T0 + n) if b"%d" in line else line) + b"\n"
                    for n, line in enumerate(ODD_LINES.values()))


def spool(tmp_path: Path, data: bytes, index: int = 0, day: dt.date = DAY) -> CompletedChunk:
    path = tmp_path / f"spool-{index}.ndjson"
    path.write_bytes(data)
    return CompletedChunk(Chunk(index, day, day), path, data.count(b"\n"), len(data), "", 1, 0.0)


def load(tmp_path: Path, chunks: list[CompletedChunk], **kwargs: object) -> DuckDBSink:
    sink = DuckDBSink(tmp_path / "out.duckdb", filters=QueryFilters(), run_id="t",
                      **kwargs)  # type: ignore[arg-type]
    for completed in chunks:
        sink.accept(completed)
    sink.close()
    return sink


def test_every_odd_but_legal_event_is_stored(tmp_path: Path) -> None:
    body = odd_body()
    completed = spool(tmp_path, body)
    sink = load(tmp_path, [completed])
    assert sink.failed_chunks == []
    assert sink.stats.rows_inserted == len(ODD_LINES)
    assert sink.stats.repaired == len(REFUSED_BY_DUCKDB)
    assert not completed.path.exists(), "the spool file is consumed"
    assert [p.name for p in tmp_path.iterdir() if "repaired" in p.name] == []
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        rows = dict(con.execute(
            "SELECT coalesce(insert_id, distinct_id), properties FROM events").fetchall())
        ids = {r[0] for r in con.execute("SELECT distinct_id FROM events").fetchall()}
    assert "\ufffd" in json.loads(rows["i1"])["s"]
    assert json.loads(rows["i2"])["s"] == "\ufffd cut"
    assert json.loads(rows["i3"])["s"] == "\ufffd"
    assert json.loads(rows["i5"])["s"] == "tab\there"
    assert json.loads(rows["i6"])["s"] == "C:\\ud83d"  # a backslash, then text: untouched
    assert json.loads(rows["i7"])["s"] == "\U0001f600"
    assert json.loads(rows["i11"])["s"] == "a\x00b"
    assert json.loads(rows["i12"])["n"] == 123456789012345678901234567890
    assert json.loads(rows["i13"]) == {"time": T0 + 12, "distinct_id": "u13",
                                       "$insert_id": "i13", "": "e", "a.b": 1}
    assert {"12345", None, "u10"} <= ids


def test_odd_events_rerun_adds_nothing(tmp_path: Path) -> None:
    """Repaired rows keep their Mixpanel key, so a refetch finds them stored."""
    load(tmp_path, [spool(tmp_path, odd_body(), 0)])
    sink = load(tmp_path, [spool(tmp_path, odd_body(), 1)], refresh=True)
    assert sink.stats.rows_inserted == 0
    assert sink.stats.duplicates_skipped == len(ODD_LINES)


def test_a_line_that_is_not_json_fails_only_its_chunk(tmp_path: Path) -> None:
    good = spool(tmp_path, odd_body(), 0)
    bad = spool(tmp_path, b'{"event":"x","properties":{"time":1 "a"}}\n', 1, DAY + dt.timedelta(1))
    sink = load(tmp_path, [good, bad])
    assert [f.chunk.index for f in sink.failed_chunks] == [1]
    assert "could not be repaired" in sink.failed_chunks[0].reason
    assert sink.stats.rows_inserted == len(ODD_LINES)


def _big_body(target_bytes: int, pad_bytes: int = 1400) -> bytes:
    """~target_bytes of events on DAY, with a copy of every 50th and one odd line."""
    filler = "x" * pad_bytes
    lines = []
    size = n = 0
    while size < target_bytes:
        line = (f'{{"event":"e","properties":{{"time":{T0 + n % 86400},"distinct_id":"u{n}",'
                f'"$insert_id":"{n:016x}","pad":"{filler}"}}}}\n').encode()
        lines.append(line)
        if n % 50 == 0:
            lines.append(line)
            size += len(line)
        size += len(line)
        n += 1
    lines.insert(len(lines) // 2, ODD_LINES["lone high surrogate"] % (T0 + 1) + b"\n")
    return b"".join(lines)


def assert_every_line_stored_once(tmp_path: Path, sink: DuckDBSink, lines: int) -> None:
    """The chunk loaded whole (one odd line repaired), one row per Mixpanel key."""
    assert sink.failed_chunks == []
    assert sink.stats.repaired == 1
    assert sink.stats.rows_inserted + sink.stats.duplicates_skipped == lines
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        (rows, keys) = con.execute(
            "SELECT count(*), count(DISTINCT (event, distinct_id, time, insert_id)) FROM events"
        ).fetchone()
    assert rows == keys == sink.stats.rows_inserted


@pytest.mark.parametrize("budget", ["96MB"])
def test_chunk_far_larger_than_the_budget_loads(tmp_path: Path, budget: str) -> None:
    body = _big_body(300 * 1000 * 1000)
    expected = body.count(b"\n")
    copies = sum(1 for n in range(expected) if n % 51 == 0)
    sink = load(tmp_path, [spool(tmp_path, body)], memory_limit=budget)
    assert_every_line_stored_once(tmp_path, sink, expected)
    assert sink.stats.duplicates_skipped >= copies - 1
    assert not (tmp_path / "out.duckdb.tmp").exists(), "the spill folder is removed"


# (budget, whether the fast path runs out of memory and the chunk is loaded
# again, staged in two steps)
WIDE_BUDGETS = [(None, False), ("160MB", False), ("300MB", True)]


@pytest.mark.parametrize(("budget", "falls_back"), WIDE_BUDGETS)
def test_wide_events_load_at_any_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str | None, falls_back: bool
) -> None:
    """Events of ~6 KB each load at any budget, falling back to two steps when they must.

    Measured on DuckDB 2.0.1: 20,000 such events (120 MB) failed the whole
    chunk at the default 256MB budget before the loader fell back. At 160MB
    (a budget that stages raw lines first) the failure surfaced as
    "transaction is aborted" (the raw table's DROP ran in the dead
    transaction), which no fallback would have recognised. One loader
    thread (256MB, 160MB) now reads them in file order, never holding whole
    rows, and loads them at once; two threads (300MB) sort whole rows in
    the fast path's window, run out of memory and load them again in two
    steps. Below about 160MB events this wide do not load at all (see the
    next test).
    """
    body = _big_body(120 * 1000 * 1000, pad_bytes=6000)
    expected = body.count(b"\n")
    fast_failures: list[str] = []
    real_fast = load_module._fast_insert

    def fast_insert(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_fast(*args, **kwargs)
        except duckdb.OutOfMemoryException as exc:
            fast_failures.append(str(exc))
            raise

    monkeypatch.setattr(load_module, "_fast_insert", fast_insert)
    sink = load(tmp_path, [spool(tmp_path, body)], memory_limit=budget)
    assert sink.budget.threads == (2 if falls_back else 1)
    assert bool(fast_failures) == falls_back, fast_failures
    assert_every_line_stored_once(tmp_path, sink, expected)
    assert sink.stats.rows_inserted == len(set(body.splitlines()))


def test_a_staged_load_out_of_memory_is_loaded_again_in_two_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--replace stages in one step at 256MB; ~12 KB events run that out, two steps load them."""
    body = _big_body(120 * 1000 * 1000, pad_bytes=12_000)
    tries: list[str] = []
    real_staged = load_module._staged_insert

    def staged_insert(*args: Any) -> Any:
        reader = args[5]
        tries.append("two steps" if reader.budget.two_step else "one step")
        return real_staged(*args)

    monkeypatch.setattr(load_module, "_staged_insert", staged_insert)
    sink = load(tmp_path, [spool(tmp_path, body)], replace=True)
    assert tries == ["one step", "two steps"]
    assert_every_line_stored_once(tmp_path, sink, body.count(b"\n"))


def test_a_budget_too_small_for_the_events_says_so(tmp_path: Path) -> None:
    """96MB loads 1-2 KB events but not ~6 KB ones: the error names the budget and the fix."""
    body = _big_body(40 * 1000 * 1000, pad_bytes=6000)
    with pytest.raises(LoaderError) as info:
        load(tmp_path, [spool(tmp_path, body)], memory_limit="96MiB")
    assert "96MiB memory budget" in str(info.value)  # as the user wrote it
    assert "--memory-limit" in (info.value.hint or "")
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_a_full_spill_disk_is_not_retried_nor_blamed_on_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB raises the same out-of-memory error when the spill folder's disk fills up."""
    attempts: list[int] = []

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise duckdb.OutOfMemoryException(
            "Out of Memory Error: failed to offload data block of size 256.0 KiB "
            "(1.0 GiB/1.0 GiB used). This limit was set by the 'max_temp_directory_size' "
            "setting.")

    monkeypatch.setattr(load_module, "_fast_insert", disk_full)
    monkeypatch.setattr(load_module, "_staged_insert", disk_full)
    with pytest.raises(LoaderError) as info:
        load(tmp_path, [spool(tmp_path, odd_body())])
    assert attempts == [1], "another attempt would only fill the disk again"
    assert "disk space" in str(info.value) and "out.duckdb.tmp" in str(info.value)
    assert "max_temp_directory_size" in str(info.value), "DuckDB's own words are kept"
    assert "--memory-limit" not in (info.value.hint or "")


# ------------------------------------------------------------------ budget


@pytest.mark.parametrize(("text", "expected"), [
    ("256MB", 256 * 1000**2), ("256MiB", 256 * MIB), ("1GB", 1000**3), ("1.5GiB", 1536 * MIB),
    ("300m", 300 * MIB), (" 64 mb ", 64 * 1000**2), ("2g", 2048 * MIB),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12 parsecs", "-5MB", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="invalid memory size"):
        parse_size(text)


def test_budget_shapes_threads_and_steps() -> None:
    assert LoaderBudget.from_text("96MiB", cpus=8) == LoaderBudget(96 * MIB, 1, True)
    assert LoaderBudget.from_text("256MiB", cpus=8) == LoaderBudget(256 * MIB, 2, False)
    assert LoaderBudget.from_text("4GiB", cpus=2) == LoaderBudget(4096 * MIB, 2, False)
    with pytest.raises(UsageError, match="below the smallest"):
        LoaderBudget.from_text("64MB")


GIB = 1024 * MIB


def machine(cores: int | None, memory: int | None, **environ: str) -> Environment:
    """A machine's environment: ``cores``, ``memory`` (None: unknown) and ``environ``."""
    # Environment.of reads this machine's for None; replace() keeps them unknown.
    return dataclasses.replace(Environment.of(environ), cpus=cores, memory_bytes=memory)


def test_budget_from_environment() -> None:
    from mpexport.sinks.duckdb.budget import chosen_memory_limit

    # The run's environment, not the process's; a big machine, whose default would be bigger.
    environment = machine(16, 64 * GIB, MPEXPORT_MEMORY_LIMIT="1GiB")
    chosen = chosen_memory_limit(None, environment)
    assert LoaderBudget.from_text(chosen).memory_bytes == 1024 * MIB  # the variable wins
    chosen = chosen_memory_limit("512MiB", environment)
    assert LoaderBudget.from_text(chosen).memory_bytes == 512 * MIB  # the option wins
    assert chosen_memory_limit(None, machine(2, 24 * GIB)) == "256MB"  # the default, then
    assert chosen_memory_limit(None, machine(16, 64 * GIB)) == default_budget(16, 64 * GIB)


@pytest.mark.parametrize(("cores", "memory", "text", "threads"), [
    (2, 24 * GIB, "256MB", 1),  # today's default, today's one thread: a 2-core cron VM
    (1, 2 * GIB, "256MB", 1),
    (3, 8 * GIB, "390MB", 2),  # 256MB + 128 MiB: one thread more
    (16, 64 * GIB, "2135MB", 15),  # a thread per core (but one for fetching)
    (16, 2 * GIB, "536MB", 3),  # a quarter of 2 GiB
    (16, 512 * MIB, "256MB", 1),  # a quarter would be 128 MiB: never under 256MB
    (64, 1024 * GIB, "8577MB", 63),  # far under a quarter: the cores bound it
    (None, 64 * GIB, "256MB", 1),  # unknown cores or memory: today's default
    (16, None, "256MB", 1),
])
def test_default_budget_follows_the_machine(cores: int | None, memory: int | None, text: str,
                                            threads: int) -> None:
    assert default_budget(cores, memory) == text
    budget = LoaderBudget.from_text(text, cpus=cores)
    assert budget.threads == threads and not budget.two_step
    assert budget.memory_bytes >= parse_size("256MB")
    if cores is not None and memory is not None and budget.memory_bytes > parse_size("256MB"):
        assert budget.memory_bytes <= memory // 4 and budget.threads < cores


def test_today_default_is_kept_on_two_cores_whatever_the_memory() -> None:
    for memory in (1 * GIB, 4 * GIB, 24 * GIB, 1024 * GIB):
        assert default_budget(2, memory) == DEFAULT_MEMORY_LIMIT
    assert LoaderBudget.from_text(DEFAULT_MEMORY_LIMIT, cpus=2).threads == 1


def test_the_budget_says_where_it_came_from() -> None:
    big = machine(16, 64 * GIB)
    assert choose_budget(None, big).describe() == (
        "2135MB, 15 threads: the default for 16 cores and 64.0 GiB")
    assert choose_budget("1GB", big).describe() == "1GB, 7 threads: set by --memory-limit"
    variable = machine(16, 64 * GIB, MPEXPORT_MEMORY_LIMIT="512MB")
    assert choose_budget(None, variable).describe() == (
        "512MB, 3 threads: set by MPEXPORT_MEMORY_LIMIT")
    # The CLI's option reads the variable itself: the same text is the variable's.
    assert choose_budget("512MB", variable).source == "MPEXPORT_MEMORY_LIMIT"
    assert choose_budget(None, machine(None, None)).describe() == (
        "256MB, 1 thread: the default for unknown cores and unknown memory")
    assert "is invalid" in choose_budget("lots", big).describe()


def test_the_sink_caps_threads_at_the_cores_it_is_given(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "out.duckdb", filters=QueryFilters(), run_id="t",
                      memory_limit="2GB", cpus=3)
    try:
        assert sink.budget.threads == 3
    finally:
        sink.close()


# ------------------------------------------------------------------ repair


def duckdb_accepts(line: bytes, tmp_path: Path) -> bool:
    path = tmp_path / "one.ndjson"
    path.write_bytes(line.rstrip(b"\n") + b"\n")
    with duckdb.connect() as con:
        return con.execute(f"SELECT properties IS NOT NULL FROM {reader_sql(str(path))}"
                           ).fetchone() == (True,)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(), st.one_of(st.text(), st.integers(), st.none())))
def test_repair_gives_what_duckdb_accepts(tmp_path: Path, props: dict[str, object]) -> None:
    """Whatever text a property holds (lone surrogates included), the repair loads."""
    line = json.dumps({"event": "e", "properties": props}).encode()
    fixed = repair_line(line)
    assert fixed is not None and fixed.endswith(b"\n")
    assert duckdb_accepts(fixed, tmp_path)
    value = json.loads(fixed.decode("utf-8"))  # strict UTF-8: nothing undecodable remains
    if duckdb_accepts(line, tmp_path):
        assert value == {"event": "e", "properties": props}, "readable values are kept"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40))
def test_repair_of_cut_bytes(tmp_path: Path, junk: bytes) -> None:
    line = b'{"event":"e","properties":{"s":"' + junk.replace(b'"', b"").replace(b"\\", b"") \
        + b'"}}'
    fixed = repair_line(line)
    if fixed is not None:
        assert duckdb_accepts(fixed, tmp_path)


def test_duckdb_names_exactly_the_refused_lines(tmp_path: Path) -> None:
    src = tmp_path / "spool"
    src.write_bytes(odd_body())
    with duckdb.connect() as con:
        numbers = refused_line_numbers(con, reader_sql(str(src)))
    names = list(ODD_LINES)
    assert {names[n] for n in numbers} == REFUSED_BY_DUCKDB
    side = tmp_path / "side"
    found = write_repairs(src, side, numbers)
    assert (found.repaired, found.unrepairable) == (len(REFUSED_BY_DUCKDB), 0)
    assert side.read_bytes().count(b"\n") == len(REFUSED_BY_DUCKDB)


def test_write_repairs_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Line numbers are counted right when the file is read in many blocks."""
    monkeypatch.setattr(duckdb_repair, "BLOCK_BYTES", 64)
    lines = [b'{"event":"e","properties":{"n":%d}}' % n for n in range(50)]
    lines[7] = b'{"event":"e","properties":{"s":"\xff"}}'
    lines[49] = b'{"event":"e","properties":{"s":"\\ud83d"}}'
    src = tmp_path / "spool"
    src.write_bytes(b"\n".join(lines) + b"\n")
    side = tmp_path / "side"
    found = write_repairs(src, side, [7, 30, 49])
    assert found.repaired == 3
    assert side.read_bytes().splitlines() == [
        b'{"event":"e","properties":{"s":"\xef\xbf\xbd"}}',
        lines[30],
        b'{"event":"e","properties":{"s":"\xef\xbf\xbd"}}',
    ]


def test_odd_events_with_a_project_timezone(tmp_path: Path) -> None:
    """Instants near the limits overflowed in the time zone conversion: refused, not a crash."""
    untimed = b"".join(line + b"\n" for line in UNTIMED_LINES.values())
    sink = load(tmp_path, [spool(tmp_path, odd_body()),
                           spool(tmp_path, untimed, 1, DAY + dt.timedelta(1))],
                project_timezone="America/New_York")
    assert [f.chunk.index for f in sink.failed_chunks] == [1]
    assert f"{len(UNTIMED_LINES)} of {len(UNTIMED_LINES)} events have no readable time" in (
        sink.failed_chunks[0].reason)
    assert sink.stats.rows_inserted == len(ODD_LINES)
