"""A database someone holds: one message for one holder, whichever command meets it.

``export``, ``export --dry-run``, ``sync --dry-run`` and ``sql`` name an
mpexport run by its lock file, and another program (a DuckDB process) by
its pid, with the same words.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpexport.sinks.duckdb.lock import lock_path
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    run_cli,
    service_account_env,
)

START, END = dt.date(2024, 2, 1), dt.date(2024, 2, 6)


def commands(db: Path, url: str) -> list[list[str]]:
    """Every command that opens ``db``: a run, two dry runs (read-only) and a query."""
    span = ["--from", START.isoformat(), "--to", END.isoformat()]
    return [
        ["export", "--api-url", url, *span, "--db", str(db)],
        ["export", "--api-url", url, *span, "--db", str(db), "--dry-run"],
        ["sync", "--api-url", url, "--to", END.isoformat(), "--db", str(db), "--dry-run"],
        ["sql", str(db), "SELECT count(*) FROM events"],
    ]


def errors(db: Path, url: str) -> list[str]:
    """Each command's one error line."""
    said = []
    for args in commands(db, url):
        result = run_cli(args)
        assert result.code == 4, (args, result.stderr)
        [line] = [x for x in result.stderr.splitlines() if x.startswith("mpexport: error: ")]
        said.append(line)
    return said


def with_hints(message: str, hint: str, can_wait: str) -> list[str]:
    """``message`` as each command says it: the run may wait, dry runs and queries do not."""
    return [f"{message} ({hint}, or pass --wait-lock SECONDS)",
            *[f"{message} ({hint}{can_wait})"] * 3]


@pytest.fixture
def duckdb_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A real DuckDB process with a database open for writing, as a DuckDB shell holds it."""
    db = tmp_path / "events.duckdb"
    code = ("import duckdb, sys\n"
            f"con = duckdb.connect({str(db)!r})\n"
            "con.execute('CREATE TABLE events (x INTEGER)')\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        yield db, proc
    finally:
        proc.communicate(timeout=PATIENCE)  # closes its stdin: it ends


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pid is Linux's F_GETLK")
def test_another_program_is_named_by_its_pid_everywhere(
    make_server: ServerFactory, duckdb_process: tuple[Path, subprocess.Popen[str]]
) -> None:
    db, proc = duckdb_process
    name = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    expected = (f"mpexport: error: the database {db} is open in another program: "
                f"pid {proc.pid} ({name})")
    assert errors(db, make_server().url) == with_hints(
        expected, "close it there (a DuckDB shell, a BI tool)", " and try again")
    assert not lock_path(db).exists() or lock_path(db).read_bytes() == b""


def test_a_running_export_is_named_the_same_everywhere(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = HeldDataset(seed=61, events_per_day=200, hold_from=START + dt.timedelta(days=2))
    server = make_server(dataset, **HOLD_SERVER)
    db = tmp_path / "events.duckdb"
    [run, *_] = commands(db, server.url)
    proc = subprocess.Popen([*cli_command(), *run, "--chunk-days", "1", "--workers", "1"],
                            env=clean_env(service_account_env()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Inside its third day: the file is open, and its lock names the run.
        dataset.wait_held(1)
        holder = json.loads(lock_path(db).read_bytes())
        expected = (f"mpexport: error: the database {db} is in use by pid {holder['pid']} on "
                    f"{holder['host']}, started {holder['started']} (mpexport export)")
        assert errors(db, server.url) == with_hints(
            expected, "wait for it to finish", ", then try again")
    finally:
        dataset.release()
        code = proc.wait(timeout=PATIENCE)
    assert code == 0
