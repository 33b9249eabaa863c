"""Windows' file semantics around the database and its Parquet copy, emulated on Linux.

On Windows a file another program has open can refuse a second open (DuckDB's
read-write open shares nothing, its read-only open shares only reading), a
replace and a delete. Windows' C runtime reports a refused ``open()`` as a
bare ``EACCES`` (a ``PermissionError`` without a winerror); Win32 calls such
as ``os.replace`` carry winerror 32 (sharing violation). The tests raise
exactly those at the same calls, with :data:`mpexport.filelock.WINDOWS` set,
and each one asserts that the emulated refusal really happened.

Also here: the main thread's waits for the loader are sliced, so that a
signal handler runs during them (untimed waits cannot be interrupted on
Windows), counted without any clock.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport import filelock
from mpexport.errors import (
    AccessDeniedError,
    DatabaseLockedError,
    Interrupted,
    LoaderError,
    UsageError,
    exit_code_for,
)
from mpexport.fakeserver import Dataset
from mpexport.model import Chunk, CompletedChunk, QueryFilters
from mpexport.sinks.duckdb import loader as loader_module
from mpexport.sinks.duckdb import lock as lock_module
from mpexport.sinks.duckdb import sink as sink_module
from mpexport.sinks.duckdb.lock import database_lock, lock_path
from mpexport.sinks.duckdb.schema import check_db_path
from mpexport.sinks.duckdb.sink import DuckDBSink
from mpexport.sinks.lake import parquet as parquet_module
from mpexport.sinks.lake import store as store_module
from mpexport.sinks.lake.sink import database_sink
from tests.helpers import UNPACED, ServerFactory, service_account_env

D0 = dt.date(2024, 3, 1)
FILTERS = QueryFilters()
BI_TOOL = r"C:\Program Files\Microsoft Power BI Desktop\bin\PBIDesktop.exe"


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def crt_sharing_violation(path: Path) -> PermissionError:
    """What Windows' C runtime ``open()`` raises for a file another process holds."""
    return PermissionError(errno.EACCES, "Permission denied", str(path))


WIN32_TEXT = {
    32: "The process cannot access the file because it is being used by another process",
    5: "Access is denied",
}


def win32_sharing_violation(path: Path, winerror: int = 32) -> PermissionError:
    """What a Win32 call (``os.replace``, ``os.unlink``) raises for a file that is in use.

    Replacing a file open without delete sharing gives ERROR_ACCESS_DENIED (5).
    """
    error = PermissionError(errno.EACCES, WIN32_TEXT[winerror], str(path))
    error.winerror = winerror  # type: ignore[attr-defined]  # the constructor's, on Windows
    return error


