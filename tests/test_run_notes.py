"""What a run says about what it does not do: days already loaded, skipped by plan and run alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, run_cli

NOTE = "mpexport: note: {} days already loaded (use --refresh to fetch them again)"


@pytest.mark.parametrize("where", ["--db", "--parquet"])
def test_export_over_loaded_days_says_so_in_the_plan_and_the_run(
    make_server: ServerFactory, tmp_path: Path, where: str
) -> None:
    server = make_server(Dataset(seed=51, events_per_day=5))
    target = str(tmp_path / ("events.duckdb" if where == "--db" else "lake"))
    base = ["export", "--api-url", server.url, where, target, "--chunk-days", "1"]
    first = run_cli([*base, "--from", "2024-01-01", "--to", "2024-01-10"])
    assert first.code == 0, first.stderr
    assert "already loaded" not in first.stderr
    # Ten days held, two new: the plan and the run both skip the ten, and say so.
    wider = [*base, "--from", "2024-01-01", "--to", "2024-01-12"]
    dry = run_cli([*wider, "--dry-run"])
    assert dry.code == 0, dry.stderr
    assert dry.stderr.splitlines() == [NOTE.format(10)]
    plan = dry.stdout.decode().splitlines()
    assert [line.split()[2] for line in plan[:-2]] == ["2024-01-11", "2024-01-12"]
    assert plan[-2].startswith("2 chunks, 2 queries, ")
    run = run_cli(wider)
    assert run.code == 0, run.stderr
    assert run.stderr.splitlines()[0] == NOTE.format(10)
    assert " 2/12 chunks, 10 already loaded, " in run.stderr.splitlines()[1]
    assert server.stats.count(status=200) == 12
    # Everything held: nothing to do, and the reason, not a bare 0/0.
    again = run_cli(wider)
    assert again.code == 0, again.stderr
    assert again.stderr.splitlines()[0] == NOTE.format(12)
    assert " 0/12 chunks, 12 already loaded, " in again.stderr.splitlines()[1]
    # Planned to fit the hour (no --chunk-days), the loaded days are not even chunks.
    adaptive = [a for a in wider if a not in ("--chunk-days", "1")]
    planned = run_cli(adaptive)
    assert planned.stderr.splitlines()[0] == NOTE.format(12)
    assert " 0/0 chunks, " in planned.stderr.splitlines()[1]
    # --refresh fetches them again, and has nothing to explain.
    refresh = run_cli([*wider, "--refresh", "--dry-run"])
    assert refresh.stderr == ""
    assert refresh.stdout.decode().splitlines()[-2].startswith("12 chunks, 12 queries, ")


def test_sync_says_which_loaded_days_it_does_not_read_again(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=52, events_per_day=5))
    db = str(tmp_path / "events.duckdb")
    base = ["sync", "--api-url", server.url, "--db", db, "--chunk-days", "1", "--lookback", "2"]
    first = run_cli([*base, "--from", "2024-01-01", "--to", "2024-01-10"])
    assert first.code == 0, first.stderr
    assert "already loaded" not in first.stderr
    # Days 8-10 are the lookback: read again; 1-7 are settled.
    dry = run_cli([*base, "--to", "2024-01-12", "--dry-run"])
    assert dry.stderr.splitlines() == [NOTE.format(7)]
    assert dry.stdout.decode().splitlines()[-2].endswith(", 2024-01-08..2024-01-12")
    run = run_cli([*base, "--to", "2024-01-12"])
    assert run.code == 0, run.stderr
    assert run.stderr.splitlines()[0] == NOTE.format(7)
