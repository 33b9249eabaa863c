"""One run path: the CLI and the library build the same options and reach the same function."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

import mpexport
from mpexport import runner
from mpexport.cli.main import run as cli_run
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.mixpanel.credentials import Credentials
from mpexport.model import ExportResult
from mpexport.options import RunOptions
from tests.helpers import ServerFactory, run_cli, service_account_env, stored_keys

CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)


class Captured(Exception):
    """Raised by the fake run: the options reached the one function."""


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, RunOptions]]:
    calls: list[tuple[str, RunOptions]] = []

    def fake_run(command: str, options: RunOptions, **_kwargs: Any) -> ExportResult:
        calls.append((command, options))
        raise Captured

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def test_cli_and_library_build_the_same_export_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _capture(monkeypatch)
    db, parquet = tmp_path / "e.duckdb", tmp_path / "lake"
    cli_run(["export", "--from", "2024-05-01", "--to", "2024-05-09", "--event", "A",
             "--event", "B", "--where", 'properties["x"]==1', "--workers", "4",
             "--chunk-days", "2", "--retries", "3", "--qps-limit", "2.5", "--hourly-limit",
             "40", "--region", "eu", "--api-url", "http://127.0.0.1:1", "--db", str(db),
             "--table", "t", "--refresh", "--parquet", str(parquet), "--memory-limit",
             "512MB", "--wait-lock", "7", "--project-timezone", "America/New_York"])
    with pytest.raises(Captured):
        mpexport.export("2024-05-01", "2024-05-09", events=["A", "B"],
                        where='properties["x"]==1', workers=4, chunk_days=2, retries=3,
                        qps_limit=2.5, hourly_limit=40, region="eu",
                        api_url="http://127.0.0.1:1", db=db, table="t", refresh=True,
                        parquet=parquet, memory_limit="512MB", wait_lock=7,
                        project_timezone="America/New_York")
    assert len(calls) == 2, "both ways reached runner.run"
    (cli_command, cli_options), (lib_command, lib_options) = calls
    assert cli_command == lib_command == "export"
    assert cli_options == lib_options
    # Every option was set to something else than its default: none got lost on the way.
    changed = {f.name for f in dataclasses.fields(RunOptions)
               if getattr(cli_options, f.name) != getattr(RunOptions(), f.name)}
    assert changed >= {"events", "where", "workers", "chunk_days", "retries", "qps_limit",
                       "hourly_limit", "region", "api_url", "db", "table", "refresh",
                       "parquet", "memory_limit", "wait_lock", "project_timezone"}


def test_cli_and_library_build_the_same_sync_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _capture(monkeypatch)
    db = tmp_path / "s.duckdb"
    cli_run(["sync", "--db", str(db), "--from", "2024-05-01", "--to", "2024-05-20",
             "--lookback", "2", "--workers", "3", "--limit", "100", "--retries", "1"])
    with pytest.raises(Captured):
        mpexport.sync(db, from_date="2024-05-01", to_date="2024-05-20", lookback=2,
                      workers=3, limit=100, retries=1)
    (cli_command, cli_options), (lib_command, lib_options) = calls
    assert cli_command == lib_command == "sync"
    assert cli_options == lib_options


def test_one_scenario_both_ways_gives_the_same_table_and_result(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The same export by the CLI (a subprocess) and by the library: same rows, same counts."""
    dataset = Dataset(seed=31, events_per_day=40, quiet_every=5)
    server = make_server(dataset, faults=("reset",))
    args = {"from": "2024-05-01", "to": "2024-05-12"}
    cli_db, lib_db = tmp_path / "cli.duckdb", tmp_path / "lib.duckdb"
    summary = tmp_path / "summary.json"
    done = run_cli(["export", "--from", args["from"], "--to", args["to"], "--chunk-days", "3",
                    "--api-url", server.url, "--db", str(cli_db), "--summary-json",
                    str(summary), "-q"])
    assert done.code == 0, done.stderr
    result = mpexport.export(args["from"], args["to"], chunk_days=3, api_url=server.url,
                             db=lib_db, credentials=CREDS, qps_limit=1000,
                             hourly_limit=1_000_000)
    assert sorted(stored_keys(cli_db)) == sorted(stored_keys(lib_db))
    assert len(stored_keys(lib_db)) > 0
    report = json.loads(summary.read_text())
    assert result.load is not None
    assert report["events"] == result.load.rows_inserted
    assert report["chunks"]["total"] == result.chunks_total == 4
    assert report["range"] == {"from": args["from"], "to": args["to"]}
    assert (result.from_date.isoformat(), result.to_date.isoformat()) == (  # type: ignore[union-attr]
        args["from"], args["to"])


