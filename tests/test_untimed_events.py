"""Events whose ``time`` cannot be read are refused, never stored without a time (issue 20).

The Parquet copy and the lake are partitioned by the UTC day of ``time``, so
an event stored with a NULL time was counted as stored and was in no day
file. Such an event now fails its chunk as other unreadable data does: the
chunk is listed as failed with the reason, nothing of it is stored, the
other chunks load, and every event counted as stored is in every output.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import Dataset
from mpexport.fakeserver.dataset import _DayData
from tests.helpers import ServerFactory, run_cli, stored_keys
from tests.test_e2e_lake import lake_keys
from tests.test_sink_duckdb import Spooler, day, load, query

# ``time`` values DuckDB cannot turn into an instant (None: no ``time`` at all).
UNTIMED = {
    "text": '"abc"',
    "empty text": '""',
    "null": "null",
    "missing": None,
    "boolean": "true",
    "list": "[1]",
    "beyond year 9999": "1e30",
    "27 digits": "123456789012345678901234567",
    "before year 1": "-99999999999999",
}


def untimed_line(n: int, raw: str | None, name: str = "Odd time") -> bytes:
    time = "" if raw is None else f'"time":{raw},'
    return (f'{{"event":"{name}","properties":{{{time}"distinct_id":"u-{n}",'
            f'"$insert_id":"untimed-{n}"}}}}\n').encode()


@pytest.fixture
def spooler(tmp_path: Path) -> Spooler:
    return Spooler(tmp_path, Dataset(seed=9, events_per_day=80))


@pytest.mark.parametrize("replace", [False, True], ids=["fast", "staged"])
@pytest.mark.parametrize("timezone", [None, "America/New_York"], ids=["utc", "project-tz"])
@pytest.mark.parametrize("kind", UNTIMED)
def test_an_event_without_a_readable_time_fails_its_chunk(
    tmp_path: Path, spooler: Spooler, kind: str, replace: bool, timezone: str | None
) -> None:
    db = tmp_path / "out.duckdb"
    good = spooler.lines(day(1), day(1))
    bad = spooler.chunk(day(1), day(1), b"".join(good) + untimed_line(1, UNTIMED[kind]))
    sink = load(db, [spooler.chunk(day(0), day(0)), bad, spooler.chunk(day(2), day(2))],
                replace=replace, project_timezone=timezone)

    assert [f.chunk.from_date for f in sink.failed_chunks] == [day(1)]
    raw = "missing" if UNTIMED[kind] is None else UNTIMED[kind]
    assert sink.failed_chunks[0].reason == (
        f"DuckDB could not load the data: 1 of {len(good) + 1} events have no readable time "
        "(missing, null, not a number, or outside years 1-9999), e.g. event 'Odd time' "
        f"with $insert_id 'untimed-1' and time {raw}; the Parquet copy is partitioned by "
        "the day of time, so the chunk is not stored (stdout exports keep such events as sent)"
    )
    assert sink.stats.chunks == 2
    assert query(db, "SELECT from_date FROM _mpexport_chunks ORDER BY 1") == [(day(0),), (day(2),)]
    stored = sink.stats.rows_inserted
    assert query(db, "SELECT count(*), count(time) FROM events") == [(stored, stored)]
    assert query(db, "SELECT count(*) FROM events WHERE insert_id = 'untimed-1'") == [(0,)]
    assert not list(spooler.dir.iterdir()), "the spool files are deleted"


def test_a_time_given_as_numeric_text_is_readable(tmp_path: Path, spooler: Spooler) -> None:
    """Not everything odd is refused: ``"time": "1709294400"`` reads as that instant."""
    db = tmp_path / "out.duckdb"
    noon = int(dt.datetime(2024, 3, 2, 12, tzinfo=dt.UTC).timestamp())
    sink = load(db, [spooler.chunk(day(1), day(1), untimed_line(1, f'"{noon}"'))])
    assert sink.failed_chunks == []
    assert query(db, "SELECT epoch(time)::BIGINT FROM events") == [(noon,)]


class UntimedDataset(Dataset):
    """A dataset whose day ``bad_day`` also holds one event of each unreadable time."""

    def __init__(self, *args: object, bad_day: dt.date, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bad_day = bad_day

    def _day_data(self, day: dt.date, time_in_ms: bool) -> _DayData:
        names, lines = super()._day_data(day, time_in_ms)
        if day != self.bad_day:
            return names, lines
        extra = [untimed_line(n, raw) for n, raw in enumerate(UNTIMED.values())]
        return [*names, *(["Odd time"] * len(extra))], [*lines, *extra]


START = dt.date(2024, 5, 1)
BAD = START + dt.timedelta(days=1)
END = START + dt.timedelta(days=2)


def export_args(url: str, summary: Path, *outputs: str) -> list[str]:
    return ["export", "--api-url", url, "--from", START.isoformat(), "--to", END.isoformat(),
            "--chunk-days", "1", "--summary-json", str(summary), *outputs]


def assert_counts_add_up(summary: Path, dataset: UntimedDataset) -> set[tuple[str, str, int, str]]:
    """The summary's counts against the data; returns the keys that must be stored."""
    report = json.loads(summary.read_text())
    good_lines = [line for d in (START, END) for line in dataset.lines_for_day(d)]
    bad_lines = dataset.lines_for_day(BAD)
    kept = mixpanel_keys(good_lines)
    assert report["status"] == "partial"
    assert report["exit_code"] == 1
    assert report["chunks"]["total"] == 3
    assert report["chunks"]["ok"] == 2
    assert [(f["from"], f["to"]) for f in report["chunks"]["failed"]] == [
        (BAD.isoformat(), BAD.isoformat())]
    assert f"{len(UNTIMED)} of {len(bad_lines)} events have no readable time" in (
        report["chunks"]["failed"][0]["reason"])
    # Received = stored + duplicates of the stored chunks + the refused chunk's lines.
    assert report["events_received"] == len(good_lines) + len(bad_lines)
    assert report["events"] == len(kept)
    assert report["events"] + report["duplicates"] == len(good_lines)
    return kept


def test_db_and_its_parquet_copy_hold_every_stored_event(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = UntimedDataset(seed=31, events_per_day=60, bad_day=BAD)
    server = make_server(dataset)
    db, pq, summary = tmp_path / "events.duckdb", tmp_path / "pq", tmp_path / "summary.json"
    result = run_cli(export_args(server.url, summary, "--db", str(db), "--parquet", str(pq)))

    assert result.code == 1, result.stderr
    assert f"{len(UNTIMED)} of " in result.stderr and "no readable time" in result.stderr
    kept = assert_counts_add_up(summary, dataset)
    table = stored_keys(db)
    assert len(table) == len(set(table)) and set(table) == kept
    assert sorted(lake_keys(pq)) == sorted(table), "every stored event is in the Parquet copy"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events WHERE time IS NULL").fetchone() == (0,)


def test_a_lake_holds_every_event_counted_as_written(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = UntimedDataset(seed=32, events_per_day=60, bad_day=BAD)
    server = make_server(dataset)
    lake, summary = tmp_path / "lake", tmp_path / "summary.json"
    result = run_cli(export_args(server.url, summary, "--parquet", str(lake)))

    assert result.code == 1, result.stderr
    kept = assert_counts_add_up(summary, dataset)
    keys = lake_keys(lake)
    assert len(keys) == len(set(keys)) and set(keys) == kept
    assert sorted(p.parent.name for p in lake.glob("*/*.parquet")) == [
        f"date={START}", f"date={END}"]
