"""The pieces of ``mpexport verify`` without a server: plan, parsing, verdict."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mpexport.cli.verify_report import verdict
from mpexport.mixpanel.event_counts import CountQuery, parse_counts
from mpexport.mixpanel.transport import RetryableError
from mpexport.verify.compare import differences
from mpexport.verify.model import VerifyResult
from mpexport.verify.plan import name_groups, plan_queries

D1, D2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def test_the_plan_groups_names_and_splits_days() -> None:
    names = [f"event {i:03d}" for i in range(120)]
    assert [len(g) for g in name_groups(names)] == [50, 50, 20]
    queries = plan_queries(D1, D1 + dt.timedelta(days=99), names, days_per_query=None)
    # 100 days in spans of at most 92, times three name groups.
    assert len(queries) == 6
    assert [(q.from_date, q.to_date) for q in queries[::3]] == [
        (D1, D1 + dt.timedelta(days=91)), (D1 + dt.timedelta(days=92), D1 + dt.timedelta(days=99))]
    assert [q.index for q in queries] == list(range(6))


def test_an_answer_is_read_whole_or_retried() -> None:
    query = CountQuery(0, D1, D2, ("A", "B"))
    body = {"data": {"series": [D1.isoformat(), D2.isoformat()],
                     "values": {"A": {D1.isoformat(): 3, D2.isoformat(): 0}}},
            "legend_size": 1}
    assert parse_counts(json.dumps(body).encode(), query) == {
        (D1, "A"): 3, (D2, "A"): 0, (D1, "B"): 0, (D2, "B"): 0}
    with pytest.raises(RetryableError):
        parse_counts(json.dumps(body).encode()[:-9], query)
    with pytest.raises(RetryableError):
        parse_counts(b'{"data": {"values": {"A": {"2024-05-01": "x"}}}}', query)


def test_differences_come_worst_first_and_settling_days_are_said() -> None:
    stored = {(D1, "A"): 5, (D2, "A"): 1, (D2, "B"): 4}
    mixpanel = {(D1, "A"): 6, (D2, "A"): 9, (D2, "B"): 4}
    found = differences(stored, mixpanel, [(D1, "A"), (D2, "A"), (D2, "B")])
    assert [(d.day, d.event, d.difference) for d in found] == [(D2, "A", -8), (D1, "A", -1)]
    result = VerifyResult(from_date=D1, to_date=D2, names=["A", "B"], differences=found,
                          settling_from=D2)
    assert verdict(result, 5) == (
        "mpexport: DIFFERS: 2 counts on 2 days of 2024-05-01..2024-05-02 differ from Mixpanel "
        "(9 events missing, 0 extra); 1 of those days is still settling (inside the 5-day "
        "lookback: late events may still arrive)")
