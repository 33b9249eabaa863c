"""The copy Mixpanel shows: of the events sharing Mixpanel's key, the latest processed one.

The built-in server re-sends events as ``/import`` does (same event name,
distinct_id, time and ``$insert_id``; other properties; a later
``mp_processing_time_ms``). Whether both copies arrive in one chunk or the
newer one in a later run, ``--db``, ``--parquet`` and both together must
hold the newer copy, and hold the same one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport.fakeserver import Dataset
from tests.helpers import ServerFactory, run_cli

START = dt.date(2024, 5, 1)
END = START + dt.timedelta(days=3)
Key = tuple[str, str, int, str]
Shown = dict[Key, dict[str, Any]]
MODES = ("db", "parquet", "both")


def latest(lines: Iterable[bytes]) -> Shown:
    """Per Mixpanel key, the properties of the copy with the greatest processing time.

    The first of equal copies stays, as the stored row does on a tie.
    """
    shown: Shown = {}
    for line in lines:
        event = json.loads(line)
        props = event["properties"]
        key = (event["event"], props["distinct_id"], props["time"], props["$insert_id"])
        held = shown.get(key)
        if held is None or props["mp_processing_time_ms"] > held["mp_processing_time_ms"]:
            shown[key] = props
    return shown


def table_copies(db: Path) -> Shown:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id, properties FROM events"
        ).fetchall()
    return _copies(rows)


def lake_copies(lake: Path) -> Shown:
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id, properties "
            f"FROM read_parquet('{lake.as_posix()}/*/*.parquet')"
        ).fetchall()
    return _copies(rows)


def _copies(rows: list[tuple[Any, ...]]) -> Shown:
    copies: Shown = {}
    for event, distinct_id, seconds, insert_id, properties in rows:
        key = (event, distinct_id, seconds, insert_id)
        assert key not in copies, f"{key} is stored twice"
        copies[key] = json.loads(properties)
    return copies


class Target:
    """Where one mode stores events, and what it holds."""

    def __init__(self, mode: str, root: Path) -> None:
        self.mode = mode
        self.db = root / "events.duckdb"
        self.lake = root / "lake"
        self.summary = root / "summary.json"

    def args(self) -> list[str]:
        db = ["--db", str(self.db)] if self.mode in ("db", "both") else []
        lake = ["--parquet", str(self.lake)] if self.mode in ("parquet", "both") else []
        return [*db, *lake, "--summary-json", str(self.summary)]

    def held(self) -> Shown:
        """The copies stored; with both, the table and the lake must hold the same."""
        if self.mode == "db":
            return table_copies(self.db)
        if self.mode == "parquet":
            return lake_copies(self.lake)
        table = table_copies(self.db)
        assert lake_copies(self.lake) == table
        return table

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.summary.read_text())
        return report


def export(url: str, target: Target, *extra: str) -> tuple[str, dict[str, Any]]:
    result = run_cli(["export", "--api-url", url, "--from", START.isoformat(), "--to",
                      END.isoformat(), "--chunk-days", "2", *target.args(), *extra])
    assert result.code == 0, result.stderr
    return result.stderr, target.report()


def corrected(shown: Shown) -> dict[Key, int]:
    """The keys whose stored copy is a corrected one, with its round."""
    return {key: props["corrected"] for key, props in shown.items() if "corrected" in props}


@pytest.mark.parametrize("mode", MODES)
def test_both_copies_in_one_chunk_keep_the_later_one(
    mode: str, make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=81, events_per_day=60)
    dataset.resend_events(START, 3)
    dataset.resend_events(START + dt.timedelta(days=3), 2)
    # A second round for the first day: three copies of those events in one chunk.
    dataset.resend_events(START, 1)
    server = make_server(dataset)
    target = Target(mode, tmp_path)
    _, report = export(server.url, target)

    lines = dataset.lines_for_range(START, END)
    expected = latest(lines)
    assert target.held() == expected
    assert sorted(corrected(expected).values()) == [1, 1, 1, 1, 2]
    assert report["events"] == len(expected)
    assert report["duplicates"] == len(lines) - len(expected)
    assert report["updated"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_newer_copy_replaces_the_stored_one_an_equal_one_does_not(
    mode: str, make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=82, events_per_day=60)
    server = make_server(dataset)
    target = Target(mode, tmp_path)
    export(server.url, target)
    assert corrected(target.held()) == {}

    # Corrections re-sent for two days, and a late event, between two runs.
    dataset.resend_events(START + dt.timedelta(days=1), 4)
    dataset.resend_events(START + dt.timedelta(days=2), 1)
    dataset.add_late_events(START + dt.timedelta(days=2), 2)
    stderr, report = export(server.url, target, "--refresh")
    expected = latest(dataset.lines_for_range(START, END))
    assert target.held() == expected
    assert len(corrected(expected)) == 5
    assert report["updated"] == 5 and report["events"] == 2
    assert "5 updated" in stderr

    # A copy processed at the same instant as the stored one changes nothing
    # (no churn on re-reads), nor does reading the same days again.
    dataset.resend_events(START + dt.timedelta(days=1), 4, later_by_ms=0)
    stderr, report = export(server.url, target, "--refresh")
    assert target.held() == expected
    assert report["updated"] == 0 and report["events"] == 0
    assert "updated" not in stderr

    # A later round replaces the corrected copies again.
    dataset.resend_events(START + dt.timedelta(days=1), 2)
    _, report = export(server.url, target, "--refresh")
    assert report["updated"] == 2
    held = target.held()
    assert held == latest(dataset.lines_for_range(START, END))
    assert sorted(corrected(held).values()) == [1, 1, 1, 3, 3]


def test_a_sync_lookback_brings_the_newer_copy_into_the_lake(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=83, events_per_day=50)
    server = make_server(dataset)
    lake = tmp_path / "lake"
    summary = tmp_path / "summary.json"
    sync = ["sync", "--api-url", server.url, "--parquet", str(lake), "--summary-json",
            str(summary)]
    first = run_cli([*sync, "--from", START.isoformat(), "--to", END.isoformat()])
    assert first.code == 0, first.stderr

    dataset.resend_events(END - dt.timedelta(days=1), 3)
    second = run_cli([*sync, "--to", END.isoformat(), "--lookback", "2"])
    assert second.code == 0, second.stderr
    report = json.loads(summary.read_text())
    assert report["updated"] == 3 and report["late_events"] == 0
    assert "3 updated" in second.stderr
    assert lake_copies(lake) == latest(dataset.lines_for_range(START, END))
