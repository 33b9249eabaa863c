"""Cron and shell use: incremental sync, one writer per file, summaries, bad input, secrets."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import DEMO_SECRET, Dataset
from mpexport.sinks.duckdb.lock import lock_path
from tests.helpers import (
    CAN_SEE_OPEN_FILES,
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    fetched_days,
    pids_holding_open,
    run_cli,
    service_account_env,
    stored_keys,
    wait_until,
)


def test_two_syncs_store_the_union_with_late_events(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=41, events_per_day=60)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    first = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--from", "2024-06-01",
                     "--to", "2024-06-20"])
    assert first.code == 0, first.stderr
    assert fetched_days(server) == {dt.date(2024, 6, d) for d in range(1, 21)}

    # Late events arrive: one inside the lookback window, one far older.
    dataset.add_late_events(dt.date(2024, 6, 18), 9)
    dataset.add_late_events(dt.date(2024, 6, 5), 4)
    server.stats.clear()
    summary = tmp_path / "summary.json"
    second = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--to", "2024-06-25",
                      "--summary-json", str(summary)])
    assert second.code == 0, second.stderr
    # Only the lookback window (5 days before the last synced day) and new days.
    assert fetched_days(server) == {dt.date(2024, 6, d) for d in range(15, 26)}
    report = json.loads(summary.read_text())
    assert report["status"] == "complete" and report["exit_code"] == 0
    assert report["late_events"] == 9
    assert "9 late events added" in second.stderr

    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    # 5 June's late events are older than the lookback: by design not fetched.
    before_late = Dataset(seed=41, events_per_day=60)
    expected = mixpanel_keys(
        line
        for day in (dt.date(2024, 6, d) for d in range(1, 26))
        for line in (before_late if day == dt.date(2024, 6, 5) else dataset).lines_for_day(day)
    )
    assert set(keys) == expected


def test_first_sync_needs_from(tmp_path: Path) -> None:
    result = run_cli(["sync", "--db", str(tmp_path / "new.duckdb")])
    assert result.code == 2
    assert "--from" in result.stderr and "Traceback" not in result.stderr


def test_second_writer_exits_4_and_first_finishes_exact(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # The first run's responses are held mid-body until the second run has
    # been refused: the first surely holds the lock all that time.
    start, end = dt.date(2024, 5, 1), dt.date(2024, 5, 12)
    dataset = HeldDataset(seed=42, events_per_day=100, hold_from=start)
    server = make_server(dataset, **HOLD_SERVER)
    db = tmp_path / "events.duckdb"
    args = ["export", "--api-url", server.url, "--from", start.isoformat(), "--to",
            end.isoformat(), "--chunk-days", "1", "--workers", "2", "--db", str(db)]
    first = subprocess.Popen([*cli_command(), *args], env=clean_env(service_account_env()),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        dataset.wait_held(2)  # both workers: the first makes no other request now
        second = run_cli(args)
        # The holder as the lock file names it (on Windows a venv's python.exe
        # is a launcher: the Popen pid is not the interpreter's).
        holder = json.loads(lock_path(db).read_bytes())
        # Refused at once, without a request: it did not wait for the first,
        # which cannot end yet.
        assert first.poll() is None
        assert len(server.stats) == 2
    finally:
        dataset.release()
    _, first_err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, first_err.decode()
    assert second.code == 4, second.stderr
    assert str(db) in second.stderr and f"pid {holder['pid']}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    keys = stored_keys(db)
    assert set(keys) == mixpanel_keys(dataset.lines_for_range(start, end))
    assert len(keys) == len(set(keys))


@pytest.mark.skipif(not CAN_SEE_OPEN_FILES, reason="sees the waiting run through /proc")
def test_wait_lock_waits_for_the_holder(make_server: ServerFactory, tmp_path: Path) -> None:
    start, end = dt.date(2024, 5, 1), dt.date(2024, 5, 4)
    dataset = HeldDataset(seed=43, events_per_day=100, hold_from=start)
    server = make_server(dataset, **HOLD_SERVER)
    db = tmp_path / "events.duckdb"
    args = ["export", "--api-url", server.url, "--from", start.isoformat(), "--to",
            end.isoformat(), "--chunk-days", "1", "--workers", "1", "--db", str(db)]
    env = clean_env(service_account_env())
    first = subprocess.Popen([*cli_command(), *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        dataset.wait_held(1)  # the first holds the lock, mid-download
        holders = pids_holding_open(lock_path(db))
        assert holders, "the first run does not hold the lock file open"
        second = subprocess.Popen([*cli_command(), *args, "--wait-lock", "600"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The second has the lock file open too: it is waiting for the lock,
        # which the first cannot give up before its held response ends.
        wait_until(lambda: pids_holding_open(lock_path(db)) - holders,
                   "the second run to wait for the lock", proc=second)
        assert first.poll() is None
    finally:
        dataset.release()
    _, first_err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 0, first_err.decode()
    _, second_err = second.communicate(timeout=PATIENCE)
    assert second.returncode == 0, second_err.decode()
    # The second found every day loaded once the first was done.
    assert fetched_days(server) == {start + dt.timedelta(days=d) for d in range(4)}
    assert len(server.stats) == 4
    keys = stored_keys(db)
    assert sorted(keys) == sorted(mixpanel_keys(dataset.lines_for_range(start, end)))


def test_future_to_is_clamped_with_a_note(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=44, events_per_day=10))
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    result = run_cli(["export", "--api-url", server.url, "--from", "-2", "--to", future])
    # The fake server's today is fixed in the past; the client clamps to the real today.
    assert "is in the future" in result.stderr
    assert all(q["to_date"] <= dt.datetime.now(dt.UTC).date().isoformat()
               for q in server.stats.queries())


def test_summary_json_on_failure_and_on_bad_credentials(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=45, events_per_day=10),
                         fail_dates=frozenset({dt.date(2024, 5, 2)}))
    summary = tmp_path / "s.json"
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                      "2024-05-03", "--chunk-days", "1", "--retries", "0",
                      "--summary-json", str(summary)])
    assert result.code == 1
    report = json.loads(summary.read_text())
    assert report["status"] == "partial" and report["exit_code"] == 1
    assert report["chunks"]["failed"][0]["from"] == "2024-05-02"
    [rerun] = report["rerun"]
    # Exactly the options given (not --summary-json), in the command's option order.
    assert rerun == ("mpexport export --from 2024-05-02 --to 2024-05-02 "
                     f"--chunk-days 1 --retries 0 --api-url {server.url}")

    bad = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                   "2024-05-03", "--summary-json", str(summary)],
                  env={"MP_SECRET": "nope-wrong"})
    assert bad.code == 3
    report = json.loads(summary.read_text())
    assert report["status"] == "failed" and report["exit_code"] == 3
    assert "nope-wrong" not in summary.read_text()


def test_quiet_prints_nothing_on_success(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=46, events_per_day=10), faults=("http503",))
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                      "2024-05-03", "--quiet"])
    assert result.code == 0
    assert result.stderr == ""
    assert result.stdout


def test_project_timezone_converts_shifted_times(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=47, events_per_day=20)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    day = dt.date(2024, 1, 10)
    result = run_cli(["export", "--api-url", server.url, "--from", day.isoformat(), "--to",
                      day.isoformat(), "--db", str(db), "--project-timezone",
                      "America/Los_Angeles"])
    assert result.code == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT epoch(time)::BIGINT, (properties->>'time')::BIGINT FROM events").fetchall()
    # January in Los Angeles is UTC-8: the true instant is 8 hours after the shifted value.
    assert rows and all(true - shifted == 8 * 3600 for true, shifted in rows)


BAD_INPUTS = [
    (["export", "--from", "2024-13-01", "--to", "2024-12-31"], 2, "not a real calendar date"),
    (["export", "--from", "someday", "--to", "today"], 2, "not a date"),
    (["export", "--from", "2024-03-02", "--to", "2024-03-01"], 2, "after"),
    (["export", "--from", "-3", "--to", "today", "--region", "mars"], 2, "mars"),
    (["export", "--from", "-3", "--to", "today", "--workers", "0"], 2, "--workers"),
    (["export", "--from", "-3", "--to", "today", "--workers", "5000"], 2, "--workers"),
    (["export", "--from", "-3", "--to", "today", "--limit", "100001"], 2, "--limit"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}/x.duckdb", "--table",
      "bad-name"], 2, "table"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}/missing/x.duckdb"], 2,
     "does not exist"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}/notes.txt"], 2,
     "not a DuckDB database"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}"], 2, "{tmp}"),
    (["export", "--from", "-3", "--to", "today", "--project-timezone", "Mars/Olympus"], 2,
     "time zone"),
    (["export", "--from", "-3", "--to", "today", "--table", "t"], 2, "--table needs --db"),
    (["sync", "--db", "{tmp}/x.duckdb", "--lookback", "-1", "--from", "-3"], 2, "--lookback"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}/x.duckdb", "--replace",
      "--event", "Purchase"], 2, "cannot be combined"),
    (["export", "--from", "-3", "--to", "today", "--api-url", "http://u:p@127.0.0.1:9"], 2,
     "must not contain credentials"),
    (["export", "--from", "-3", "--to", "today", "--db", "{tmp}/x.duckdb", "-o",
      "{tmp}/x.ndjson"], 2, "--output cannot be used with --db"),
    (["export", "--from", "-3", "--to", "today", "--summary-json", "{tmp}/no/such/last.json"],
     2, "{tmp}/no/such does not exist"),
    (["sync", "--db", "{tmp}/x.duckdb", "--from", "-3", "--summary-json", "{tmp}"], 2,
     "it is a folder"),
    (["profiles", "--db", "{tmp}/x.duckdb", "--summary-json", "{tmp}/no/last.json"], 2,
     "does not exist"),
]


@pytest.mark.parametrize(("args", "code", "needle"), BAD_INPUTS,
                         ids=[" ".join(a[5:] or a[:3]) for a, _c, _n in BAD_INPUTS])
def test_bad_input(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    before = notes.read_bytes()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli(args)
    assert result.code == code, result.stderr
    assert result.stdout == b""
    assert needle.replace("{tmp}", str(tmp_path)) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert notes.read_bytes() == before
    assert not (tmp_path / "notes.txt.wal").exists()
    assert not (tmp_path / "x.duckdb").exists() and not (tmp_path / "x.ndjson").exists()


def test_a_summary_json_that_cannot_be_written_at_the_end_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mpexport.cli.options import run_reporting
    from mpexport.cli.report import RunReport

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunReport, "write_json", fail)
    report = RunReport(command="export", table="events", database=None, lake=None)
    # The folder was there at the start (checked), the write failed at the end.
    assert run_reporting(report, str(tmp_path / "last.json"), lambda: 0) == 1
    assert "could not write the summary JSON" in capsys.readouterr().err
    # A run that failed keeps its own exit code.
    assert run_reporting(report, str(tmp_path / "last.json"), lambda: 3) == 3


def test_the_library_refuses_db_with_output(tmp_path: Path) -> None:
    import mpexport
    from mpexport.errors import UsageError

    with pytest.raises(UsageError, match="cannot be used with --db"):
        mpexport.export(from_date="2024-01-01", to_date="2024-01-02",
                        db=tmp_path / "x.duckdb", output=tmp_path / "x.ndjson")
    with pytest.raises(UsageError, match="cannot be used with db"):
        mpexport.export(from_date="2024-01-01", to_date="2024-01-02",
                        db=tmp_path / "x.duckdb", output=io.BytesIO())
    assert not (tmp_path / "x.duckdb").exists()


def test_missing_credentials_name_what_to_set() -> None:
    result = run_cli(["export", "--from", "-3", "--to", "today"], credentials=False)
    assert result.code == 3
    for name in ("MP_USERNAME", "MP_SECRET", "MP_PROJECT_ID", "MP_API_SECRET",
                 "config init"):
        assert name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_secret_appears_nowhere(make_server: ServerFactory, tmp_path: Path,
                                isolated_state: Path, isolated_config: Path) -> None:
    dataset = Dataset(seed=48, events_per_day=30)
    server = make_server(dataset, faults=("http500", "reset"),
                         fail_dates=frozenset({dt.date(2024, 5, 3)}))
    db = tmp_path / "events.duckdb"
    summary = tmp_path / "summary.json"
    outputs = []
    for extra in (["-v"], ["-v", "--db", str(db), "--summary-json", str(summary)]):
        result = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                          "2024-05-04", "--chunk-days", "1", "--retries", "1", *extra])
        assert result.code == 1
        outputs += [result.stdout, result.stderr.encode()]
    wrong = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                     "2024-05-02", "-v"], env={"MP_SECRET": DEMO_SECRET + "x"})
    outputs += [wrong.stdout, wrong.stderr.encode()]
    # a profile written with the secret (the config file itself holds it, mode 0600)
    init = subprocess.run([*cli_command(), "config", "init", "--profile", "p", "--username",
                           "u", "--project-id", "1"], input=DEMO_SECRET.encode(),
                          capture_output=True, env=clean_env())
    show = subprocess.run([*cli_command(), "config", "show"], capture_output=True,
                          env=clean_env())
    outputs += [init.stdout, init.stderr, show.stdout, show.stderr]
    config_file = isolated_config / "config.toml"
    assert DEMO_SECRET.encode() in config_file.read_bytes()
    if os.name == "posix":
        assert config_file.stat().st_mode & 0o077 == 0
    files = [summary, db, *isolated_state.rglob("*")]
    for path in files:
        if path.is_file():
            outputs.append(path.read_bytes())
    for blob in outputs:
        assert DEMO_SECRET.encode() not in blob


def test_sync_failure_suggests_a_refreshing_retry(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=51, events_per_day=10)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    assert run_cli(["sync", "--api-url", server.url, "--db", str(db), "--from", "2024-06-01",
                    "--to", "2024-06-10"]).code == 0
    failing = make_server(dataset, fail_dates=frozenset({dt.date(2024, 6, 8)}))
    result = run_cli(["sync", "--api-url", failing.url, "--db", str(db), "--to", "2024-06-12",
                      "--retries", "0", "--chunk-days", "1"])
    assert result.code == 1
    retry = [line for line in result.stderr.splitlines() if "--from 2024-06-08" in line]
    assert retry and "--refresh" in retry[0] and f"--db {db}" in retry[0]


def test_an_endpoint_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = run_cli(["export", "--api-url", f"http://127.0.0.1:{httpd.server_port}",
                          "--from", "-2", "--to", "-1"])
    finally:
        httpd.shutdown()
    assert result.code == 2
    assert "HTTP 404" in result.stderr and "--api-url" in result.stderr


def test_sync_dry_run_reads_the_database_and_writes_nothing(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A dry run plans from what the file holds, and creates, locks and writes nothing.

    It used to open the loader read-write under the lock: a missing file was
    created, and pending Parquet days were written.
    """
    server = make_server(Dataset(seed=43, events_per_day=20))
    db = tmp_path / "events.duckdb"
    parquet = tmp_path / "parquet"
    first = ["sync", "--api-url", server.url, "--db", str(db)]
    dry = run_cli([*first, "--from", "2024-06-01", "--to", "2024-06-05", "--dry-run"])
    assert dry.code == 0, dry.stderr
    assert "from_date=2024-06-01" in dry.stdout.decode()
    assert not db.exists() and not lock_path(db).exists()
    assert run_cli([*first, "--from", "2024-06-01", "--to", "2024-06-20"]).code == 0
    with duckdb.connect(str(db)) as con:  # a day whose Parquet file is still to write
        con.execute("INSERT INTO _mpexport_parquet_pending VALUES ('events', DATE '2024-06-03')")
    before = db.read_bytes()
    server.stats.clear()
    dry = run_cli([*first, "--to", "2024-06-25", "--parquet", str(parquet), "--dry-run"])
    assert dry.code == 0, dry.stderr
    plan = dry.stdout.decode()
    # The lookback (5 days before the last synced day) and the new days.
    assert "from_date=2024-06-15" in plan and "from_date=2024-06-01" not in plan
    assert len(server.stats) == 0
    assert db.read_bytes() == before
    assert not parquet.exists(), "pending Parquet days are not written"
