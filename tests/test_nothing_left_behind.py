"""A run that fails before it stores anything leaves no file, table or lock behind.

Each scenario runs the real CLI against the built-in server; an existing
database stays byte for byte as it was. The lock file goes when the run
ends, and a run waiting on it while it goes still keeps one writer.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

import duckdb
import pytest

from mpexport.fakeserver import Dataset
from mpexport.sinks.duckdb import lock
from mpexport.sinks.duckdb.lock import database_lock, lock_path
from tests.helpers import PATIENCE, ServerFactory, run_cli


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def events_db(make_server: ServerFactory, tmp_path: Path) -> Path:
    """An events database an earlier export loaded (and checkpointed), alone in its folder."""
    server = make_server(Dataset(seed=3, events_per_day=20))
    folder = tmp_path / "dbs"
    folder.mkdir()
    db = folder / "events.duckdb"
    done = run_cli(["export", "--api-url", server.url, "--from", "2024-06-01",
                    "--to", "2024-06-02", "--db", str(db)])
    assert done.code == 0, done.stderr
    assert left_in(folder) == ["events.duckdb"]
    return db


def test_profiles_refused_by_the_server_leave_an_existing_file_as_it_was(
    make_server: ServerFactory, events_db: Path
) -> None:
    server = make_server()  # no profiles: the engage endpoint answers 404
    before = digest(events_db)
    result = run_cli(["profiles", "--api-url", server.url, "--db", str(events_db),
                      "--retries", "0"])
    assert result.code != 0
    assert left_in(events_db.parent) == ["events.duckdb"]
    assert digest(events_db) == before
    with duckdb.connect(str(events_db), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert not {"profiles", "_mpexport_profile_stage", "_mpexport_profile_pages",
                "_mpexport_profile_sessions"} & tables


def test_profiles_refused_by_the_server_create_no_file(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    result = run_cli(["profiles", "--api-url", server.url, "--db", str(tmp_path / "crm.duckdb"),
                      "--retries", "0"])
    assert result.code != 0
    assert left_in(tmp_path) == []


def test_a_first_sync_without_from_creates_nothing(make_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    server = make_server()
    result = run_cli(["sync", "--api-url", server.url, "--db", str(tmp_path / "new.duckdb")])
    assert result.code == 2
    assert "the first sync needs --from" in result.stderr
    assert left_in(tmp_path) == []


@pytest.mark.parametrize("command", [
    ["export", "--from", "2024-06-01", "--to", "2024-06-01"],
    ["sync", "--from", "2024-06-01", "--to", "2024-06-01"],
])
def test_a_bad_table_name_creates_no_lock(make_server: ServerFactory, events_db: Path,
                                          command: list[str]) -> None:
    server = make_server()
    before = digest(events_db)
    result = run_cli([*command, "--api-url", server.url, "--db", str(events_db),
                      "--table", "bad name;"])
    assert result.code == 2
    assert "invalid table name 'bad name;'" in result.stderr
    assert left_in(events_db.parent) == ["events.duckdb"]
    assert digest(events_db) == before


def test_a_bad_profiles_table_name_creates_no_lock(make_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    server = make_server()
    result = run_cli(["profiles", "--api-url", server.url, "--db", str(tmp_path / "c.duckdb"),
                      "--table", "bad name;"])
    assert result.code == 2
    assert "invalid table name 'bad name;'" in result.stderr
    assert left_in(tmp_path) == []


def test_refused_credentials_create_no_file(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-06-01",
                      "--to", "2024-06-01", "--db", str(tmp_path / "new.duckdb")],
                     env={"MP_SECRET": "wrong"})
    assert result.code == 3, result.stderr
    assert left_in(tmp_path) == []


def test_refused_credentials_leave_an_existing_file_as_it_was(
    make_server: ServerFactory, events_db: Path
) -> None:
    server = make_server()
    before = digest(events_db)
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-06-03",
                      "--to", "2024-06-03", "--db", str(events_db), "--table", "other"],
                     env={"MP_SECRET": "wrong"})
    assert result.code == 3, result.stderr
    assert left_in(events_db.parent) == ["events.duckdb"]
    assert digest(events_db) == before


def test_a_run_that_stored_keeps_its_file_and_drops_its_lock(make_server: ServerFactory,
                                                            tmp_path: Path) -> None:
    server = make_server(Dataset(seed=3, events_per_day=20))
    result = run_cli(["sync", "--api-url", server.url, "--db", str(tmp_path / "e.duckdb"),
                      "--from", "2024-06-01", "--to", "2024-06-01"])
    assert result.code == 0, result.stderr
    assert left_in(tmp_path) == ["e.duckdb"]


def test_the_lock_file_goes_with_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "e.duckdb"
    with database_lock(db):
        assert lock_path(db).exists()
    assert not lock_path(db).exists()


def test_a_run_waiting_while_the_lock_file_goes_still_keeps_one_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holds; B waits on A's file; A ends (removing it); C starts: B must wait for C."""
    db = tmp_path / "e.duckdb"
    said: queue.Queue[str] = queue.Queue()
    go_on = [threading.Event(), threading.Event()]
    b_leaves = threading.Event()
    waits: list[int] = []

    def paused(_seconds: float) -> None:
        # B's polls, each held until the test has set up the next step.
        step = len(waits)
        waits.append(step)
        said.put(f"B waits {step}")
        if step < len(go_on):
            assert go_on[step].wait(PATIENCE)

    def run_b() -> None:
        with database_lock(db, wait_seconds=PATIENCE):
            said.put("B holds")
            assert b_leaves.wait(PATIENCE)

    monkeypatch.setattr(lock, "_sleep", paused)
    b = threading.Thread(target=run_b)
    with database_lock(db):  # A
        b.start()
        assert said.get(timeout=PATIENCE) == "B waits 0"
    # A's file is gone; C takes the new one before B polls again.
    with database_lock(db):  # C
        go_on[0].set()
        # B gets the lock of the removed file, sees it is not the file at the
        # path any more, and waits for C's.
        assert said.get(timeout=PATIENCE) == "B waits 1"
    go_on[1].set()
    assert said.get(timeout=PATIENCE) == "B holds"
    b_leaves.set()
    b.join(PATIENCE)
    assert not lock_path(db).exists()


