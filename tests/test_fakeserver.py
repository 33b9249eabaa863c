"""Tests of the built-in Mixpanel-compatible server, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import re
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mpexport.fakeserver import (
    DEMO_API_SECRET,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    FAULT_KINDS,
    Dataset,
    FakeMixpanelServer,
    ServerConfig,
)
from mpexport.fakeserver.where import WhereError, compile_where
from tests.helpers import clean_env, cli_command, run_cli, wait_until

DAY = dt.date(2024, 1, 1)
TODAY = dt.date(2024, 3, 1)
RANGE = {"from_date": "2024-01-01", "to_date": "2024-01-02"}
SA = (DEMO_USERNAME, DEMO_SECRET)


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_server(**overrides: Any) -> FakeMixpanelServer:
    """A started server over a small dataset; ``overrides`` go to ``ServerConfig``."""
    overrides.setdefault("dataset", Dataset(seed=7, events_per_day=150))
    overrides.setdefault("today", TODAY)
    return FakeMixpanelServer(ServerConfig(**overrides)).start()


@pytest.fixture
def server() -> Iterator[FakeMixpanelServer]:
    srv = make_server()
    yield srv
    srv.close()


def export(
    srv: FakeMixpanelServer,
    params: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = SA,
    gzip: bool = True,
    session: requests.Session | requests.sessions.Session | None = None,
    path: str = "/api/2.0/export",
    stream: bool = False,
) -> requests.Response:
    """GET the export endpoint with the service account and ``project_id`` by default."""
    query: dict[str, Any] = {"project_id": DEMO_PROJECT_ID, **RANGE}
    query.update(params or {})
    query = {k: v for k, v in query.items() if v is not None}
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    getter = session.get if session is not None else requests.get
    return getter(
        srv.url + path, params=query, auth=auth, headers=headers, timeout=60, stream=stream
    )


def expected(srv: FakeMixpanelServer, **kwargs: Any) -> list[bytes]:
    return srv.config.dataset.lines_for_range(DAY, DAY + dt.timedelta(days=1), **kwargs)


def split_lines(body: bytes) -> list[bytes]:
    # Only b"\n" separates records; U+2028 inside values must not split them.
    return [line + b"\n" for line in body.split(b"\n")[:-1]]


# --- dataset -----------------------------------------------------------------------------


def test_dataset_is_deterministic_across_instances() -> None:
    a, b = Dataset(seed=3), Dataset(seed=3)
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        assert a.lines_for_day(day) == b.lines_for_day(day)
        assert a.lines_for_day(day) == a.lines_for_day(day)
    assert Dataset(seed=4).lines_for_day(DAY) != a.lines_for_day(DAY)


def test_dataset_lines_are_valid_and_within_their_day() -> None:
    lines = Dataset(seed=1).lines_for_day(DAY)
    start = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    assert 150 <= len(lines) <= 260
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        event = json.loads(line)
        props = event["properties"]
        assert start <= props["time"] < start + 86_400
        assert props["mp_processing_time_ms"] > props["time"] * 1000
        assert {"distinct_id", "$insert_id", "$mp_api_endpoint", "$city"} <= props.keys()
    times = [json.loads(line)["properties"]["time"] for line in lines]
    assert times != sorted(times)


def test_dataset_edge_cases_present_every_day() -> None:
    ds = Dataset(seed=2)
    empty_ids = 0
    for offset in range(4):
        lines = ds.lines_for_day(DAY + dt.timedelta(days=offset))
        assert max(Counter(lines).values()) >= 2, "exact duplicate lines"
        names_by_insert: dict[str, set[str]] = {}
        for line in lines:
            event = json.loads(line)
            names_by_insert.setdefault(event["properties"]["$insert_id"], set()).add(event["event"])
            empty_ids += event["properties"]["distinct_id"] == ""
        assert any(len(names) > 1 for names in names_by_insert.values())
        blob = b"".join(lines)
        assert "\u2028".encode() in blob and "\u2029".encode() in blob
        assert "🎉".encode() in blob and "日本語".encode() in blob
        assert max(len(line) for line in lines) > 20_000
    assert empty_ids > 0


def test_quiet_days_and_time_in_ms() -> None:
    ds = Dataset(seed=5, events_per_day=20, quiet_every=3)
    quiet = next(DAY + dt.timedelta(days=i) for i in range(3) if ds.is_quiet(DAY + dt.timedelta(i)))
    assert ds.lines_for_day(quiet) == []
    loud = quiet + dt.timedelta(days=1)
    seconds, millis = ds.lines_for_day(loud), ds.lines_for_day(loud, time_in_ms=True)
    assert len(seconds) == len(millis) > 0
    for s_line, ms_line in zip(seconds, millis, strict=True):
        s_event, ms_event = json.loads(s_line), json.loads(ms_line)
        assert ms_event["properties"]["time"] // 1000 == s_event["properties"]["time"]
        ms_event["properties"]["time"] = s_event["properties"]["time"]
        assert ms_event == s_event


def test_late_events_append_deterministically() -> None:
    a, b = Dataset(seed=9, events_per_day=30), Dataset(seed=9, events_per_day=30)
    before = a.lines_for_day(DAY)
    a.add_late_events(DAY, 3)
    a.add_late_events(DAY, 2)
    b.add_late_events(DAY, 5)
    after = a.lines_for_day(DAY)
    assert after[: len(before)] == before and len(after) == len(before) + 5
    assert after == b.lines_for_day(DAY)
    assert a.lines_for_day(DAY + dt.timedelta(days=1)) == b.lines_for_day(
        DAY + dt.timedelta(days=1)
    )


def test_tiny_cache_and_warm_give_the_same_lines() -> None:
    cached, uncached = Dataset(seed=4), Dataset(seed=4, cache_bytes=1)
    assert cached.warm(DAY, DAY + dt.timedelta(days=2)) == len(
        cached.lines_for_range(DAY, DAY + dt.timedelta(days=2))
    )
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        assert uncached.lines_for_day(day) == cached.lines_for_day(day)


def test_range_filters_and_limit() -> None:
    ds = Dataset(seed=11, events_per_day=100)
    end = DAY + dt.timedelta(days=2)
    everything = ds.lines_for_range(DAY, end)
    assert everything == [
        line for i in range(3) for line in ds.lines_for_day(DAY + dt.timedelta(i))
    ]
    purchases = ds.lines_for_range(DAY, end, events=["Purchase", "Sign Up"])
    assert purchases and all(
        json.loads(line)["event"] in ("Purchase", "Sign Up") for line in purchases
    )
    linux = ds.lines_for_range(DAY, end, where='properties["$os"] == "Linux"')
    assert linux == [
        line for line in everything if json.loads(line)["properties"]["$os"] == "Linux"
    ]
    assert ds.lines_for_range(DAY, end, limit=7) == everything[:7]


@pytest.mark.parametrize(
    ("expression", "props", "result"),
    [
        ('properties["a"] == "x"', {"a": "x"}, True),
        ('properties["a"] != "x"', {}, True),
        ('properties["a"] == 1', {"a": True}, False),
        ('properties["n"] == 2.5 or properties["a"] == "y"', {"n": 2.5}, True),
        ('defined(properties["a"]) and not (properties["a"] == "x")', {"a": "z"}, True),
        ("\"x\" == properties['a']", {"a": "x"}, True),
    ],
)
def test_where_subset(expression: str, props: dict[str, Any], result: bool) -> None:
    assert compile_where(expression)(props) is result


@pytest.mark.parametrize("bad", ["", "properties[a] == 1", 'properties["a"] >= 1', "1 == 1 and"])
def test_where_rejects_unsupported(bad: str) -> None:
    with pytest.raises(WhereError):
        compile_where(bad)


# --- normal responses --------------------------------------------------------------------


def test_export_matches_dataset_gzipped_and_chunked(server: FakeMixpanelServer) -> None:
    resp = export(server)
    assert resp.status_code == 200
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert split_lines(resp.content) == expected(server)
    plain = export(server, gzip=False)
    assert "Content-Encoding" not in plain.headers
    assert plain.content == resp.content


def test_small_body_is_not_gzipped(server: FakeMixpanelServer) -> None:
    resp = export(server, {"limit": 1})
    assert resp.status_code == 200 and "Content-Encoding" not in resp.headers
    assert split_lines(resp.content) == expected(server, limit=1)


def test_filters_over_http(server: FakeMixpanelServer) -> None:
    where = 'properties["$browser"] == "Chrome" or properties["$os"] != "iOS"'
    resp = export(server, {"event": json.dumps(["Login", "Search"]), "where": where})
    assert split_lines(resp.content) == expected(server, events=["Login", "Search"], where=where)
    ms = export(server, {"time_in_ms": "true", "limit": 5})
    assert split_lines(ms.content) == expected(server, time_in_ms=True, limit=5)


def test_empty_range_is_empty_200() -> None:
    ds = Dataset(events_per_day=10, quiet_every=1)
    with make_server(dataset=ds) as srv:
        resp = export(srv)
        assert resp.status_code == 200 and resp.content == b""


def test_keep_alive_reuses_connection(server: FakeMixpanelServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": requests.auth._basic_auth_str(*SA)}
    for _ in range(3):
        conn.request(
            "GET",
            "/api/2.0/export/?project_id=4242&from_date=2024-01-01&to_date=2024-01-01",
            headers=headers,
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().endswith(b"}\n")
    conn.close()


def test_concurrent_connections(server: FakeMixpanelServer) -> None:
    want = expected(server)
    results: list[bool] = []

    def fetch() -> None:
        results.append(split_lines(export(server).content) == want)

    threads = [threading.Thread(target=fetch) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 12


# --- auth and validation -----------------------------------------------------------------


def test_auth_modes(server: FakeMixpanelServer) -> None:
    assert export(server, {"project_id": None}, auth=(DEMO_API_SECRET, "")).status_code == 200
    missing = export(server, {"project_id": None})
    assert missing.status_code == 400 and "project_id" in missing.json()["error"]
    assert export(server, {"project_id": 1}).status_code == 403
    for auth in [None, ("demo-sa.mpexport", "wrong"), (DEMO_API_SECRET, "x")]:
        resp = export(server, auth=auth)
        assert resp.status_code == 401
        assert resp.json()["error"] == "Unable to authenticate request"
    assert export(server, path="/api/2.0/engage").status_code == 404
    assert DEMO_SECRET not in repr(server.stats.records())


def test_bad_auth_status_configurable() -> None:
    with make_server(bad_auth_status=400) as srv:
        resp = export(srv, auth=("nobody", "nothing"))
        assert resp.status_code == 400
        assert resp.json()["error"] == "Unable to authenticate request"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"to_date": "2024-03-02"}, "to_date cannot be later than today"),
        ({"limit": 100_001}, "limit must be <= 100000"),
        ({"from_date": "2024-01-05"}, "from_date cannot be later than to_date"),
        ({"from_date": "2024-1-5"}, "invalid from_date"),
        ({"to_date": None}, "to_date is required"),
        ({"event": "Purchase"}, "event must be a JSON array"),
        ({"where": 'properties["x"] ~ 1'}, "invalid where expression"),
    ],
)
def test_bad_parameters_are_400(
    server: FakeMixpanelServer, params: dict[str, Any], error: str
) -> None:
    resp = export(server, params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"].startswith(error)
    assert body["request"].startswith("/api/2.0/export?")


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http500", "http502", "http503", "http429"])
def test_status_faults_then_recovery(kind: str) -> None:
    with make_server(faults=(kind,), fault_attempts=2, retry_after=7) as srv:
        for _ in range(2):
            resp = export(srv)
            assert resp.status_code == int(kind[4:])
            assert "error" in resp.json()
        if kind == "http429":
            assert resp.headers["Retry-After"] == "7"
        assert export(srv).status_code == 200
        assert srv.stats.count(fault=kind) == 2


@pytest.mark.parametrize("rst", [False, True])
def test_reset_fault(rst: bool) -> None:
    with make_server(faults=("reset",), reset_with_rst=rst) as srv:
        broken: tuple[type[Exception], ...] = (requests.exceptions.ChunkedEncodingError,)
        if rst:
            broken += (requests.exceptions.ConnectionError,)
        with pytest.raises(broken):
            export(srv)
        assert split_lines(export(srv).content) == expected(srv)


def test_gzip_cut_fault_is_clean_http_but_incomplete_gzip() -> None:
    with make_server(faults=("gzip_cut",)) as srv:
        resp = export(srv, stream=True)
        assert resp.status_code == 200 and resp.headers["Content-Encoding"] == "gzip"
        raw = resp.raw.read(decode_content=False)
        decompressor = zlib.decompressobj(wbits=31)
        text = decompressor.decompress(raw)
        assert not decompressor.eof
        assert 0 < len(text) < len(b"".join(expected(srv)))
        assert split_lines(export(srv).content) == expected(srv)


def test_gzip_cut_without_gzip_is_inline_truncation() -> None:
    with make_server(faults=("gzip_cut",)) as srv:
        body = export(srv, gzip=False).content
        assert body.endswith(b"terminated early") and not body.endswith(b"}terminated early")


@pytest.mark.parametrize(
    ("kind", "marker"),
    [
        ("terminated_early_line", b"terminated early\n"),
        ("export_terminated_early_line", b"export terminated early\n"),
    ],
)
def test_terminated_early_line_faults(kind: str, marker: bytes) -> None:
    with make_server(faults=(kind,)) as srv:
        body = export(srv).content
        want = expected(srv)
        head = split_lines(body)
        assert head[-1] == marker
        assert head[:-1] == want[: len(want) // 2]


def test_terminated_early_inline_fault() -> None:
    with make_server(faults=("terminated_early_inline",)) as srv:
        body = export(srv).content
        want = expected(srv)
        lines = split_lines(body)
        assert lines == want[: len(want) // 2]
        tail = body[len(b"".join(lines)) :]
        assert tail.endswith(b"terminated early") and b"\n" not in tail
        assert want[len(want) // 2].startswith(tail[: -len(b"terminated early")])


def test_fault_schedule_by_distinct_query() -> None:
    with make_server(faults=("http500", "http503"), fault_attempts=1) as srv:
        first, second = {"limit": 1}, {"limit": 2}
        assert export(srv, first).status_code == 500
        assert export(srv, second).status_code == 503
        assert export(srv, first).status_code == 200
        assert export(srv, {"limit": 3}).status_code == 500


def test_fail_dates_always_500() -> None:
    with make_server(fail_dates=frozenset({DAY + dt.timedelta(days=1)})) as srv:
        assert [export(srv).status_code for _ in range(3)] == [500, 500, 500]
        assert export(srv, {"to_date": "2024-01-01"}).status_code == 200


def test_fault_rate_applies_random_faults() -> None:
    with make_server(fault_rate=1.0, fault_seed=3) as srv:
        for _ in range(4):
            with contextlib.suppress(requests.exceptions.RequestException):
                export(srv)
        faults = [r.fault for r in srv.stats.records()]
        assert len(faults) == 4 and all(f in FAULT_KINDS for f in faults)


# --- limits, throttling, shutdown --------------------------------------------------------


def test_qps_and_hourly_limits_with_fake_clock() -> None:
    clock = FakeClock()
    with make_server(clock=clock, qps_limit=2, hourly_limit=3, retry_after=30) as srv:
        assert [export(srv, {"limit": 1}).status_code for _ in range(2)] == [200, 200]
        refused = export(srv, {"limit": 1})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert "Query rate limit exceeded for project_id: 4242" in refused.json()["error"]
        clock.now += 1.0
        assert export(srv, {"limit": 1}).status_code == 200
        clock.now += 1.0
        # Refused requests used no budget: the 4th admitted one is the one refused here.
        assert export(srv, {"limit": 1}).status_code == 429
        clock.now += 3600.0
        assert export(srv, {"limit": 1}).status_code == 200
        assert srv.stats.count(status=429) == 2


def test_concurrency_limit() -> None:
    # The first response is throttled to 2 kB/s and its body left unread: it
    # holds the only slot until the client hangs up, however slow the machine.
    with make_server(concurrency_limit=1, bandwidth=2_000) as srv:
        slow = export(srv, gzip=False, stream=True)
        assert slow.status_code == 200 and srv.limiter.running == 1
        resp = export(srv)
        assert resp.status_code == 429
        assert resp.json()["error"] == "too many export requests in progress for this project"
        slow.close()
        wait_until(lambda: srv.limiter.running == 0, "the slow response to end")
        assert export(srv, {"limit": 1}).status_code == 200


def test_back_to_back_requests_are_not_concurrent() -> None:
    # The slot is released before the last byte, so a client that sends its next
    # request the moment the previous one ends is never refused.
    with make_server(concurrency_limit=1) as srv:
        session = requests.Session()
        for gzip in (True, False):
            codes = [
                export(srv, {"limit": 3}, gzip=gzip, session=session).status_code for _ in range(20)
            ]
            assert codes == [200] * 20


def test_ttfb_and_bandwidth_throttle() -> None:
    with make_server(ttfb=0.3, bandwidth=100_000) as srv:
        started = time.monotonic()
        resp = export(srv, {"to_date": "2024-01-01"}, gzip=False)
        elapsed = time.monotonic() - started
        size = len(resp.content)
        assert resp.status_code == 200
        assert elapsed >= 0.3 + size / 100_000 * 0.8


def test_serve_forever_in_own_thread_and_close() -> None:
    srv = FakeMixpanelServer(ServerConfig(today=TODAY))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    assert export(srv, {"limit": 2}).status_code == 200
    srv.close()
    thread.join(timeout=60)  # a guard against a hang, not a measurement
    assert not thread.is_alive()
    FakeMixpanelServer(ServerConfig()).close()  # never started: must not hang


def test_close_is_prompt_with_slow_response() -> None:
    # At 2 kB/s the body (190 kB) takes over 90 s, longer than the join waits:
    # close() must cut it off.
    srv = make_server(bandwidth=2_000)
    full = len(b"".join(srv.config.dataset.lines_for_range(DAY, DAY + dt.timedelta(days=1))))
    errors: list[BaseException] = []
    received: list[int] = []

    def fetch() -> None:
        try:
            resp = export(srv, gzip=False, stream=True)
            for piece in resp.iter_content(1024):
                received.append(len(piece))
        except requests.exceptions.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    wait_until(lambda: received, "the first bytes of the body")
    srv.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    # The client saw the response end early, with an error, not the whole body.
    assert errors and sum(received) < full
    assert srv.stats.records()[0].bytes_sent < full


def _key(line: bytes) -> tuple[str, object, object, object]:
    event = json.loads(line)
    props = event["properties"]
    return event["event"], props.get("distinct_id"), props["time"], props.get("$insert_id")


def test_resent_events_follow_the_day_with_the_same_key_and_later_processing() -> None:
    a, b = Dataset(seed=9, events_per_day=30), Dataset(seed=9, events_per_day=30)
    before = a.lines_for_day(DAY)
    a.resend_events(DAY, 2)
    after = a.lines_for_day(DAY)
    assert after[: len(before)] == before and len(after) == len(before) + 2
    originals = {_key(line): json.loads(line)["properties"] for line in before}
    for line in after[len(before):]:
        copy = json.loads(line)["properties"]
        original = originals[_key(line)]
        assert copy["corrected"] == 1 and "corrected" not in original
        assert copy["mp_processing_time_ms"] == original["mp_processing_time_ms"] + 60_000
        assert {k: v for k, v in copy.items() if k not in ("corrected", "mp_processing_time_ms")} \
            == {k: v for k, v in original.items() if k != "mp_processing_time_ms"}

    # A second round re-sends the same events again, later still; a tie
    # (later_by_ms=0) keeps the processing time. Late events change neither.
    a.resend_events(DAY, 2, later_by_ms=0)
    a.add_late_events(DAY, 3)
    b.add_late_events(DAY, 3)
    b.resend_events(DAY, 2)
    b.resend_events(DAY, 2, later_by_ms=0)
    assert a.lines_for_day(DAY) == b.lines_for_day(DAY)
    rounds = [json.loads(line)["properties"] for line in a.lines_for_day(DAY)[-4:]]
    assert [p["corrected"] for p in rounds] == [1, 1, 2, 2]
    assert [p["mp_processing_time_ms"] for p in rounds[:2]] == \
        [p["mp_processing_time_ms"] for p in rounds[2:]]
    assert {_key(line) for line in after[len(before):]} == \
        {_key(line) for line in a.lines_for_day(DAY)[-2:]}
    with pytest.raises(ValueError):
        a.resend_events(DAY, -1)


def test_resent_events_of_the_realistic_profile_keep_their_key() -> None:
    ds = Dataset(seed=3, events_per_day=400, profile="realistic")
    before = ds.lines_for_day(DAY)
    ds.resend_events(DAY, 5)
    copies = ds.lines_for_day(DAY)[len(before):]
    assert len(copies) == 5
    keys = {_key(line) for line in before if _parses(line)}
    assert all(_key(line) in keys for line in copies)


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


# --- the present: nothing stamped later than the server's clock --------------------------


NOON = dt.datetime(2024, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


def _times(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["properties"]["time"] for line in lines]


def test_today_is_served_only_up_to_the_servers_clock() -> None:
    # Mixpanel holds no event from the future: today's events stop at the present.
    dataset = Dataset(seed=7, events_per_day=150)
    srv = make_server(dataset=dataset, today=None, now=NOON)
    try:
        assert srv.config.current_date() == NOON.date()
        served = split_lines(export(srv).content)
        yesterday = dataset.lines_for_day(DAY)
        whole_today = dataset.lines_for_day(NOON.date())
        noon = int(NOON.timestamp())
        kept = [line for line in whole_today if json.loads(line)["properties"]["time"] < noon]
        assert 0 < len(kept) < len(whole_today)  # the cut falls inside the day
        assert served == yesterday + kept
        in_ms = split_lines(export(srv, {"time_in_ms": "true"}).content)
        assert [t // 1000 for t in _times(in_ms)] == _times(served)  # the same events
        assert max(_times(served)) < noon
        assert export(srv, {"from_date": "2024-01-03", "to_date": "2024-01-03"}).status_code == 400
    finally:
        srv.close()


def test_the_counts_end_at_the_servers_clock_as_the_export_does() -> None:
    dataset = Dataset(seed=7, events_per_day=150)
    srv = make_server(dataset=dataset, today=None, now=NOON)
    try:
        served = split_lines(export(srv, {"from_date": "2024-01-02"}).content)
        names = sorted({json.loads(line)["event"] for line in served})
        answer = requests.get(srv.url + "/api/query/events", auth=SA, timeout=60, params={
            "project_id": DEMO_PROJECT_ID, "from_date": "2024-01-02", "to_date": "2024-01-02",
            "event": json.dumps(names), "type": "general", "unit": "day"}).json()
        counted = sum(answer["data"]["values"][name]["2024-01-02"] for name in names)
        keys = {(e["event"], e["properties"]["distinct_id"], e["properties"]["time"],
                 e["properties"]["$insert_id"]) for e in map(json.loads, served)}
        assert counted == len(keys)
        assert counted < len(dataset.lines_for_day(NOON.date()))
    finally:
        srv.close()


def test_a_pinned_day_without_a_clock_is_served_whole() -> None:
    # Tests pin `today` for the same data at any hour they run: that day is whole.
    dataset = Dataset(seed=7, events_per_day=150)
    srv = make_server(dataset=dataset, today=NOON.date())
    try:
        assert srv.config.served_until() is None
        served = split_lines(export(srv, {"from_date": "2024-01-02"}).content)
        assert served == dataset.lines_for_day(NOON.date())
    finally:
        srv.close()


def test_without_a_pinned_day_the_wall_clock_cuts_today() -> None:
    config = ServerConfig()
    before = dt.datetime.now(dt.UTC)
    until = config.served_until()
    assert until is not None and before <= until <= dt.datetime.now(dt.UTC)
    with pytest.raises(ValueError, match="UTC"):
        ServerConfig(now=dt.datetime(2024, 1, 2, 12))


# --- the fake-server command: what a user starts to try mpexport -----------------------


@contextlib.contextmanager
def fake_server_command(*args: str) -> Iterator[str]:
    """Run ``mpexport fake-server --port 0 ARGS`` and yield its URL; stop it afterwards."""
    proc = subprocess.Popen([*cli_command(), "fake-server", "--port", "0", *args],
                            env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        # The first line names the URL; it is written before the server serves.
        first = proc.stderr.readline().decode("utf-8")
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)$", first.strip())
        assert found, first
        yield found[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_fake_server_serves_profiles_and_groups_for_mpexport_profiles() -> None:
    with fake_server_command("--profiles", "30", "--groups", "3") as url:
        users = run_cli(["profiles", "--api-url", url])
        groups = run_cli(["profiles", "--api-url", url, "--group-id", "company_id"])
    assert users.code == 0, users.stderr
    assert [json.loads(line)["$distinct_id"] for line in users.lines()] == [
        f"u-{n}" for n in range(1, 31)]
    assert groups.code == 0, groups.stderr
    assert [json.loads(line)["$distinct_id"] for line in groups.lines()] == [
        "company-1", "company-2", "company-3"]


def test_fake_server_without_profiles_has_no_engage_endpoint() -> None:
    with fake_server_command("--profiles", "0") as url:
        result = run_cli(["profiles", "--api-url", url])
    assert result.code == 2, result.stderr
    assert "404" in result.stderr


def test_fake_server_serves_realistic_data_and_nothing_from_the_future() -> None:
    with fake_server_command("--data", "realistic", "--events-per-day", "40") as url:
        past = run_cli(["export", "--api-url", url, "--from", "-1", "--to", "-1"])
        today = run_cli(["export", "--api-url", url, "--from", "today", "--to", "today"])
        now = dt.datetime.now(dt.UTC).timestamp()
    assert past.code == 0, past.stderr
    events = [json.loads(line.decode("utf-8", "replace")) for line in past.lines()]
    # The realistic profile's SDK properties; the small one has none of these.
    assert len(events) >= 20 and all("$mp_api_timestamp_ms" in e["properties"]
                                     for e in events if "$insert_id" in e["properties"])
    assert today.code == 0, today.stderr
    stamps = [json.loads(line.decode("utf-8", "replace"))["properties"]["time"]
              for line in today.lines()]
    assert all(stamp <= now for stamp in stamps)
