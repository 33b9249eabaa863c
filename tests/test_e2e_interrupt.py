"""SIGINT/SIGTERM mid-export: the right exit code, whole lines, no traceback, no spool left.

The server holds the responses of the later days mid-body, so the signal
surely comes while downloads are under way and the run could not have
finished without it. "Prompt" is what the exit itself proves: the held
responses never end, so a run that waited for its downloads would not exit
at all (the wait's timeout is a guard against such a hang, not a measurement).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.pipeline import SPOOL_QUEUE
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    service_account_env,
    wait_until,
)

# Windows has neither signal to send: Ctrl-Break is in tests/test_windows_only.py.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

START, END = dt.date(2024, 3, 1), dt.date(2024, 4, 30)
WORKERS = 4


def export_args(url: str, *extra: str) -> list[str]:
    return [*cli_command(), "export", "--api-url", url, "--from", START.isoformat(),
            "--to", END.isoformat(), "--chunk-days", "1", "--workers", str(WORKERS), *extra]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_stdout(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    hold_from = START + dt.timedelta(days=3)
    dataset = HeldDataset(seed=8, events_per_day=400, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    spool = tmp_path / "tmp"
    spool.mkdir()
    out = tmp_path / "out.ndjson"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    try:
        with out.open("wb") as stdout:
            proc = subprocess.Popen(export_args(server.url), stdout=stdout,
                                    stderr=subprocess.PIPE, env=env)
            # Mid-export: the first day is on stdout and every worker is
            # inside a response that cannot end.
            wait_until(lambda: out.stat().st_size > 0, "the first day on stdout", proc=proc)
            dataset.wait_held(WORKERS)
            proc.send_signal(signum)
            _, stderr_bytes = proc.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    stderr = stderr_bytes.decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "to fetch what is missing" in stderr and "mpexport export --from" in stderr
    # Whole lines, in order, of the days before the held ones only.
    data = out.read_bytes()
    expected = b"".join(dataset.lines_for_range(START, hold_from - dt.timedelta(days=1)))
    assert data and data.endswith(b"\n") and expected.startswith(data)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_duckdb(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    import duckdb

    hold_from = START + dt.timedelta(days=10)
    dataset = HeldDataset(seed=9, events_per_day=400, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    spool = tmp_path / "tmp"
    spool.mkdir()
    db = tmp_path / "events.duckdb"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    try:
        proc = subprocess.Popen(export_args(server.url, "--db", str(db)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Every worker is inside a held response (days 10-13). A worker takes
        # a day only with a spool slot (workers + SPOOL_QUEUE of them), and
        # the loader gives a slot back once it committed that day: so at
        # least 14 - 8 days are in the database now.
        dataset.wait_held(WORKERS)
        proc.send_signal(signum)
        stdout, stderr_bytes = proc.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    stderr = stderr_bytes.decode()
    assert proc.returncode == code, stderr
    assert stdout == b""
    assert "Traceback" not in stderr
    assert "run the same command again" in stderr
    assert list(spool.iterdir()) == []
    with duckdb.connect(str(db), read_only=True) as con:
        loaded = con.execute("SELECT from_date FROM _mpexport_chunks").fetchall()
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM events"
        ).fetchall()
    days = {row[0] for row in loaded}
    committed_at_least = 10 + WORKERS - (WORKERS + SPOOL_QUEUE)
    assert committed_at_least <= len(days) and max(days) < hold_from
    expected = set().union(*(mixpanel_keys(dataset.lines_for_day(d)) for d in days))
    assert set(rows) == expected and len(rows) == len(expected)