def test_library_dry_run_returns_the_plan_the_cli_prints(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=3, events_per_day=5))
    printed = run_cli(["export", "--from", "2024-05-01", "--to", "2024-05-06",
                       "--chunk-days", "2", "--api-url", server.url, "--dry-run"])
    assert printed.code == 0, printed.stderr
    result = mpexport.export("2024-05-01", "2024-05-06", chunk_days=2, api_url=server.url,
                             credentials=CREDS, dry_run=True, output=io.BytesIO(),
                             qps_limit=1000, hourly_limit=1_000_000)
    lines = printed.stdout.decode().splitlines()
    assert result.plan[:3] == lines[:3]  # the chunk lines; totals name the hour's usage
    assert result.chunks_total == 3 and not result.completed
    assert len(server.stats) == 0


def test_library_reads_a_profile_like_the_cli(make_server: ServerFactory,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials argument: the MP_* environment, as the CLI reads it."""
    server = make_server(Dataset(seed=5, events_per_day=3))
    for key, value in service_account_env().items():
        monkeypatch.setenv(key, value)
    out = io.BytesIO()
    result = mpexport.export("2024-05-01", "2024-05-02", output=out, api_url=server.url)
    assert result.ok and out.getvalue().count(b"\n") == result.events > 0


def test_resume_command_repeats_what_was_typed_and_nothing_else(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Typed options come back even at their default; environment variables stay there.

    ``--debug`` (display only, and no value of the command's) is not repeated:
    it once made the resume itself fail with an internal error.
    """
    import datetime as dt
    import shlex

    server = make_server(Dataset(seed=8, events_per_day=5),
                         fail_dates=frozenset({dt.date(2024, 5, 2)}))
    summary = tmp_path / "s.json"
    # run_cli's environment sets MPEXPORT_QPS_LIMIT and MPEXPORT_HOURLY_LIMIT.
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-05-01", "--to",
                      "2024-05-03", "--chunk-days", "1", "--retries", "0", "--workers", "10",
                      "--event", "A", "--event", "B b", "--summary-json", str(summary),
                      "--no-progress", "--debug"])
    assert result.code == 1, result.stderr
    [rerun] = json.loads(summary.read_text())["rerun"]
    argv = shlex.split(rerun)
    assert argv[:6] == ["mpexport", "export", "--from", "2024-05-02", "--to", "2024-05-02"]
    pairs = list(zip(argv[6::2], argv[7::2], strict=True))
    assert sorted(pairs) == sorted([("--workers", "10"), ("--chunk-days", "1"),
                                    ("--retries", "0"), ("--event", "A"), ("--event", "B b"),
                                    ("--api-url", server.url)])


def test_the_library_reads_the_machine_wide_environment_like_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$MPEXPORT_HOURLY_LIMIT and friends apply to library calls too; an argument wins."""
    calls = _capture(monkeypatch)
    monkeypatch.setenv("MPEXPORT_QPS_LIMIT", "1.5")
    monkeypatch.setenv("MPEXPORT_HOURLY_LIMIT", "30")
    monkeypatch.setenv("MPEXPORT_PROJECT_TIMEZONE", "America/New_York")
    cli_run(["export", "--from", "2024-05-01", "--to", "2024-05-02"])
    with pytest.raises(Captured):
        mpexport.export("2024-05-01", "2024-05-02")
    with pytest.raises(Captured):
        mpexport.export("2024-05-01", "2024-05-02", hourly_limit=50, project_timezone="UTC")
    (_, from_cli), (_, from_library), (_, explicit) = calls
    assert from_cli == from_library
    assert (from_library.qps_limit, from_library.hourly_limit,
            from_library.project_timezone) == (1.5, 30, "America/New_York")
    assert (explicit.qps_limit, explicit.hourly_limit, explicit.project_timezone) == (
        1.5, 50, "UTC")