class WindowsHolder:
    """Another program holding a database file open, with Windows' share-mode semantics.

    A read-write holder (DuckDB's read-write open shares nothing) makes every
    open of ours fail; a read-only one (``shares_read``) only those that
    write. DuckDB's own open then fails with the Restart Manager's message.
    ``held`` can be cleared to let the holder go.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path,
                 shares_read: bool = False) -> None:
        self.path = path.resolve()
        self.held = True
        self.opens = 0  # every open of the file, refused or not
        self.refused_opens = 0
        self.refused_connects = 0
        monkeypatch.setattr(filelock, "WINDOWS", True)
        real_open = Path.open
        real_connect = duckdb.connect

        def open_(p: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            writes = any(flag in mode for flag in "wa+x")
            self.opens += p.resolve() == self.path
            if self.held and p.resolve() == self.path and (writes or not shares_read):
                self.refused_opens += 1
                raise crt_sharing_violation(p)
            return real_open(p, mode, *args, **kwargs)

        def connect(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
            if self.held and Path(str(database)).resolve() == self.path:
                self.refused_connects += 1
                raise duckdb.IOException(f"IO Error: File is already open in \n{BI_TOOL} "
                                         "(PID 4242)")
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(Path, "open", open_)
        def attach(path: Path, config: dict[str, Any]) -> Any:
            # The sink opens the file by ATTACH (sinks/duckdb/budget.attach_database).
            if self.held and Path(path).resolve() == self.path:
                self.refused_connects += 1
                raise duckdb.IOException(f"IO Error: File is already open in \n{BI_TOOL} "
                                         "(PID 4242)")
            return real_attach(path, config)

        real_attach = sink_module.attach_database
        monkeypatch.setattr(duckdb, "connect", connect)
        monkeypatch.setattr(sink_module, "attach_database", attach)


class FakeClock:
    """The lock wait's clock and sleep: time moves only when the wait sleeps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Any] = []
        monkeypatch.setattr(lock_module, "_now", lambda: self.now)
        monkeypatch.setattr(lock_module, "_sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for action in self.on_sleep:
            action(len(self.sleeps))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An existing, empty DuckDB database file."""
    path = tmp_path / "events.duckdb"
    duckdb.connect(str(path)).close()
    return path


def lock_is_free(db_path: Path) -> bool:
    with lock_path(db_path).open("a+b") as handle:
        if filelock.try_lock(handle):
            filelock.unlock(handle)
            return True
        return False


# ------------------------------------------------- task 1: the held database


def test_the_header_check_before_the_lock_never_fails_on_a_held_file(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    """Windows refuses even a read of a file DuckDB has open read-write: not an error yet."""
    holder = WindowsHolder(monkeypatch, db)
    check_db_path(db)  # before the lock: the header is checked again under it
    assert holder.refused_opens == 1
    with pytest.raises(DatabaseLockedError, match="open in another program"):
        check_db_path(db, locked=True)
    assert holder.refused_opens == 2


def test_with_a_lock_file_the_check_before_the_lock_leaves_the_file_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db: Path
) -> None:
    """A run may be opening it: even a read would make that open fail on Windows."""
    lock_path(db).touch()
    holder = WindowsHolder(monkeypatch, db)
    check_db_path(db)
    assert holder.opens == 0
    holder.held = False
    # The header is still checked, under the lock: by the sink.
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a database\n")
    lock_path(text).touch()
    check_db_path(text)
    with pytest.raises(UsageError, match="not a DuckDB database"):
        DuckDBSink(text, filters=FILTERS, run_id="r")
    assert text.read_bytes() == b"not a database\n"


def test_a_real_permission_problem_is_bad_usage_not_a_held_file(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    """On POSIX an open file never refuses an open: EACCES means permissions (exit 2)."""
    real_open = Path.open

    def refuse(p: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if p == db:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(UsageError, match="cannot read the database file"):
        check_db_path(db)


def test_a_held_file_is_reported_as_locked_without_waiting(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    clock = FakeClock(monkeypatch)
    holder = WindowsHolder(monkeypatch, db)
    with (pytest.raises(DatabaseLockedError, match="open in another program") as info,
          database_lock(db)):
        pytest.fail("the block must not run while another program holds the file")
    assert info.value.exit_code == 4
    assert "--wait-lock" in (info.value.hint or "")
    assert holder.refused_opens == 1 and clock.sleeps == []
    assert lock_is_free(db), "the lock file is released on the way out"


@pytest.mark.parametrize("shares_read", [False, True], ids=["read-write", "read-only"])
def test_wait_lock_waits_for_another_program_to_let_go(
    monkeypatch: pytest.MonkeyPatch, db: Path, shares_read: bool
) -> None:
    """The probe is retried at every poll until the holder leaves (here: at the 3rd sleep)."""
    clock = FakeClock(monkeypatch)
    holder = WindowsHolder(monkeypatch, db, shares_read=shares_read)
    stops: list[int] = []

    def release_at_third(count: int) -> None:
        if count == 3:
            holder.held = False

    clock.on_sleep.append(release_at_third)
    with database_lock(db, wait_seconds=60, check_stop=lambda: stops.append(1)):
        assert not holder.held
        with duckdb.connect(str(db)) as con:  # what the sink does next: it works now
            con.execute("SELECT 1")
    assert holder.refused_opens == 3
    assert len(clock.sleeps) == 3 and len(stops) == 3, "check_stop runs at every poll"


def test_wait_lock_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    clock = FakeClock(monkeypatch)
    holder = WindowsHolder(monkeypatch, db)
    with (pytest.raises(DatabaseLockedError, match="open in another program") as info,
          database_lock(db, wait_seconds=1.0)):
        pytest.fail("never held")
    assert "still open" in (info.value.hint or "")
    assert clock.now >= 1001.0 and holder.refused_opens == len(clock.sleeps) + 1
    assert lock_is_free(db)


def test_a_stop_ends_the_wait_for_another_program(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    FakeClock(monkeypatch)
    WindowsHolder(monkeypatch, db)
    calls: list[int] = []

    def stop_on_second() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted("SIGINT")

    with pytest.raises(Interrupted), database_lock(db, 600, stop_on_second):
        pytest.fail("never held")
    assert len(calls) == 2
    assert lock_is_free(db)


def _hold_in_child(db_path: Path, read_only: bool) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys\n"
         f"con = duckdb.connect(sys.argv[1], read_only={read_only})\n"
         "print('open', flush=True)\n"
         "sys.stdin.read()\n",
         str(db_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "open"
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX probe; Windows is emulated above")
@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_posix_wait_lock_waits_for_a_real_duckdb_holder(
    monkeypatch: pytest.MonkeyPatch, db: Path, read_only: bool
) -> None:
    """No emulation: another process's DuckDB connection is seen, and waited for."""
    clock = FakeClock(monkeypatch)
    child = _hold_in_child(db, read_only)
    try:
        assert filelock.in_use_elsewhere(db)
        with (pytest.raises(DatabaseLockedError, match="open in another program"),
              database_lock(db)):
            pytest.fail("never held")

        def let_go_at_second(count: int) -> None:
            if count == 2:
                assert child.stdin is not None
                child.stdin.close()
                child.wait(timeout=60)

        clock.on_sleep.append(let_go_at_second)
        with database_lock(db, wait_seconds=60):
            DuckDBSink(db, filters=FILTERS, run_id="r").close()
        assert len(clock.sleeps) == 2
    finally:
        child.kill()
        child.wait(timeout=60)


@pytest.mark.parametrize("message", [
    f"IO Error: File is already open in \n{BI_TOOL} (PID 4242)",
    'IO Error: Could not set lock on file "/data/events.duckdb": Conflicting lock is held in '
    "/usr/bin/duckdb (PID 77)",
])
def test_duckdbs_held_messages_are_a_locked_database(
    monkeypatch: pytest.MonkeyPatch, db: Path, message: str
) -> None:
    """The file was free when probed and taken just before DuckDB's open: still exit 4."""
    refused: list[str] = []

    def attach(path: Path, config: dict[str, Any]) -> Any:
        assert Path(path) == db
        refused.append(message)
        raise duckdb.IOException(message)

    monkeypatch.setattr(sink_module, "attach_database", attach)
    with pytest.raises(DatabaseLockedError, match="open in another program"):
        DuckDBSink(db, filters=FILTERS, run_id="r")
    assert refused == [message]


def test_a_localised_sharing_violation_is_recognised_by_probing(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    """DuckDB's "Cannot open file" carries Windows' text in the system's language."""
    holder = WindowsHolder(monkeypatch, db, shares_read=True)

    def attach(path: Path, config: dict[str, Any]) -> Any:
        assert Path(path) == db
        raise duckdb.IOException(
            f'IO Error: Cannot open file "{path}": Der Prozess kann nicht auf die Datei '
            "zugreifen, da sie von einem anderen Prozess verwendet wird.\r\n")

    monkeypatch.setattr(sink_module, "attach_database", attach)
    with pytest.raises(DatabaseLockedError):
        DuckDBSink(db, filters=FILTERS, run_id="r")
    assert holder.refused_opens == 1, "the probe's open for writing was refused"


@pytest.mark.parametrize("message", [
    'IO Error: Cannot open file "C:\\data\\events.duckdb": Access is denied.',
    "IO Error: Could not read block 7 of the database file",  # "lock" is in "block"
])
def test_other_open_failures_are_not_a_locked_database(
    monkeypatch: pytest.MonkeyPatch, db: Path, message: str
) -> None:
    def attach(path: Path, config: dict[str, Any]) -> Any:
        assert Path(path) == db
        raise duckdb.IOException(message)

    monkeypatch.setattr(sink_module, "attach_database", attach)
    with pytest.raises(UsageError, match="cannot open the database") as info:
        DuckDBSink(db, filters=FILTERS, run_id="r")
    assert not isinstance(info.value, DatabaseLockedError)


def _cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**service_account_env(), **UNPACED}.items():
        monkeypatch.setenv(key, value)


def _export(url: str, db_path: Path, *extra: str) -> list[str]:
    return ["export", "--api-url", url, "--from", "2024-05-01", "--to", "2024-05-02",
            "--db", str(db_path), *extra]


def test_second_run_on_a_held_database_exits_4_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    make_server: ServerFactory, db: Path,
) -> None:
    """The reviewer's case: the first run holds the lock and has the file open (Windows)."""
    from mpexport.cli.main import run

    _cli_env(monkeypatch)
    server = make_server(Dataset(seed=3, events_per_day=20))
    with database_lock(db):
        holder = WindowsHolder(monkeypatch, db)
        code = run(_export(server.url, db))
    err = capsys.readouterr().err
    assert holder.opens == 0, "nothing opened the database file before the lock"
    assert code == 4, err
    assert "in use by pid" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_bi_tool_holding_the_database_exits_4_then_wait_lock_waits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    make_server: ServerFactory, db: Path,
) -> None:
    from mpexport.cli.main import run

    _cli_env(monkeypatch)
    server = make_server(Dataset(seed=3, events_per_day=20))
    clock = FakeClock(monkeypatch)
    holder = WindowsHolder(monkeypatch, db)
    code = run(_export(server.url, db))
    err = capsys.readouterr().err
    assert code == 4, err
    assert "open in another program" in err and len(err.strip().splitlines()) == 1

    def release_at_second(count: int) -> None:
        if count == 2:
            holder.held = False

    clock.on_sleep.append(release_at_second)
    code = run(_export(server.url, db, "--wait-lock", "60"))
    assert code == 0, capsys.readouterr().err
    assert len(clock.sleeps) == 2 and holder.refused_connects == 0
    with duckdb.connect(str(db), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM events").fetchone()  # type: ignore[misc]
    assert rows > 0


# -------------------------------------------- task 2: Parquet files in use


class Spooler:
    def __init__(self, root: Path, dataset: Dataset) -> None:
        self.dir = root / "spool"
        self.dir.mkdir(exist_ok=True)
        self.dataset = dataset
        self.count = 0

    def chunk(self, a: dt.date, b: dt.date) -> CompletedChunk:
        data = b"".join(self.dataset.lines_for_range(a, b))
        self.count += 1
        path = self.dir / f"chunk-{self.count}.ndjson"
        path.write_bytes(data)
        return CompletedChunk(Chunk(self.count, a, b), path, data.count(b"\n"), len(data),
                              "0" * 64, 1, 0.0)


def keys_of(lines: list[bytes]) -> set[tuple[Any, ...]]:
    keys = set()
    for line in lines:
        record = json.loads(line)
        props = record["properties"]
        keys.add((record["event"], props.get("distinct_id"), int(props["time"]),
                  props.get("$insert_id")))
    return keys


def assert_exact(db_path: Path, lines: list[bytes]) -> None:
    with duckdb.connect(str(db_path), read_only=True) as con:
        keys = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM events").fetchall()
    assert len(keys) == len(set(keys)), "a Mixpanel key is stored twice"
    assert set(keys) == keys_of(lines)


def pending_days(db_path: Path) -> list[dt.date]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return [d for (d,) in con.execute(
            "SELECT DISTINCT day FROM _mpexport_parquet_pending ORDER BY 1").fetchall()]


def parquet_matches_table(db_path: Path, out: Path) -> bool:
    cols = "event, time, distinct_id, insert_id, mp_processing_time_ms, properties::VARCHAR"
    with duckdb.connect(str(db_path), read_only=True) as con:
        table = sorted(con.execute(f"SELECT {cols} FROM events").fetchall())
        files = sorted(con.execute(
            f"SELECT {cols} FROM read_parquet('{out}/*/*.parquet', hive_partitioning=true)"
        ).fetchall())
    return files == table


class InUse:
    """``os.replace`` (and deletes) onto some day files refused as Windows refuses them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *paths: Path, winerror: int = 32) -> None:
        self.paths = {p.resolve() for p in paths}
        self.refused: list[Path] = []
        real_replace = store_module.os.replace
        real_unlink = Path.unlink
        if winerror == 5:
            # Access denied means "in use" only on Windows.
            monkeypatch.setattr(filelock, "WINDOWS", True)

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if self.paths and Path(dst).resolve() in self.paths:
                self.refused.append(Path(dst))
                raise win32_sharing_violation(Path(dst), winerror)
            real_replace(src, dst, *args, **kwargs)

        def unlink(path: Path, missing_ok: bool = False) -> None:
            if self.paths and path.resolve() in self.paths:
                self.refused.append(path)
                raise win32_sharing_violation(path, winerror)
            real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(store_module.os, "replace", replace)
        monkeypatch.setattr(Path, "unlink", unlink)
        # No real pauses between the attempts; their number is what is checked.
        monkeypatch.setattr(store_module, "BACKOFF_SECONDS", (0.0, 0.0, 0.0, 0.0))

    def release(self) -> None:
        self.paths.clear()


def stray_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and p.name != "data.parquet"
                  and p.relative_to(out).parts[0] != "_mpexport")


@pytest.mark.parametrize("winerror", [32, 5], ids=["sharing violation", "access denied"])
def test_a_parquet_file_in_use_stays_pending_and_the_next_run_writes_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
    winerror: int,
) -> None:
    dataset = Dataset(seed=8, events_per_day=60)
    spooler = Spooler(tmp_path, dataset)
    db_path, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    held = out / f"date={day(1)}" / "data.parquet"
    in_use = InUse(monkeypatch, held, winerror=winerror)
    caplog.set_level(logging.WARNING, logger="mpexport")

    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out)
    sink.accept(spooler.chunk(day(0), day(2)))
    sink.accept(spooler.chunk(day(1), day(1)))  # the held day again: not tried again this run
    sink.close()  # no exception: the Parquet copy is secondary

    attempts = len(store_module.BACKOFF_SECONDS) + 1
    assert in_use.refused == [held] * attempts
    assert sink.parquet_deferred == [held]
    assert sink.stats.chunks == 2
    assert_exact(db_path, dataset.lines_for_range(day(0), day(2)))
    assert pending_days(db_path) == [day(1)]
    assert not held.exists()
    assert sorted(p.parent.name for p in out.glob("*/*.parquet")) == [
        f"date={day(0)}", f"date={day(2)}"]
    assert stray_files(out) == [], "no temp file is left beside a final name"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(held) in warnings[0] and "next run writes" in warnings[0]

    in_use.release()
    database_sink(db_path, filters=FILTERS, run_id="r2", parquet_dir=out).close()
    assert held.exists()
    assert pending_days(db_path) == []
    assert parquet_matches_table(db_path, out)


def test_an_old_file_in_use_is_left_whole_until_the_next_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dataset = Dataset(seed=9, events_per_day=40)
    spooler = Spooler(tmp_path, dataset)
    db_path, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out)
    sink.accept(spooler.chunk(day(0), day(0)))
    sink.close()
    held = out / f"date={day(0)}" / "data.parquet"
    before = held.read_bytes()

    dataset.add_late_events(day(0), 5)
    in_use = InUse(monkeypatch, held)
    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out, refresh=True)
    sink.accept(spooler.chunk(day(0), day(0)))
    sink.close()
    assert sink.stats.rows_inserted == 5 and in_use.refused
    assert held.read_bytes() == before, "readers keep the old, whole file"
    assert stray_files(out) == []
    assert pending_days(db_path) == [day(0)]

    in_use.release()
    database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out).close()
    assert held.read_bytes() != before
    assert parquet_matches_table(db_path, out)


def test_a_day_left_empty_whose_file_is_in_use_is_deleted_by_the_next_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--replace with a day that has no events any more: its file must go, but it is open."""
    spooler = Spooler(tmp_path, Dataset(seed=14, events_per_day=30))
    db_path, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out)
    sink.accept(spooler.chunk(day(0), day(0)))
    sink.close()
    held = out / f"date={day(0)}" / "data.parquet"
    in_use = InUse(monkeypatch, held)
    empty = spooler.chunk(day(0), day(0))
    empty.path.write_bytes(b"")
    empty = CompletedChunk(empty.chunk, empty.path, 0, 0, "0" * 64, 1, 0.0)
    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out,
                      replace=True, refresh=True)
    sink.accept(empty)
    sink.close()
    assert in_use.refused == [held] * (len(store_module.BACKOFF_SECONDS) + 1)
    assert held.exists() and pending_days(db_path) == [day(0)]

    in_use.release()
    database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out).close()
    assert not held.exists() and not held.parent.exists()
    assert pending_days(db_path) == []


