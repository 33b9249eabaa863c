"""Planner and date words: properties over arbitrary ranges."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpexport.dates import parse_date, parse_range
from mpexport.errors import UsageError
from mpexport.model import Chunk
from mpexport.plan import plan_adaptive, plan_chunks, query_budget, split_chunk

TODAY = dt.date(2024, 3, 15)
dates = st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2030, 12, 31))


@given(dates, st.integers(min_value=0, max_value=800), st.integers(min_value=1, max_value=400))
def test_plan_covers_range_contiguously(start: dt.date, span: int, chunk_days: int) -> None:
    end = start + dt.timedelta(days=span)
    chunks = plan_chunks(start, end, chunk_days)
    assert chunks[0].from_date == start
    assert chunks[-1].to_date == end
    for index, chunk in enumerate(chunks):
        assert chunk.index == index
        assert chunk.from_date <= chunk.to_date
        assert chunk.days <= chunk_days
    for before, after in itertools.pairwise(chunks):
        assert after.from_date == before.to_date + dt.timedelta(days=1)
    assert sum(c.days for c in chunks) == span + 1
    # only the last chunk may be short
    assert all(c.days == chunk_days for c in chunks[:-1])


def test_plan_rejects_bad_sizes() -> None:
    with pytest.raises(UsageError):
        plan_chunks(TODAY, TODAY, 0)
    with pytest.raises(UsageError):
        plan_chunks(TODAY, TODAY - dt.timedelta(days=1), 7)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("today", TODAY),
        ("TODAY", TODAY),
        ("yesterday", dt.date(2024, 3, 14)),
        ("-0", TODAY),
        ("-30", dt.date(2024, 2, 14)),
    ],
)
def test_date_words(word: str, expected: dt.date) -> None:
    assert parse_date(word, today=TODAY) == expected


@pytest.mark.parametrize(
    "word", ["2023-02-29", "2024-13-01", "24-01-01", "tomorrow", "+3", "", "-"]
)
def test_bad_date_words(word: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_date(word, today=TODAY, option="--from")
    assert "--from" in info.value.one_line()


@given(dates)
def test_iso_round_trip(day: dt.date) -> None:
    assert parse_date(day.isoformat(), today=TODAY) == day


@given(st.integers(min_value=0, max_value=5000))
def test_relative_days(n: int) -> None:
    assert parse_date(f"-{n}", today=TODAY) == TODAY - dt.timedelta(days=n)


def test_range_order() -> None:
    with pytest.raises(UsageError, match="after"):
        parse_range("2024-02-01", "2024-01-01", today=TODAY)
    assert parse_range("-1", "today", today=TODAY) == (dt.date(2024, 3, 14), TODAY)


@given(
    dates,
    st.integers(min_value=0, max_value=800),
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=60),
    st.dictionaries(dates, st.integers(min_value=0, max_value=5_000_000), max_size=30),
)
def test_adaptive_plan_fits_budget_and_covers(
    start: dt.date, span: int, workers: int, budget: int, volumes: dict[dt.date, int]
) -> None:
    end = start + dt.timedelta(days=span)
    chunks = plan_adaptive(start, end, workers=workers, max_queries=budget,
                           day_volumes=volumes)
    assert 1 <= len(chunks) <= min(budget, span + 1)
    assert chunks[0].from_date == start and chunks[-1].to_date == end
    for before, after in itertools.pairwise(chunks):
        assert after.from_date == before.to_date + dt.timedelta(days=1)
    # as many chunks as workers whenever budget and days allow
    assert len(chunks) >= min(workers, budget, span + 1)


def test_year_fits_the_hourly_budget() -> None:
    chunks = plan_adaptive(dt.date(2023, 1, 1), dt.date(2023, 12, 31), workers=10,
                           max_queries=query_budget(60))
    assert 10 <= len(chunks) <= 51


def test_balanced_by_recorded_volume() -> None:
    start = dt.date(2024, 1, 1)
    # one huge day among quiet ones: it should get a chunk of its own
    volumes = {start + dt.timedelta(days=i): 10 for i in range(20)}
    volumes[start + dt.timedelta(days=10)] = 100_000
    chunks = plan_adaptive(start, start + dt.timedelta(days=19), workers=4, max_queries=50,
                           day_volumes=volumes)
    assert any(c.from_date == c.to_date == start + dt.timedelta(days=10) for c in chunks)


def test_volume_target_adds_chunks() -> None:
    start = dt.date(2024, 1, 1)
    volumes = {start + dt.timedelta(days=i): 400_000 for i in range(30)}
    chunks = plan_adaptive(start, start + dt.timedelta(days=29), workers=2, max_queries=50,
                           day_volumes=volumes, target_events=1_000_000)
    assert len(chunks) >= 12


@given(dates, st.integers(min_value=1, max_value=60))
def test_split_halves_cover_the_chunk(start: dt.date, span: int) -> None:
    chunk = Chunk(3, start, start + dt.timedelta(days=span))
    left, right = split_chunk(chunk)
    assert left.from_date == chunk.from_date and right.to_date == chunk.to_date
    assert right.from_date == left.to_date + dt.timedelta(days=1)
    assert abs(left.days - right.days) <= 1


def test_remaining_ranges_count_days_not_chunks() -> None:
    from mpexport.request import remaining_ranges

    d = dt.date(2024, 1, 1)
    planned = [Chunk(0, d, d + dt.timedelta(days=13)),
               Chunk(1, d + dt.timedelta(days=14), d + dt.timedelta(days=20))]
    # The first chunk was split and both halves written; the second was not.
    halves = [Chunk(0, d, d + dt.timedelta(days=6)),
              Chunk(0, d + dt.timedelta(days=7), d + dt.timedelta(days=13))]
    assert remaining_ranges(planned, halves) == [
        (d + dt.timedelta(days=14), d + dt.timedelta(days=20))]
    assert remaining_ranges(planned, halves[:1]) == [
        (d + dt.timedelta(days=7), d + dt.timedelta(days=20))]
    assert remaining_ranges(planned, []) == [(d, d + dt.timedelta(days=20))]
