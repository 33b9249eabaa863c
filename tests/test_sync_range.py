"""Where a sync starts: never before the range's first day unless --from says so."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpexport.cli.demo import mixpanel_keys
from mpexport.errors import UsageError
from mpexport.fakeserver import Dataset
from mpexport.syncing import settled_days, sync_range
from tests.helpers import ServerFactory, run_cli, stored_keys

D = dt.date(2024, 6, 10)  # the first day the user asked for


def day(offset: int) -> dt.date:
    """The day ``offset`` days after D."""
    return D + dt.timedelta(days=offset)


def fetched_days(server: object) -> set[dt.date]:
    """Every day some request to the server covered."""
    days: set[dt.date] = set()
    for q in server.stats.queries():  # type: ignore[attr-defined]
        first = dt.date.fromisoformat(q["from_date"])
        last = dt.date.fromisoformat(q["to_date"])
        days.update(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    return days


def epoch(date: dt.date) -> int:
    """Seconds since the epoch at the start of ``date`` (UTC)."""
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp())


def manifest_days(db: Path) -> set[dt.date]:
    """The days the manifest says are loaded."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT from_date, to_date FROM _mpexport_chunks").fetchall()
    return {a + dt.timedelta(days=i) for a, b in rows for i in range((b - a).days + 1)}


def sync(server_url: str, db: Path, *args: str) -> int:
    """Run ``mpexport sync`` with one-day chunks (a fixed grid) and no retries."""
    result = run_cli(["sync", "--api-url", server_url, "--db", str(db), "--chunk-days", "1",
                      "--retries", "0", *args])
    assert "Traceback" not in result.stderr
    return result.code


def test_lookback_never_reaches_before_the_first_day(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=61, events_per_day=15)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    # A young file: three days, shorter than the lookback.
    assert sync(server.url, db, "--from", D.isoformat(), "--to", day(2).isoformat()) == 0

    # A later sync loads only some days: day 4 keeps failing, so the unbroken
    # run of loaded days ends at day 3 (as after a run killed part-way).
    failing = make_server(dataset, fail_dates=frozenset({day(4)}))
    assert sync(failing.url, db, "--to", day(6).isoformat()) == 1
    assert min(fetched_days(failing)) == D  # 2 - 5 days would have been D - 3
    assert manifest_days(db) == {day(i) for i in (0, 1, 2, 3, 5, 6)}

    # Syncs with lookbacks far longer than the file: they start at D, still.
    assert sync(server.url, db, "--to", day(7).isoformat(), "--lookback", "10") == 0
    assert sync(server.url, db, "--to", day(8).isoformat(), "--lookback", "30") == 0
    assert min(fetched_days(server)) == D

    keys = stored_keys(db)
    assert keys and min(t for _e, _d, t, _i in keys) >= epoch(D)
    assert len(keys) == len(set(keys))
    assert set(keys) == mixpanel_keys(dataset.lines_for_range(D, day(8)))
    assert min(manifest_days(db)) == D


def test_an_explicit_from_moves_the_first_day(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=62, events_per_day=10)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    assert sync(server.url, db, "--from", D.isoformat(), "--to", day(1).isoformat()) == 0
    # Asked for on purpose: three earlier days.
    assert sync(server.url, db, "--from", day(-3).isoformat(), "--to", day(1).isoformat()) == 0
    server.stats.clear()
    assert sync(server.url, db, "--to", day(3).isoformat(), "--lookback", "20") == 0
    assert min(fetched_days(server)) == day(-3)
    assert set(stored_keys(db)) == mixpanel_keys(dataset.lines_for_range(day(-3), day(3)))


def test_a_to_before_the_first_day_needs_from(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=63, events_per_day=5))
    db = tmp_path / "events.duckdb"
    assert sync(server.url, db, "--from", D.isoformat(), "--to", day(1).isoformat()) == 0
    server.stats.clear()
    result = run_cli(["sync", "--api-url", server.url, "--db", str(db),
                      "--to", day(-2).isoformat()])
    assert result.code == 2
    assert "--from" in result.stderr and D.isoformat() in result.stderr
    assert len(server.stats) == 0


# ------------------------------------------------------------ the pure function

BASE = dt.date(2024, 1, 1)
offsets = st.integers(min_value=0, max_value=60)


@st.composite
def covered_days(draw: st.DrawFn) -> set[dt.date]:
    """Loaded days: any non-empty set within two months (gaps, runs, single days)."""
    return {BASE + dt.timedelta(days=o) for o in draw(st.sets(offsets, min_size=1))}


