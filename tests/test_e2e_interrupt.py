"""SIGINT/SIGTERM mid-export: prompt exit, whole lines, no traceback, no spool left."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mpexport.fakeserver import Dataset
from tests.conftest import ServerFactory, clean_env, cli_command, service_account_env


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_stdout(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    dataset = Dataset(seed=8, events_per_day=400)
    # Slow enough that the export is surely mid-way when the signal comes.
    server = make_server(dataset, ttfb=0.3, bandwidth=200_000)
    spool = tmp_path / "tmp"
    spool.mkdir()
    out = tmp_path / "out.ndjson"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [*cli_command(), "export", "--api-url", server.url, "--from", "2024-03-01",
             "--to", "2024-04-30", "--chunk-days", "1", "--workers", "4"],
            stdout=stdout, stderr=subprocess.PIPE, env=env,
        )
        deadline = time.monotonic() + 30
        while out.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.stat().st_size > 0, "no output before the deadline"
        sent = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == code
        elapsed = time.monotonic() - sent
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert elapsed < 2.0, elapsed
    assert "Traceback" not in stderr
    assert "to fetch what is missing" in stderr and "mpexport export --from" in stderr
    data = out.read_bytes()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        json.loads(line)
    assert set(data.splitlines(keepends=True)) <= set(
        dataset.lines_for_range(dt.date(2024, 3, 1), dt.date(2024, 4, 30))
    )
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_duckdb(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    import duckdb

    from mpexport.demo import mixpanel_keys

    dataset = Dataset(seed=9, events_per_day=400)
    server = make_server(dataset, ttfb=0.3, bandwidth=200_000)
    spool = tmp_path / "tmp"
    spool.mkdir()
    db = tmp_path / "events.duckdb"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    start, end = dt.date(2024, 3, 1), dt.date(2024, 4, 30)
    args = ["export", "--api-url", server.url, "--from", start.isoformat(), "--to",
            end.isoformat(), "--chunk-days", "1", "--workers", "4", "--db", str(db)]
    proc = subprocess.Popen([*cli_command(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    while server.stats.count(status=200) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=10) == code
    elapsed = time.monotonic() - sent
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert proc.stdout.read() == b""
    assert elapsed < 2.0, elapsed
    assert "Traceback" not in stderr
    assert "run the same command again" in stderr
    assert list(spool.iterdir()) == []
    with duckdb.connect(str(db), read_only=True) as con:
        loaded = con.execute("SELECT from_date FROM _mpexport_chunks").fetchall()
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM events"
        ).fetchall()
    days = {row[0] for row in loaded}
    assert 0 < len(days) < 61
    expected = set().union(*(mixpanel_keys(dataset.lines_for_day(d)) for d in days))
    assert set(rows) == expected and len(rows) == len(expected)