def test_retries_then_gives_up_with_the_backoff(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The pauses come from the injected sleep: one per failed attempt but the last."""
    spooler = Spooler(tmp_path, Dataset(seed=10, events_per_day=30))
    db_path, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    sink = database_sink(db_path, filters=FILTERS, run_id="r", parquet_dir=out)
    sink.accept(spooler.chunk(day(0), day(0)))
    sink.close()
    held = out / f"date={day(0)}" / "data.parquet"
    assert held.exists() and pending_days(db_path) == []
    in_use = InUse(monkeypatch, held)
    monkeypatch.setattr(store_module, "BACKOFF_SECONDS", (0.05, 0.1, 0.2))
    pauses: list[float] = []
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO _mpexport_parquet_pending VALUES ('events', ?)", [day(0)])
        done = parquet_module.flush_pending(con, "events", out, sleep=pauses.append)
    assert pauses == [0.05, 0.1, 0.2] and len(in_use.refused) == 4
    assert done.written == [] and done.in_use == {day(0): held}
    assert pending_days(db_path) == [day(0)]

    in_use.refused.clear()
    pauses.clear()

    def reader_leaves(seconds: float) -> None:
        pauses.append(seconds)
        in_use.release()  # the reader closed the file during the first pause

    with duckdb.connect(str(db_path)) as con:
        done = parquet_module.flush_pending(con, "events", out, sleep=reader_leaves)
    assert pauses == [0.05] and len(in_use.refused) == 1
    assert done.written == [day(0)] and done.in_use == {}
    assert pending_days(db_path) == []
    assert parquet_matches_table(db_path, out)


def test_other_parquet_failures_still_stop_the_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A full disk is no reader holding a file: the run fails, as before (exit 1)."""
    spooler = Spooler(tmp_path, Dataset(seed=11, events_per_day=30))

    def disk_full(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(store_module.os, "replace", disk_full)
    sink = database_sink(tmp_path / "events.duckdb", filters=FILTERS, run_id="r",
                         parquet_dir=tmp_path / "parquet")
    sink.accept(spooler.chunk(day(0), day(0)))
    with pytest.raises(LoaderError, match="No space left"):
        sink.close()


def test_cli_run_with_a_parquet_file_in_use_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    make_server: ServerFactory, tmp_path: Path,
) -> None:
    """Exit 0, the database exact, one warning line; the next run writes the file."""
    from mpexport.cli.main import run

    _cli_env(monkeypatch)
    dataset = Dataset(seed=12, events_per_day=40)
    server = make_server(dataset)
    db_path, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    held = out / "date=2024-05-02" / "data.parquet"
    in_use = InUse(monkeypatch, held)
    code = run(_export(server.url, db_path, "--parquet", str(out)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert in_use.refused
    assert_exact(db_path, dataset.lines_for_range(dt.date(2024, 5, 1), dt.date(2024, 5, 2)))
    assert pending_days(db_path) == [dt.date(2024, 5, 2)]
    [warning] = [line for line in err.splitlines() if str(held) in line]
    assert "warning" in warning and "next run writes" in warning

    in_use.release()
    assert run(_export(server.url, db_path, "--parquet", str(out))) == 0
    assert held.exists() and pending_days(db_path) == []
    assert parquet_matches_table(db_path, out)


# ------------------------------------------- task 3: interruptible waits


@pytest.fixture
def fast_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "POLL_SECONDS", 0.001)


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mpexport-loader"]


@pytest.mark.usefixtures("fast_slices")
def test_a_stop_while_the_database_opens_is_seen_between_slices(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    """The open is held until check_stop's third call: the wait for it must be sliced."""
    opened = threading.Event()
    release = threading.Event()
    real_attach = sink_module.attach_database

    def slow_attach(path: Path, config: dict[str, Any]) -> Any:
        assert Path(path) == db
        opened.set()
        assert release.wait(60), "the open was never released"
        return real_attach(path, config)

    calls: list[int] = []

    def stop_on_third() -> None:
        calls.append(1)
        if len(calls) == 3:
            release.set()  # the open can finish only now, after three slices
            raise Interrupted("SIGINT")

    monkeypatch.setattr(sink_module, "attach_database", slow_attach)
    assert loader_threads() == []
    with pytest.raises(Interrupted):
        DuckDBSink(db, filters=FILTERS, run_id="r", check_stop=stop_on_third)
    assert opened.is_set() and len(calls) == 3
    assert loader_threads() == [], "the loader ended before the stop went on"
    with duckdb.connect(str(db)) as con:  # closed: another writer can open it at once
        con.execute("SELECT 1")


@pytest.mark.usefixtures("fast_slices")
def test_abort_joins_the_loader_in_slices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The loader is held until abort()'s third join slice: the join must be sliced."""
    spooler = Spooler(tmp_path, Dataset(seed=13, events_per_day=30))
    in_load = threading.Event()
    release = threading.Event()

    def held_load(con: Any, completed: CompletedChunk, **kwargs: Any) -> Any:
        in_load.set()
        assert release.wait(60), "never released"
        kwargs["check_stop"]()  # raises: abort() asked the loader to stop

    monkeypatch.setattr(sink_module, "load_chunk", held_load)
    sink = DuckDBSink(tmp_path / "events.duckdb", filters=FILTERS, run_id="r")
    sink.accept(spooler.chunk(day(0), day(0)))
    assert in_load.wait(60)
    thread = sink._loader.thread
    timeouts: list[float | None] = []
    real_join = thread.join

    def join(timeout: float | None = None) -> None:
        timeouts.append(timeout)
        if len(timeouts) == 3:
            release.set()
        real_join(timeout)

    monkeypatch.setattr(thread, "join", join)
    sink.abort()
    assert not thread.is_alive()
    assert len(timeouts) >= 3 and None not in timeouts
    assert not list(spooler.dir.iterdir()), "the spool file is deleted"


# ------------------------------------------------------- fixtures' sanity


@pytest.fixture(autouse=True)
def _no_leftover_loaders() -> Iterator[None]:
    yield
    assert all(not t.is_alive() for t in loader_threads())


def test_the_lock_names_only_our_command_never_a_host_programs_argv(tmp_path: Path) -> None:
    """A library caller's argv (a script's token, say) never reaches the lock file."""
    import json

    from mpexport.environment import command_name
    from mpexport.sinks.duckdb.lock import database_lock, lock_path

    db = tmp_path / "events.duckdb"
    for argv, expected in ((["job.py", "--token=abc123"], "mpexport (library)"),
                           (["mpexport", "sync", "--db", str(db)], "mpexport sync")):
        # What the front derives from argv is all the lock is given.
        with database_lock(db, command=command_name(argv)):
            written = lock_path(db).read_text()
        assert json.loads(written)["command"] == expected
        assert "abc123" not in written
        assert not lock_path(db).exists()  # removed as the run ended


# -- access denied (a read-only file, an ACL) is not "held": exit 2, no wait -----------


class WindowsDenied:
    """A database file this user may not write, with Windows' answers (an ACL, say).

    ``os.access`` sees only Windows' read-only flag, so it lets an ACL pass;
    the C runtime's open then raises a bare ``EACCES`` exactly as for a held
    file, and only Win32's own error code (5, not 32) tells the two apart.
    ``reader`` adds a program reading the file, so that DuckDB's message is
    the Restart Manager's "already open in" list although the file is denied.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, reader: bool = False) -> None:
        self.path = path.resolve()
        self.refused_opens = 0
        self.probes = 0
        monkeypatch.setattr(filelock, "WINDOWS", True)
        real_open = Path.open

        def open_(p: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if p.resolve() == self.path and any(flag in mode for flag in "wa+x"):
                self.refused_opens += 1
                raise crt_sharing_violation(p)  # the C runtime's EACCES: same for both
            return real_open(p, mode, *args, **kwargs)

        def win32_open_error(p: Path) -> int | None:
            self.probes += 1
            return 5 if p.resolve() == self.path else None

        said = (f"IO Error: File is already open in \n{BI_TOOL} (PID 4242)" if reader else
                f'IO Error: Cannot open file "{path}": Access is denied.')

        def attach(p: Path, config: dict[str, Any]) -> Any:
            if Path(p).resolve() == self.path:
                raise duckdb.IOException(said)
            return real_attach(p, config)

        real_attach = sink_module.attach_database
        monkeypatch.setattr(Path, "open", open_)
        monkeypatch.setattr(filelock, "_win32_open_error", win32_open_error)
        monkeypatch.setattr(sink_module, "attach_database", attach)


def test_an_access_denied_file_is_bad_usage_and_never_waited_for(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    clock = FakeClock(monkeypatch)
    denied = WindowsDenied(monkeypatch, db)
    with (pytest.raises(AccessDeniedError) as info, database_lock(db, wait_seconds=600)):
        pytest.fail("the block must not run on a file this user may not write")
    assert exit_code_for(info.value) == 2
    assert info.value.one_line() == (
        f"access to {db} is denied (the file may be read-only, or your account may not "
        "write it: clear its read-only attribute or fix its permissions)")
    assert denied.refused_opens == 1 and denied.probes == 1
    assert clock.sleeps == []  # --wait-lock waits for nothing
    assert lock_is_free(db)


@pytest.mark.parametrize("reader", [False, True], ids=["no reader", "a reader listed"])
def test_duckdb_refusing_a_denied_file_is_bad_usage_not_locked(
    monkeypatch: pytest.MonkeyPatch, db: Path, reader: bool
) -> None:
    """DuckDB's words cannot tell (the Restart Manager lists readers too): the probe does."""
    sink = None
    denied = WindowsDenied(monkeypatch, db, reader=reader)
    with pytest.raises(AccessDeniedError) as info:
        sink = DuckDBSink(db, filters=FILTERS, run_id="r")
    assert sink is None
    assert exit_code_for(info.value) == 2 and str(db) in info.value.one_line()
    assert denied.probes == 1


@pytest.mark.parametrize(("raised", "probed", "expected"), [
    (32, None, filelock.HELD),  # Win32 says so itself
    (33, None, filelock.HELD),
    (None, 32, filelock.HELD),  # the C runtime's EACCES, a sharing violation underneath
    (None, 5, filelock.DENIED),  # ... an access denied underneath
    (5, 5, filelock.DENIED),  # a replace over a read-only file
    (5, None, filelock.HELD),  # a replace over a file open without delete sharing
    (None, None, filelock.HELD),  # gone by the probe: the old answer, retried or waited for
])
def test_windows_refusals_are_told_apart_by_win32s_own_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raised: int | None, probed: int | None,
    expected: str,
) -> None:
    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: probed)
    path = tmp_path / "f"
    error = (crt_sharing_violation(path) if raised is None else
             win32_sharing_violation(path, raised) if raised != 33 else
             win32_sharing_violation(path, 32))
    if raised == 33:
        error.winerror = 33  # type: ignore[attr-defined]
    assert filelock.why_refused(error, path) == expected
    assert filelock.held_by_another_process(error, path) == (expected == filelock.HELD)


def test_off_windows_a_permission_error_is_always_denied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(filelock, "WINDOWS", False)
    path = tmp_path / "f"
    assert filelock.why_refused(crt_sharing_violation(path), path) == filelock.DENIED
    assert filelock.why_refused(FileNotFoundError(errno.ENOENT, "gone"), path) == filelock.OTHER


def test_a_denied_parquet_file_is_neither_retried_nor_deferred(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A read-only day file would be "in use" forever: the error says what it is at once."""
    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: 5)
    target = tmp_path / "data.parquet"
    attempts: list[Path] = []
    pauses: list[float] = []

    def replace() -> None:
        attempts.append(target)
        raise win32_sharing_violation(target, 5)

    with pytest.raises(PermissionError):
        store_module._patiently(replace, target, pauses.append)
    assert attempts == [target] and pauses == []