@given(
    covered=covered_days(),
    to_offset=st.integers(min_value=-10, max_value=80),
    lookback=st.integers(min_value=0, max_value=90),
    recorded=st.one_of(st.none(), st.integers(min_value=-5, max_value=60)),
)
def test_a_sync_reads_every_missing_day_of_its_range_and_the_lookback(
    covered: set[dt.date], to_offset: int, lookback: int, recorded: int | None
) -> None:
    to_date = BASE + dt.timedelta(days=to_offset)
    recorded_from = None if recorded is None else BASE + dt.timedelta(days=recorded)
    origin = recorded_from or min(covered)
    if to_date < origin:
        with pytest.raises(UsageError):
            sync_range(covered, to_date, lookback, recorded_from=recorded_from)
        return
    chosen = sync_range(covered, to_date, lookback, recorded_from=recorded_from)
    assert (chosen.origin, chosen.end) == (origin, to_date)
    assert origin <= chosen.start <= to_date
    span = {origin + dt.timedelta(days=i) for i in range((to_date - origin).days + 1)}
    read = {d for d in span if d >= chosen.start} - chosen.settled
    assert span - covered <= read, "every day of the range not loaded yet is read"
    assert span - read <= covered, "only loaded days are skipped"
    loaded = span & covered
    if loaded:
        window = {d for d in span if d >= max(loaded) - dt.timedelta(days=lookback)}
        assert window <= read, "the lookback window is read whole"
    if chosen.complete is not None:
        run = {chosen.start + dt.timedelta(days=i)
               for i in range((chosen.complete - chosen.start).days + 1)}
        assert run <= covered and chosen.complete + dt.timedelta(days=1) not in covered


@given(
    covered=st.one_of(st.just(set()), covered_days()),
    recorded=st.one_of(st.none(), st.integers(min_value=-30, max_value=60)),
    from_offset=st.integers(min_value=-30, max_value=60),
    extra_days=st.integers(min_value=0, max_value=30),
    lookback=st.integers(min_value=0, max_value=90),
)
def test_an_explicit_from_moves_the_origin_and_skips_what_no_from_skips(
    covered: set[dt.date], recorded: int | None, from_offset: int, extra_days: int,
    lookback: int
) -> None:
    from_date = BASE + dt.timedelta(days=from_offset)
    to_date = from_date + dt.timedelta(days=extra_days)
    chosen = sync_range(covered, to_date, lookback, from_date=from_date,
                        recorded_from=None if recorded is None
                        else BASE + dt.timedelta(days=recorded))
    assert (chosen.origin, chosen.end) == (from_date, to_date)
    # The same --from, now recorded, and no --from at all plan the same reads.
    again = sync_range(covered, to_date, lookback, recorded_from=from_date)
    assert again == chosen
    everything = sync_range(covered, to_date, lookback, from_date=from_date, refresh=True)
    assert (everything.start, everything.settled) == (from_date, frozenset())


def test_the_first_sync_needs_from() -> None:
    with pytest.raises(UsageError):
        sync_range(set(), BASE, 5)


def test_a_negative_lookback_is_refused() -> None:
    with pytest.raises(UsageError):
        sync_range({BASE}, BASE, -1)


def test_a_day_that_keeps_failing_does_not_make_syncs_refetch_everything_after_it(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Only the gap and the lookback window are read again, not every day after the gap."""
    dataset = Dataset(seed=62, events_per_day=15)
    failing = make_server(dataset, fail_dates=frozenset({day(3)}))
    db = tmp_path / "events.duckdb"
    assert sync(failing.url, db, "--from", D.isoformat(), "--to", day(9).isoformat()) == 1
    assert manifest_days(db) == {day(i) for i in range(10)} - {day(3)}

    again = make_server(dataset, fail_dates=frozenset({day(3)}))
    assert sync(again.url, db, "--to", day(9).isoformat(), "--lookback", "2") == 1
    assert fetched_days(again) == {day(3), day(7), day(8), day(9)}

    healed = make_server(dataset)
    assert sync(healed.url, db, "--to", day(9).isoformat(), "--lookback", "2") == 0
    assert fetched_days(healed) == {day(3), day(7), day(8), day(9)}
    keys = stored_keys(db)
    assert len(keys) == len(set(keys))
    assert manifest_days(db) == {day(i) for i in range(10)}


@given(
    covered_offsets=st.sets(st.integers(0, 40), min_size=1, max_size=30),
    lookback=st.integers(0, 10),
)
def test_settled_days_are_loaded_and_older_than_the_lookback(
    covered_offsets: set[int], lookback: int
) -> None:
    covered = {BASE + dt.timedelta(days=o) for o in covered_offsets}
    to_date = BASE + dt.timedelta(days=40)
    start = sync_range(covered, to_date, lookback).start
    settled = settled_days(covered, start, to_date, lookback)
    assert settled <= covered
    newest = max(covered)
    assert all(d < newest - dt.timedelta(days=lookback) for d in settled)
    span = {start + dt.timedelta(days=i) for i in range((to_date - start).days + 1)}
    read = span - settled
    assert span - covered <= read, "every day not loaded yet is read"
    window = {d for d in span if d >= newest - dt.timedelta(days=lookback)}
    assert window <= read, "the lookback window is read whole"
