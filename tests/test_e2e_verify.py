"""``mpexport verify``, ``sync --verify`` and ``export --verify`` end to end.

The real CLI runs as a subprocess against the built-in server over loopback,
with real DuckDB files and lakes. The server's ``/api/query/events`` counts
its data as Mixpanel's reports do (copies of an event once), so an exact
export verifies and a damaged one is named day by day.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb

from mpexport.fakeserver import DEMO_API_SECRET, DEMO_SECRET, Dataset
from mpexport.fakeserver.counts import day_counts
from tests.helpers import ServerFactory, run_cli

FIRST, LAST = dt.date(2024, 5, 1), dt.date(2024, 5, 6)
DAMAGED = dt.date(2024, 5, 3)
EVENT = "Page View"


def _export(server_url: str, *store: str, first: dt.date = FIRST, last: dt.date = LAST,
            extra: tuple[str, ...] = ()) -> None:
    result = run_cli(["export", "--api-url", server_url, "--from", first.isoformat(), "--to",
                      last.isoformat(), *store, *extra])
    assert result.code == 0, result.stderr


def _remove(db: Path, day: dt.date, event: str, rows: int) -> None:
    """Delete ``rows`` rows of ``event`` on the UTC ``day`` from the table."""
    with duckdb.connect(str(db)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE event = ? "
            "AND CAST(time AS DATE) = ? ORDER BY rowid LIMIT ?)", [event, day, rows])


def _table_counts(db: Path) -> dict[tuple[dt.date, str], int]:
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute("SELECT CAST(time AS DATE), event, count(*) FROM events "
                           "GROUP BY 1, 2").fetchall()
    return {(day, event): n for day, event, n in rows}


def _server_counts(dataset: Dataset) -> dict[tuple[dt.date, str], int]:
    counts = {}
    day = FIRST
    while day <= LAST:
        counts.update({(day, name): n for name, n in day_counts(dataset, day).items()})
        day += dt.timedelta(days=1)
    return counts


def test_an_exact_table_verifies(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=81, events_per_day=40)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    _export(server.url, "--db", str(db))
    summary = tmp_path / "verify.json"
    result = run_cli(["verify", "--api-url", server.url, "--db", str(db),
                      "--summary-json", str(summary)])
    assert result.code == 0, result.stderr
    total = sum(_server_counts(dataset).values())
    assert f"verified: {FIRST}..{LAST} matches Mixpanel" in result.stderr
    assert f"({total} events" in result.stderr
    report = json.loads(summary.read_text())
    assert (report["status"], report["matches"], report["differing_days"]) == (
        "complete", True, [])
    assert (report["stored"], report["mixpanel"]) == (total, total)
    # The check's names are the table's, several per query: one query for six days.
    counts = [r for r in server.stats.records() if r.path == "/api/query/events"]
    assert [r.status for r in counts] == [200]
    assert json.loads(counts[0].params["event"]) == sorted({e for _, e in _table_counts(db)})
    assert (counts[0].params["type"], counts[0].params["unit"]) == ("general", "day")


def test_an_exact_lake_verifies(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=82, events_per_day=40)
    server = make_server(dataset)
    lake = tmp_path / "lake"
    _export(server.url, "--parquet", str(lake))
    result = run_cli(["verify", "--api-url", server.url, "--parquet", str(lake)])
    assert result.code == 0, result.stderr
    assert f"verified: {FIRST}..{LAST} matches Mixpanel" in result.stderr


def test_missing_rows_are_named_with_their_difference(make_server: ServerFactory,
                                                      tmp_path: Path) -> None:
    dataset = Dataset(seed=83, events_per_day=40)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    _export(server.url, "--db", str(db))
    _remove(db, DAMAGED, EVENT, 3)
    expected = _server_counts(dataset)[(DAMAGED, EVENT)]
    summary = tmp_path / "verify.json"
    result = run_cli(["verify", "--api-url", server.url, "--db", str(db),
                      "--summary-json", str(summary)])
    assert result.code == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"mpexport: DIFFERS: 1 count on 1 day of {FIRST}..{LAST} differ from "
                        "Mixpanel (3 events missing, 0 extra)")
    assert lines[1].split() == ["day", "event", "stored", "Mixpanel", "difference"]
    assert lines[2].split() == [DAMAGED.isoformat(), "Page", "View", str(expected - 3),
                                str(expected), "-3"]
    assert lines[3] == "fetch those days again with:"
    assert lines[4] == (f"  mpexport export --from {DAMAGED} --to {DAMAGED} --db {db} "
                        f"--api-url {server.url} --refresh")
    report = json.loads(summary.read_text())
    assert report["status"] == "partial" and report["exit_code"] == 1
    assert report["differing_days"] == [DAMAGED.isoformat()]
    assert report["differences"] == [{"day": DAMAGED.isoformat(), "event": EVENT,
                                      "stored": expected - 3, "mixpanel": expected,
                                      "difference": -3}]
    assert report["settling_days"] == []
    # The printed command heals the table.
    healed = run_cli(report["rerun_argv"][0][1:])
    assert healed.code == 0, healed.stderr
    assert _table_counts(db) == {k: v for k, v in _server_counts(dataset).items() if v}


def test_sync_verify_heals_an_old_day(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=84, events_per_day=40)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    first = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--from",
                     FIRST.isoformat(), "--to", LAST.isoformat()])
    assert first.code == 0, first.stderr
    _remove(db, FIRST, EVENT, 2)  # before the lookback: a plain sync never reads it again
    summary = tmp_path / "sync.json"
    result = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--to",
                      LAST.isoformat(), "--lookback", "1", "--verify", "--summary-json",
                      str(summary)])
    assert result.code == 0, result.stderr
    assert (f"mpexport: DIFFERS: 1 count on 1 day of {FIRST}..{LAST} differ from Mixpanel "
            "(2 events missing, 0 extra)") in result.stderr
    assert f"mpexport: fetched {FIRST} again: 2 events added" in result.stderr
    assert f"mpexport: verified: {FIRST}..{FIRST} matches Mixpanel" in result.stderr
    assert _table_counts(db) == {k: v for k, v in _server_counts(dataset).items() if v}
    report = json.loads(summary.read_text())["verify"]
    assert report["first_differing_days"] == [FIRST.isoformat()]
    assert report["refetched"] == [{"from": FIRST.isoformat(), "to": FIRST.isoformat()}]
    assert (report["matches"], report["differing_days"]) == (True, [])


def test_export_verify_on_a_lake(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(Dataset(seed=85, events_per_day=30))
    lake = tmp_path / "lake"
    result = run_cli(["export", "--api-url", server.url, "--from", FIRST.isoformat(), "--to",
                      LAST.isoformat(), "--parquet", str(lake), "--verify"])
    assert result.code == 0, result.stderr
    assert f"verified: {FIRST}..{LAST} matches Mixpanel" in result.stderr


def test_a_legacy_time_zone_project_verifies_with_its_zone(make_server: ServerFactory,
                                                           tmp_path: Path) -> None:
    # The server's days are the project's: its times are Los Angeles wall clock.
    server = make_server(Dataset(seed=86, events_per_day=40))
    db, lake = tmp_path / "events.duckdb", tmp_path / "lake"
    zone = ("--project-timezone", "America/Los_Angeles")
    _export(server.url, "--db", str(db), "--parquet", str(lake), extra=zone)
    for store in (["--db", str(db)], ["--parquet", str(lake)]):
        result = run_cli(["verify", "--api-url", server.url, *store, *zone])
        assert result.code == 0, result.stderr
        assert f"verified: {FIRST}..{LAST} matches Mixpanel" in result.stderr
        # Read as UTC days, the same events fall on other days.
        utc = run_cli(["verify", "--api-url", server.url, *store, "--from",
                       FIRST.isoformat(), "--to", LAST.isoformat()])
        assert utc.code == 1, utc.stderr


def test_the_query_api_limits_are_respected(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=87, events_per_day=20)
    # 5 at once, 60 an hour, as the Query API; each query's first attempt gets a 429.
    server = make_server(dataset, engage_concurrency_limit=5, engage_hourly_limit=60,
                         counts_faults=("http429",), retry_after=0, ttfb=0.02)
    db = tmp_path / "events.duckdb"
    _export(server.url, "--db", str(db))
    dry = run_cli(["verify", "--api-url", server.url, "--db", str(db), "--days-per-query",
                   "1", "--dry-run"])
    assert dry.code == 0, dry.stderr
    days = (LAST - FIRST).days + 1
    assert f"the check takes {days} queries".encode() in dry.stdout
    result = run_cli(["verify", "--api-url", server.url, "--db", str(db), "--days-per-query",
                      "1", "--hourly-limit", "60"])
    assert result.code == 0, result.stderr
    counts = [r for r in server.stats.records() if r.path == "/api/query/events"]
    # Every query was refused once (the fault) and then answered; the server's
    # own limits never refused one: never more than 5 at once, 12 of 60 an hour.
    assert sorted(r.status for r in counts) == [200] * days + [429] * days
    assert all(r.fault == "http429" for r in counts if r.status == 429)
    assert 1 <= server.engage.limiter.peak <= 5


def test_no_credential_appears_in_any_output(make_server: ServerFactory, tmp_path: Path,
                                             isolated_state: Path) -> None:
    server = make_server(Dataset(seed=88, events_per_day=20))
    db = tmp_path / "events.duckdb"
    _export(server.url, "--db", str(db))
    _remove(db, DAMAGED, EVENT, 1)
    summary = tmp_path / "verify.json"
    outputs = []
    for extra in (["-v", "--summary-json", str(summary)], ["--dry-run"]):
        result = run_cli(["verify", "--api-url", server.url, "--db", str(db), *extra])
        outputs += [result.stdout, result.stderr.encode()]
    legacy = run_cli(["verify", "--api-url", server.url, "--db", str(db), "-v"],
                     credentials=False, env={"MP_API_SECRET": DEMO_API_SECRET})
    assert legacy.code == 1, legacy.stderr
    outputs += [legacy.stdout, legacy.stderr.encode(), summary.read_bytes()]
    healed = run_cli(["sync", "--api-url", server.url, "--db", str(db), "--to",
                      LAST.isoformat(), "--verify", "-v"])
    assert healed.code == 0, healed.stderr
    outputs += [healed.stdout, healed.stderr.encode()]
    outputs += [p.read_bytes() for p in isolated_state.rglob("*") if p.is_file()]
    for blob in outputs:
        assert DEMO_SECRET.encode() not in blob
        assert DEMO_API_SECRET.encode() not in blob


def test_verify_needs_a_store(tmp_path: Path) -> None:
    result = run_cli(["verify", "--api-url", "http://127.0.0.1:9"])
    assert result.code == 2 and "verify needs --db FILE or --parquet" in result.stderr
    ndjson = run_cli(["export", "--from", "-3", "--to", "-1", "--verify"])
    assert ndjson.code == 2 and "--verify needs --db FILE or --parquet" in ndjson.stderr