# -- what the cleanup may remove ------------------------------------------------------------


def test_a_new_file_is_removed_only_while_it_is_the_one_the_run_opened(tmp_path: Path) -> None:
    from mpexport.sinks.duckdb.schema import file_identity, remove_new_database

    db = tmp_path / "new.duckdb"
    db.write_bytes(b"ours")
    ours = file_identity(db)
    # Another program replaced the file at that name meanwhile: it stays.
    replacement = tmp_path / "theirs"
    replacement.write_bytes(b"theirs")
    replacement.replace(db)
    remove_new_database(db, ours)
    assert db.read_bytes() == b"theirs"
    # The file the run opened goes, with its WAL.
    wal = tmp_path / "new.duckdb.wal"
    wal.write_bytes(b"")
    remove_new_database(db, file_identity(db))
    assert not db.exists() and not wal.exists()


def test_a_cleanup_that_cannot_delete_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mpexport.sinks.duckdb.schema import file_identity, remove_new_database

    db = tmp_path / "new.duckdb"
    db.write_bytes(b"")

    def held(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "The process cannot access the file")  # Windows: a scanner

    monkeypatch.setattr(Path, "unlink", held)
    remove_new_database(db, file_identity(db))  # no exception: the run's outcome stays its own
    assert "could not remove" in caplog.text and db.exists()


def test_a_dangling_link_given_as_db_is_not_removed(make_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    server = make_server(Dataset(seed=5, events_per_day=3))
    link = tmp_path / "events.duckdb"
    link.symlink_to(tmp_path / "elsewhere" / "events.duckdb")
    result = run_cli(["export", "--from", "2024-06-01", "--to", "2024-06-01", "--api-url",
                      server.url, "--db", str(link)], env={"MP_SECRET": "wrong"})
    assert result.code != 0
    assert link.is_symlink()
