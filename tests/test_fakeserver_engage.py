"""The built-in server's engage endpoint (profiles), over real HTTP on 127.0.0.1.

Pages, sessions that expire, filters, the Query API's limits and the faults.
No test waits for time to pass: limits use a fake clock, concurrency a hold
the test releases.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from mpexport.fakeserver import (
    DEMO_API_SECRET,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    FakeMixpanelServer,
    ServerConfig,
)
from mpexport.fakeserver.profiles import PLANS, ProfileDataset
from tests.helpers import PATIENCE, SECRET_MARKERS, ServerFactory, wait_until

ENGAGE = "/api/query/engage"
SA = (DEMO_USERNAME, DEMO_SECRET)
SEED, COUNT, PAGE = 3, 25, 10


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engage(
    srv: FakeMixpanelServer,
    auth: tuple[str, str] | None = SA,
    session: requests.Session | None = None,
    **params: Any,
) -> requests.Response:
    """POST a form-encoded engage query with the service account and ``project_id``."""
    data = {"project_id": str(DEMO_PROJECT_ID), **{k: str(v) for k, v in params.items()}}
    poster = session.post if session is not None else requests.post
    return poster(srv.url + ENGAGE, data=data, auth=auth, timeout=PATIENCE)


def small(make_server: ServerFactory, **config: Any) -> FakeMixpanelServer:
    """A server with 25 profiles in pages of 10 (pages 0-1 full, page 2 holds 5)."""
    config.setdefault("profiles", ProfileDataset(seed=SEED, count=COUNT, groups=4))
    config.setdefault("engage_page_size", PAGE)
    return make_server(**config)


def all_pages(srv: FakeMixpanelServer, **params: Any) -> tuple[int, list[dict[str, Any]]]:
    """Page through one session until a short page; return (total, profiles)."""
    with requests.Session() as http:
        first = engage(srv, session=http, **params)
        assert first.status_code == 200, first.text
        doc = first.json()
        total, results, session_id = doc["total"], list(doc["results"]), doc["session_id"]
        page = 0
        while len(doc["results"]) == doc["page_size"]:
            page += 1
            resp = engage(srv, session=http, session_id=session_id, page=page)
            assert resp.status_code == 200, resp.text
            doc = resp.json()
            assert doc["session_id"] == session_id and doc["page"] == page
            results.extend(doc["results"])
    return total, results


# --- the data ------------------------------------------------------------------------------


def test_profiles_are_deterministic_and_realistic() -> None:
    users = ProfileDataset(seed=SEED).users()
    assert users == ProfileDataset(seed=SEED).users()
    assert users != ProfileDataset(seed=SEED + 1).users()
    assert [u["$distinct_id"] for u in users[:3]] == ["u-1", "u-2", "u-3"]
    props = [u["$properties"] for u in users]
    assert all(p["plan"] in PLANS for p in props)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", p["$last_seen"]) for p in props)
    assert all(p["$created"] <= p["$last_seen"] for p in props)
    assert all(isinstance(p["tags"], list) and isinstance(p["address"], dict) for p in props)
    assert any(not p["$city"].isascii() for p in props)
    numeric_ids = [p["external_id"] for p in props if "external_id" in p]
    assert numeric_ids and all(i.isdigit() for i in numeric_ids)
    # Sparse: some profiles lack a property others have.
    assert 0 < sum("$phone" in p for p in props) < len(props)


def test_select_filters_and_copies() -> None:
    data = ProfileDataset(seed=SEED, count=COUNT, groups=3)
    pro = data.select(where='properties["plan"] == "pro"')
    assert pro and all(p["$properties"]["plan"] == "pro" for p in pro)
    assert [p["$distinct_id"] for p in data.select(cohort_id=5)] == [
        f"u-{n}" for n in (5, 10, 15, 20, 25)
    ]
    groups = data.group_profiles("company")
    assert [g["$distinct_id"] for g in groups] == ["company-1", "company-2", "company-3"]
    assert data.select(group_key="company") == groups
    slim = data.select(output_properties=["$email", "plan", "absent"])
    assert all(set(p["$properties"]) == {"$email", "plan"} for p in slim)
    # What a caller does to its copy does not change what is served next.
    data.users()[0]["$properties"]["plan"] = "changed"
    assert data.users()[0]["$properties"]["plan"] in PLANS


def test_unknown_engage_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="engage fault"):
        ServerConfig(engage_faults=("gzip_cut",))


# --- paging and sessions -------------------------------------------------------------------


def test_paging_gives_every_profile_once_in_order(make_server: ServerFactory) -> None:
    srv = small(make_server)
    first = engage(srv).json()
    assert {k: first[k] for k in ("page", "page_size", "status", "total")} == {
        "page": 0,
        "page_size": PAGE,
        "status": "ok",
        "total": COUNT,
    }
    total, results = all_pages(srv)
    assert total == COUNT
    assert results == ProfileDataset(seed=SEED, count=COUNT).users()
    beyond = engage(srv, session_id=first["session_id"], page=7).json()
    assert beyond["results"] == [] and beyond["total"] == COUNT


def test_default_page_size_and_raw_utf8(make_server: ServerFactory) -> None:
    srv = make_server(profiles=ProfileDataset())
    resp = engage(srv)
    doc = resp.json()
    assert (doc["total"], doc["page_size"], len(doc["results"])) == (2500, 1000, 1000)
    # Non-ASCII values arrive as UTF-8, not as \u escapes, as Mixpanel sends them.
    assert b"\\u" not in resp.content and not resp.content.isascii()
    last = engage(srv, session_id=doc["session_id"], page=2).json()
    assert len(last["results"]) == 500


def test_parameters_in_the_query_string(make_server: ServerFactory) -> None:
    srv = small(make_server)
    query = {"project_id": str(DEMO_PROJECT_ID), "filter_by_cohort": '{"id": 5}'}
    resp = requests.post(srv.url + ENGAGE, params=query, auth=SA, timeout=PATIENCE)
    assert resp.status_code == 200 and resp.json()["total"] == 5


def test_sessions_expire_after_n_pages(make_server: ServerFactory) -> None:
    srv = small(make_server, engage_session_pages=2)
    first = engage(srv).json()
    sid = first["session_id"]
    assert engage(srv, session_id=sid, page=1).status_code == 200
    expired = engage(srv, session_id=sid, page=2)
    assert expired.status_code == 400 and "session" in expired.json()["error"]
    again = engage(srv).json()
    assert again["session_id"] != sid and again["results"] == first["results"]
    assert engage(srv, session_id=again["session_id"], page=1).status_code == 200
    unknown = engage(srv, session_id="1700000000-NOPE", page=1)
    assert unknown.status_code == 400 and "session_id" in unknown.json()["error"]


def test_a_session_keeps_its_result_set(make_server: ServerFactory) -> None:
    srv = small(make_server)
    first = engage(srv, filter_by_cohort='{"id": 2}').json()
    assert first["total"] == 12
    # Later pages answer from the session's query, whatever else they send.
    later = engage(srv, session_id=first["session_id"], page=1, where='properties["x"] == 1')
    assert [p["$distinct_id"] for p in later.json()["results"]] == ["u-22", "u-24"]


# --- filters -------------------------------------------------------------------------------


def test_where_cohort_group_and_output_properties(make_server: ServerFactory) -> None:
    srv = small(make_server)
    data = ProfileDataset(seed=SEED, count=COUNT, groups=4)
    where = 'properties["plan"] == "free" and defined(properties["$phone"])'
    assert all_pages(srv, where=where)[1] == data.select(where=where)
    assert all_pages(srv, filter_by_cohort='{"id": 4}')[1] == data.select(cohort_id=4)
    assert all_pages(srv, data_group_id="company")[1] == data.group_profiles("company")
    names = json.dumps(["$email", "$last_seen"])
    total, slim = all_pages(srv, output_properties=names, include_all_users="false")
    assert total == COUNT
    assert slim == data.select(output_properties=["$email", "$last_seen"])


@pytest.mark.parametrize(
    "params",
    [
        {"where": 'properties["plan"] ~ "pro"'},
        {"page": 1},
        {"page": -1, "session_id": "x"},
        {"page": "two"},
        {"output_properties": '"$email"'},
        {"output_properties": "[1, 2"},
        {"filter_by_cohort": "{}"},
        {"filter_by_cohort": '{"id": "7"}'},
        {"include_all_users": "maybe"},
    ],
)
def test_bad_parameters_are_400(make_server: ServerFactory, params: dict[str, Any]) -> None:
    resp = engage(small(make_server), **params)
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_auth_and_a_server_without_profiles(make_server: ServerFactory) -> None:
    srv = small(make_server)
    assert engage(srv, auth=None).status_code == 401
    assert engage(srv, auth=(DEMO_USERNAME, "wrong")).status_code == 401
    assert engage(srv, project_id=1).status_code == 403
    no_project = requests.post(srv.url + ENGAGE, auth=SA, timeout=PATIENCE)
    assert no_project.status_code == 400
    legacy = requests.post(srv.url + ENGAGE, auth=(DEMO_API_SECRET, ""), timeout=PATIENCE)
    assert legacy.status_code == 200
    assert engage(make_server()).status_code == 404


def test_secrets_never_in_stats(make_server: ServerFactory) -> None:
    srv = small(make_server)
    engage(srv, api_secret=DEMO_API_SECRET)
    engage(srv, auth=(DEMO_USERNAME, "wrong"))
    requests.post(srv.url + ENGAGE, auth=(DEMO_API_SECRET, ""), timeout=PATIENCE)
    records = srv.stats.records()
    assert [r.path for r in records] == [ENGAGE] * 3
    assert records[0].params["project_id"] == str(DEMO_PROJECT_ID)
    assert "api_secret" not in records[0].params
    assert not any(marker in repr(records) for marker in SECRET_MARKERS)


# --- limits --------------------------------------------------------------------------------


def test_hourly_limit_is_rolling_and_apart_from_export(make_server: ServerFactory) -> None:
    clock = FakeClock()
    srv = small(make_server, clock=clock, engage_hourly_limit=3, retry_after=30)
    assert [engage(srv).status_code for _ in range(3)] == [200] * 3
    refused = engage(srv)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    assert "queries in the last hour" in refused.json()["error"]
    export = requests.get(
        srv.url + "/api/2.0/export",
        params={
            "project_id": str(DEMO_PROJECT_ID),
            "from_date": "2024-01-01",
            "to_date": "2024-01-01",
        },
        auth=SA,
        timeout=PATIENCE,
    )
    assert export.status_code == 200
    clock.now += 3599.0
    assert engage(srv).status_code == 429
    clock.now += 1.0
    assert engage(srv).status_code == 200


def test_concurrency_limit_with_held_requests(make_server: ServerFactory) -> None:
    hold = threading.Event()
    srv = small(make_server, engage_concurrency_limit=2, engage_hold=hold)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            held = [pool.submit(engage, srv) for _ in range(2)]
            wait_until(lambda: srv.engage.limiter.running == 2, "two held engage requests")
            refused = engage(srv)
            assert refused.status_code == 429
            assert "too many engage requests in progress" in refused.json()["error"]
        finally:
            hold.set()
        assert [f.result(timeout=PATIENCE).status_code for f in held] == [200, 200]
    wait_until(lambda: srv.engage.limiter.running == 0, "the held requests to end")
    assert engage(srv).status_code == 200


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,status", [("http500", 500), ("http503", 503), ("http429", 429)])
def test_status_faults_on_first_attempt_of_each_page(
    make_server: ServerFactory, kind: str, status: int
) -> None:
    srv = small(make_server, engage_faults=(kind,))
    first = engage(srv)
    assert first.status_code == status and first.json()["error"]
    if kind == "http429":
        assert first.headers["Retry-After"] == "1"
    sid = engage(srv).json()["session_id"]
    for page in (1, 2):
        assert engage(srv, session_id=sid, page=page).status_code == status
        assert engage(srv, session_id=sid, page=page).status_code == 200
    # Every page has had its first attempt: a new session sees no fault.
    total, results = all_pages(srv)
    assert (total, len(results)) == (COUNT, COUNT)
    assert srv.stats.count(fault=kind) == srv.stats.count(status=status) == 3


@pytest.mark.parametrize("rst", [False, True])
def test_reset_fault_on_first_attempt(make_server: ServerFactory, rst: bool) -> None:
    srv = small(make_server, engage_faults=("reset",), reset_with_rst=rst)
    with pytest.raises(requests.exceptions.RequestException):
        engage(srv)
    doc = engage(srv).json()
    assert doc["results"] == ProfileDataset(seed=SEED, count=COUNT).users()[:PAGE]
    assert srv.stats.count(fault="reset") == 1


def test_cut_fault_is_a_clean_response_with_half_a_document(make_server: ServerFactory) -> None:
    srv = small(make_server, engage_faults=("cut",))
    # Page 0: a Content-Length that matches the cut body.
    cut = engage(srv)
    assert cut.status_code == 200
    assert int(cut.headers["Content-Length"]) == len(cut.content)
    with pytest.raises(ValueError):
        json.loads(cut.content)
    sid = engage(srv).json()["session_id"]
    # Page 1: chunked, ended by the terminating chunk.
    cut = engage(srv, session_id=sid, page=1)
    assert cut.status_code == 200 and cut.headers["Transfer-Encoding"] == "chunked"
    with pytest.raises(ValueError):
        json.loads(cut.content)
    whole = engage(srv, session_id=sid, page=1)
    assert whole.content.startswith(cut.content) and len(whole.content) > len(cut.content)
    assert whole.json()["results"] == ProfileDataset(seed=SEED, count=COUNT).users()[PAGE:20]
    assert srv.stats.count(fault="cut") == 2
