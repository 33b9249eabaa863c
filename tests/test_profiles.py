"""Profiles, piece by piece: page planning, page verification, errors, the kept session, DuckDB."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpexport.environment import STATE_DIR_ENV, Environment
from mpexport.errors import BadParametersError, CredentialsError, DatabaseLockedError, UsageError
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME
from mpexport.fakeserver.profiles import ProfileDataset
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint, resolve_query_endpoint
from mpexport.mixpanel.engage import ProfileQuery, SessionExpired, fetch_page, fetch_page_once
from mpexport.mixpanel.engage_doc import InvalidPage, parse_page, read_profile
from mpexport.mixpanel.transport import FetchSettings, RetryableError, new_session
from mpexport.profile_export.duckdb import DuckDBProfiles
from mpexport.profile_export.options import ProfileOptions
from mpexport.profile_export.resume import (
    PageFiles,
    SessionState,
    clear_stale,
    pages_for,
    profiles_dir,
)
from tests.helpers import ServerFactory

CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
FAST = FetchSettings(backoff_base=0.01, backoff_cap=0.05, connect_timeout=5, read_timeout=30)


def document(profiles: list[dict[str, Any]], *, page: int = 0, page_size: int = 1000,
             total: int | None = None, indent: int | None = None) -> bytes:
    body = {"page": page, "page_size": page_size, "session_id": "1700000001-ABC",
            "status": "ok", "total": len(profiles) if total is None else total,
            "results": profiles}
    return json.dumps(body, ensure_ascii=False, indent=indent).encode("utf-8")


PROFILES = [{"$distinct_id": f"u-{n}",
             "$properties": {"$name": "Chloé Müller", "n": n, "tags": ["a", "früh"],
                             "$last_seen": "2024-05-01T10:20:30"}} for n in range(1, 6)]


# -- page planning ---------------------------------------------------------------------


@pytest.mark.parametrize(("total", "size", "pages"), [
    (0, 1000, 1), (1, 1000, 1), (1000, 1000, 1), (1001, 1000, 2), (25500, 1000, 26),
    (2500, 500, 5),
])
def test_pages_for_a_total(total: int, size: int, pages: int) -> None:
    assert pages_for(total, size) == pages


def test_a_session_lists_the_pages_it_still_needs() -> None:
    state = SessionState("s", 2500, 500, "key", time.time())
    assert state.pages == 5
    assert state.missing(set()) == [0, 1, 2, 3, 4]
    assert state.missing({0, 2, 4}) == [1, 3]
    assert state.missing({0, 1, 2, 3, 4, 9}) == []


# -- verification of a page ---------------------------------------------------------------


def test_a_whole_page_gives_each_profile_as_sent() -> None:
    body = document(PROFILES, page=3, page_size=5, total=25)
    page = parse_page(body)
    assert (page.page, page.page_size, page.total, page.session_id) == (3, 5, 25, "1700000001-ABC")
    assert page.bytes == len(body)
    assert page.profiles == [json.dumps(p, ensure_ascii=False).encode() + b"\n"
                             for p in PROFILES]


def test_a_pretty_printed_page_gives_one_line_per_profile() -> None:
    page = parse_page(document(PROFILES, indent=2))
    assert [json.loads(line) for line in page.profiles] == PROFILES
    assert all(line.count(b"\n") == 1 for line in page.profiles)


def test_bytes_that_are_not_utf8_pass_through_unchanged() -> None:
    body = document(PROFILES[:1]).replace("Chloé".encode(), b"Chlo\xe9")
    (line,) = parse_page(body).profiles
    assert b"Chlo\xe9 M" in line


def test_every_cut_of_a_page_is_refused() -> None:
    body = document(PROFILES[:2], total=2)
    parse_page(body)
    for end in range(len(body)):
        with pytest.raises(InvalidPage):
            parse_page(body[:end])


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5),
                                max_size=3), max_size=4),
       st.integers(min_value=0, max_value=10_000))
def test_random_pages_round_trip_and_their_cuts_fail(props: list[dict[str, Any]],
                                                     cut: int) -> None:
    profiles = [{"$distinct_id": f"d{i}", "$properties": p} for i, p in enumerate(props)]
    body = document(profiles)
    assert [json.loads(line) for line in parse_page(body).profiles] == profiles
    with pytest.raises(InvalidPage):
        parse_page(body[: cut % len(body)])


@pytest.mark.parametrize("body", [
    b'{"status": "error", "error": "boom", "results": []}',
    b'{"page": 0, "page_size": 10, "session_id": "s", "total": 0}',  # no results
    b'{"page": 0, "page_size": 10, "session_id": "s", "total": 0, "results": []} x',
    b'{"page": 0, "page_size": 1, "session_id": "s", "results": [{"$distinct_id": "a"}, '
    b'{"$distinct_id": "b"}]}',  # more profiles than a page holds
    b'{"page": 0, "page_size": 10, "session_id": "s", "results": [{"x": 1}]}',  # no id
    b'{"page": "0", "page_size": 10, "session_id": "s", "results": []}',
    b'{"page": 0, "page_size": 10, "results": []}',  # no session
    b"[]", b"", b"terminated early",
])
def test_documents_that_are_not_pages_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidPage):
        parse_page(body)


def test_the_database_gets_properties_as_sent_and_last_seen() -> None:
    line = (b'{"$distinct_id": "u-1", '
            b'"$properties": {"b": 1e2, "$last_seen": "2024-01-02T03:04:05"}}')
    record = read_profile(line + b"\n")
    assert record == read_profile(line)
    assert record.distinct_id == "u-1"
    assert record.properties == '{"b": 1e2, "$last_seen": "2024-01-02T03:04:05"}'
    assert record.last_seen == "2024-01-02T03:04:05" and not record.repaired


@pytest.mark.parametrize("raw", [
    b'{"$distinct_id": "u", "$properties": {"s": "\\ud83d cut"}}',
    b'{"$distinct_id": "u", "$properties": {"s": "Chlo\xe9"}}',
    b'{"$distinct_id": "u", "$properties": {"n": NaN, "m": 1e999}}',
])
def test_properties_duckdb_cannot_read_are_repaired_for_the_table(raw: bytes) -> None:
    record = read_profile(raw)
    assert record.repaired
    with duckdb.connect() as con:
        (valid,) = con.execute("SELECT json_valid(?)", [record.properties]).fetchone()
    assert valid


# -- the engage request and its errors, against the built-in server --------------------------


def query(url: str, **kwargs: Any) -> ProfileQuery:
    return ProfileQuery(resolve_query_endpoint("us", url), CREDS, **kwargs)


def once(q: ProfileQuery, page: int = 0, session_id: str | None = None) -> Any:
    session = new_session()
    try:
        return fetch_page_once(session, q, page, session_id, FAST, threading.Event(),
                               lambda _n: None)
    finally:
        session.close()


def test_the_query_api_hosts_per_region() -> None:
    assert resolve_query_endpoint("us").engage_url == "https://mixpanel.com/api/query/engage"
    assert resolve_query_endpoint("EU").base_url == "https://eu.mixpanel.com"
    assert resolve_query_endpoint("in").base_url == "https://in.mixpanel.com"
    assert (resolve_query_endpoint("eu", "http://127.0.0.1:9").engage_url
            == "http://127.0.0.1:9/api/query/engage")
    with pytest.raises(UsageError):
        resolve_query_endpoint("mars")


def test_the_form_carries_the_filters_and_never_a_secret() -> None:
    q = ProfileQuery(Endpoint("https://mixpanel.com"), CREDS, where='properties["a"]==1',
                     cohort_id=7, group_id="company_id", properties=("$name", "plan"))
    assert q.params() == {"project_id": str(DEMO_PROJECT_ID)}
    assert q.form(0, None) == {"where": 'properties["a"]==1', "filter_by_cohort": '{"id": 7}',
                               "data_group_id": "company_id",
                               "output_properties": '["$name", "plan"]'}
    assert q.form(3, "s-1")["session_id"] == "s-1" and q.form(3, "s-1")["page"] == "3"
    assert DEMO_SECRET not in json.dumps([q.params(), q.form(3, "s-1")])


def test_an_expired_session_is_told_apart(make_server: ServerFactory) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=30), engage_page_size=10,
                         engage_session_pages=1)
    first = once(query(server.url))
    assert first.total == 30 and first.count == 10
    with pytest.raises(SessionExpired):
        once(query(server.url), 1, first.session_id)


def test_any_400_on_a_later_page_of_a_session_is_its_expiry(
        make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from mpexport.fakeserver import sessions
    from mpexport.fakeserver.request import ApiError

    # Mixpanel's wording is not specified: page 0 with the same parameters was
    # accepted, so a 400 on a later page can only be about the session.
    monkeypatch.setattr(sessions, "session_error",
                        lambda _sid: ApiError(400, "Invalid request: page out of range"))
    server = make_server(profiles=ProfileDataset(seed=1, count=30), engage_page_size=10,
                         engage_session_pages=1)
    first = once(query(server.url))
    with pytest.raises(SessionExpired, match="out of range"):
        once(query(server.url), 1, first.session_id)


def test_bad_parameters_bad_credentials_and_wrong_addresses_are_fatal(
        make_server: ServerFactory) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=5))
    with pytest.raises(BadParametersError, match="400"):
        once(query(server.url, where="properties[ nonsense"))
    wrong = dataclasses.replace(query(server.url),
                                credentials=Credentials("someone", "wrong", DEMO_PROJECT_ID))
    with pytest.raises(CredentialsError):
        once(wrong)
    bare = make_server()  # no profiles: the engage path does not exist there
    with pytest.raises(BadParametersError, match="404"):
        once(query(bare.url))


@pytest.mark.parametrize(("fault", "throttled"), [
    ("http500", False), ("http503", False), ("http429", True), ("reset", False), ("cut", False),
])
def test_passing_failures_are_retryable(make_server: ServerFactory, fault: str,
                                        throttled: bool) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=5), engage_faults=(fault,))
    with pytest.raises(RetryableError) as caught:
        once(query(server.url))
    assert caught.value.throttled is throttled
    if throttled:
        assert caught.value.retry_after == 1.0
    assert once(query(server.url)).count == 5  # the second attempt is served


def test_a_page_is_retried_until_whole(make_server: ServerFactory) -> None:
    dataset = ProfileDataset(seed=2, count=4)
    server = make_server(profiles=dataset, engage_faults=("cut",))
    retries: list[tuple[int, int, str, float]] = []
    session = new_session()
    try:
        outcome = fetch_page(session, query(server.url), 0, None, FAST, threading.Event(),
                             lambda _n: None, lambda *a: retries.append(a), random.Random(1))
    finally:
        session.close()
    assert not isinstance(outcome, Exception) and outcome.attempts == 2  # type: ignore[union-attr]
    assert [json.loads(p) for p in outcome.page.profiles] == dataset.users()  # type: ignore[union-attr]
    assert len(retries) == 1 and "invalid page" in retries[0][2]


# -- the kept session (NDJSON) --------------------------------------------------------------


def state(key: str = "key", total: int = 25, size: int = 10) -> SessionState:
    return SessionState("s-1", total, size, key, time.time())


def spool(directory: Path, text: bytes) -> Path:
    path = directory / f".page-{random.randrange(10**9)}.tmp"
    path.write_bytes(text)
    return path


def test_page_files_keep_a_session_for_the_same_options_only(tmp_path: Path) -> None:
    files = PageFiles.for_fingerprint("key", tmp_path)
    files.open()
    try:
        assert files.resume("key") == (None, set())
        kept = state()
        files.begin(kept)
        files.store(0, spool(files.directory, b"a\n"))
        files.store(2, spool(files.directory, b"c\n"))
        assert files.resume("key") == (kept, {0, 2})
        assert files.resume("other options")[0] is None
        files.begin(dataclasses.replace(state(), session_id="s-2"))  # a new session
        assert files.resume("key")[1] == set()
    finally:
        files.close()
    assert PageFiles.for_fingerprint("key", tmp_path).directory == files.directory
    assert PageFiles.for_fingerprint("other", tmp_path).directory != files.directory


def test_page_files_have_one_user_at_a_time(tmp_path: Path) -> None:
    first = PageFiles.for_fingerprint("key", tmp_path)
    first.open()
    try:
        with pytest.raises(DatabaseLockedError):
            PageFiles.for_fingerprint("key", tmp_path).open()
    finally:
        first.close()
    second = PageFiles.for_fingerprint("key", tmp_path)
    second.open()
    second.close()


def test_kept_pages_nobody_resumed_are_removed_after_a_day(tmp_path: Path) -> None:
    old, live, fresh = (PageFiles.for_fingerprint(k, tmp_path) for k in ("old", "live", "new"))
    for files in (old, live, fresh):
        files.open()
        files.begin(state())
    old.close()
    fresh.close()
    day_ago = time.time() - 2 * 86400
    for files in (old, live):
        for path in [files.directory, *files.directory.iterdir()]:
            os.utime(path, (day_ago, day_ago))
    try:
        assert clear_stale(tmp_path) == [old.directory]
    finally:
        live.close()
    assert live.directory.is_dir() and fresh.directory.is_dir()


# -- DuckDB: staged pages, one transaction at the end -----------------------------------------


def page_file(directory: Path, profiles: list[dict[str, Any]]) -> Path:
    lines = b"".join(json.dumps(p, ensure_ascii=False).encode() + b"\n" for p in profiles)
    return spool(directory, lines)


def sink(tmp_path: Path, **kwargs: Any) -> DuckDBProfiles:
    options = {"table": "profiles", "group_key": None, "filtered": False, **kwargs}
    database = DuckDBProfiles(tmp_path / "p.duckdb", spool_dir=tmp_path, **options)
    database.open()
    return database


def export(database: DuckDBProfiles, profiles: list[dict[str, Any]], key: str = "key",
           before_commit: Any = None) -> int:
    s = state(key, total=len(profiles), size=2)
    database.begin(s)
    for page in range(s.pages):
        chunk = profiles[page * 2: page * 2 + 2]
        database.store(page, page_file(database.spool_dir, chunk), len(chunk))
    return database.finish(s, before_commit)


def rows(path: Path, table: str = "profiles") -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return dict(con.execute(f"SELECT distinct_id, properties FROM {table}").fetchall())


def as_rows(profiles: list[dict[str, Any]]) -> dict[str, str]:
    return {p["$distinct_id"]: json.dumps(p["$properties"], ensure_ascii=False)
            for p in profiles}


def test_a_full_export_replaces_the_snapshot_in_one_transaction(tmp_path: Path) -> None:
    old, new = PROFILES[:3], [{"$distinct_id": "v-1", "$properties": {"x": 1}}, *PROFILES[3:]]
    database = sink(tmp_path)
    try:
        export(database, old)
        seen: list[dict[str, str]] = []

        def look() -> None:  # another connection, inside the swap, just before COMMIT
            with database._con.cursor() as reader:
                seen.append(dict(reader.execute(
                    "SELECT distinct_id, properties FROM profiles").fetchall()))

        assert export(database, new, before_commit=look) == 3
        assert seen == [as_rows(old)]
        assert database.load.replaced == 3 and database.load.mode == "replace"
    finally:
        database.close()
    assert rows(tmp_path / "p.duckdb") == as_rows(new)


def test_a_failed_swap_leaves_the_old_snapshot(tmp_path: Path) -> None:
    database = sink(tmp_path)
    try:
        export(database, PROFILES[:2])

        def fail() -> None:
            raise RuntimeError("the process died here")

        with pytest.raises(Exception, match="died here"):
            export(database, PROFILES[2:], before_commit=fail)
    finally:
        database.close()
    assert rows(tmp_path / "p.duckdb") == as_rows(PROFILES[:2])


def test_a_filtered_export_upserts_by_distinct_id(tmp_path: Path) -> None:
    database = sink(tmp_path)
    export(database, PROFILES[:3])
    database.close()
    changed = [{"$distinct_id": "u-2", "$properties": {"plan": "pro"}},
               {"$distinct_id": "u-9", "$properties": {"plan": "pro"}}]
    database = sink(tmp_path, filtered=True)
    try:
        export(database, changed, key="where plan")
        assert (database.load.mode, database.load.replaced, database.load.rows) == ("upsert", 1, 2)
    finally:
        database.close()
    assert rows(tmp_path / "p.duckdb") == as_rows([PROFILES[0], PROFILES[2], *changed])


def test_group_profiles_of_one_key_leave_the_other_keys_alone(tmp_path: Path) -> None:
    a = [{"$distinct_id": "c-1", "$properties": {"k": "a"}}]
    b = [{"$distinct_id": "c-1", "$properties": {"k": "b"}}]
    for key, profiles in (("a", a), ("b", b), ("a", a)):
        database = sink(tmp_path, table="group_profiles", group_key=key)
        try:
            export(database, profiles, key=key)
        finally:
            database.close()
    with duckdb.connect(str(tmp_path / "p.duckdb"), read_only=True) as con:
        got = con.execute("SELECT group_key, distinct_id, properties FROM group_profiles "
                          "ORDER BY group_key").fetchall()
    assert got == [("a", "c-1", '{"k": "a"}'), ("b", "c-1", '{"k": "b"}')]


def test_staged_pages_survive_a_reopen_and_last_seen_is_utc(tmp_path: Path) -> None:
    database = sink(tmp_path)
    s = state(total=5, size=2)
    database.begin(s)
    database.store(1, page_file(tmp_path, PROFILES[2:4]), 2)
    database.close()
    database = sink(tmp_path)
    try:
        assert database.resume("key") == (s, {1})
        assert database.resume("other") == (None, set()) and database.other_session
        database.store(0, page_file(tmp_path, PROFILES[:2]), 2)
        database.store(2, page_file(tmp_path, PROFILES[4:]), 1)
        assert database.finish(s) == 5
    finally:
        database.close()
    with duckdb.connect(str(tmp_path / "p.duckdb"), read_only=True) as con:
        (seen, exported, staged) = con.execute(
            "SELECT min(epoch(last_seen)), count(exported_at), "
            "(SELECT count(*) FROM _mpexport_profile_stage) FROM profiles").fetchone()
    assert seen == 1714558830 and exported == 5 and staged == 0


def test_a_table_with_other_columns_is_refused(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "p.duckdb")) as con:
        con.execute("CREATE TABLE profiles (id INTEGER)")
    with pytest.raises(UsageError, match="other columns"):
        sink(tmp_path)


# -- the front: options, dry run ---------------------------------------------------------------


def test_options_need_db_for_database_flags() -> None:
    from mpexport.profile_export.request import build_profile_request

    with pytest.raises(UsageError, match="--table"):
        build_profile_request(ProfileOptions(table="t"))
    with pytest.raises(UsageError, match="--workers"):
        build_profile_request(ProfileOptions(workers=0))
    with pytest.raises(UsageError, match="--cohort"):
        build_profile_request(ProfileOptions(cohort_id=0))
    assert ProfileOptions(group_id="company_id").table_name == "group_profiles"
    assert ProfileOptions(where="x").filtered and not ProfileOptions().filtered


def test_a_dry_run_without_credentials_fetches_nothing() -> None:
    from mpexport.profile_export.api import profiles

    out = io.BytesIO()
    result = profiles(output=out, dry_run=True, api_url="http://127.0.0.1:9",
                      where='properties["plan"]=="pro"')
    assert out.getvalue() == b""
    text = "\n".join(result.plan)
    assert "POST http://127.0.0.1:9/api/query/engage" in text
    assert "1000000 profiles would be 1000 pages: 1000 queries" in text
    assert "60/hour" in text


def test_cli_and_library_build_the_same_options(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from mpexport.cli.main import run as cli_run
    from mpexport.profile_export import runner
    from mpexport.profile_export.api import profiles

    calls: list[ProfileOptions] = []

    class Captured(Exception):
        pass

    def fake_run(options: ProfileOptions, **_kwargs: Any) -> Any:
        calls.append(options)
        raise Captured

    monkeypatch.setattr(runner, "run_profiles", fake_run)
    db = tmp_path / "p.duckdb"
    cli_run(["profiles", "--where", "w", "--cohort", "3", "--group-id", "g", "--property", "a",
             "--property", "b", "--workers", "2", "--retries", "1", "--qps-limit", "2.5",
             "--hourly-limit", "40", "--region", "eu", "--api-url", "http://127.0.0.1:1",
             "--project-id", "9", "--db", str(db), "--table", "t", "--memory-limit", "512MB",
             "--wait-lock", "3", "--allow-empty", "--dry-run"])
    with pytest.raises(Captured):
        profiles(where="w", cohort_id=3, group_id="g", properties=["a", "b"], workers=2,
                 retries=1, qps_limit=2.5, hourly_limit=40, region="eu",
                 api_url="http://127.0.0.1:1", project_id=9, db=db, table="t",
                 memory_limit="512MB", wait_lock=3, allow_empty=True, dry_run=True)
    cli_options, lib_options = calls
    assert cli_options == lib_options
    changed = {f.name for f in dataclasses.fields(ProfileOptions)
               if getattr(cli_options, f.name) != getattr(ProfileOptions(), f.name)}
    assert changed == {f.name for f in dataclasses.fields(ProfileOptions)} - {"profile",
                                                                             "output"}


def tables(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return sorted(t for (t,) in con.execute("SHOW TABLES").fetchall())


def test_a_dry_run_with_db_opens_nothing_for_writing(tmp_path: Path) -> None:
    from mpexport.profile_export.api import profiles

    existing, missing = tmp_path / "crm.duckdb", tmp_path / "new.duckdb"
    duckdb.connect(str(existing)).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    for db in (existing, missing):
        result = profiles(db=db, dry_run=True, credentials=CREDS, api_url="http://127.0.0.1:9")
        assert "1000000 profiles would be 1000 pages" in "\n".join(result.plan)
    assert tables(existing) == []  # no profiles table, no bookkeeping tables
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no lock file, no new file


def test_a_dry_run_reads_the_stored_session_of_a_database(tmp_path: Path) -> None:
    from mpexport.profile_export.api import profiles
    from mpexport.profile_export.request import build_profile_request

    db = tmp_path / "crm.duckdb"
    request = build_profile_request(ProfileOptions(db=db, api_url="http://127.0.0.1:9"))
    database = sink(tmp_path, filtered=False)
    try:
        export(database, PROFILES[:3])  # the table holds 3 profiles
        s = state(request.fingerprint(CREDS), total=5, size=2)
        database.begin(s)
        database.store(1, page_file(tmp_path, PROFILES[2:4]), 2)
    finally:
        database.close()
    (tmp_path / "p.duckdb").rename(db)
    before = tables(db)
    result = profiles(db=db, dry_run=True, credentials=CREDS, api_url="http://127.0.0.1:9")
    assert "1 of 3 pages stored, 2 pages left: 2 queries" in "\n".join(result.plan)
    assert tables(db) == before and not Path(str(db) + ".lock").exists()


def test_the_session_key_names_the_account_but_never_its_secret() -> None:
    from mpexport.profile_export.request import build_profile_request

    request = build_profile_request(ProfileOptions(api_url="http://127.0.0.1:9"))
    # Legacy project secrets carry no project id: the key must still tell projects apart.
    a, b = Credentials(api_secret="secret-of-project-a"), Credentials(api_secret="secret-b")
    assert request.fingerprint(a) == request.fingerprint(Credentials(api_secret=a.api_secret))
    assert request.fingerprint(a) != request.fingerprint(b)
    other = Credentials(username=DEMO_USERNAME, secret="another", project_id=DEMO_PROJECT_ID)
    assert request.fingerprint(CREDS) != request.fingerprint(other)
    keys = " ".join(request.fingerprint(c) for c in (a, b, CREDS, other))
    for secret in ("secret-of-project-a", "secret-b", DEMO_SECRET, "another"):
        assert secret not in keys


def test_a_stored_session_older_than_a_day_is_not_resumed(make_server: ServerFactory,
                                                            tmp_path: Path) -> None:
    from mpexport.profile_export.api import profiles
    from mpexport.profile_export.request import build_profile_request

    dataset = ProfileDataset(seed=1, count=5)
    server = make_server(profiles=dataset)
    # The run's state folder is the environment's, not the process's.
    environment = Environment.of({STATE_DIR_ENV: str(tmp_path / "state")})
    key = build_profile_request(ProfileOptions(api_url=server.url)).fingerprint(CREDS)
    files = PageFiles.for_fingerprint(key, profiles_dir(environment.state_dir))
    files.open()
    try:  # a whole session, fetched two days ago and never written out
        files.begin(SessionState("s-old", 1, 1000, key, time.time() - 2 * 86400))
        files.store(0, page_file(files.directory, [{"$distinct_id": "gone", "$properties": {}}]))
    finally:
        files.close()
    out = io.BytesIO()
    result = profiles(output=out, credentials=CREDS, api_url=server.url,
                      environment=environment)
    assert result.ok and result.pages_resumed == 0 and result.pages_fetched == 1
    assert [json.loads(line) for line in out.getvalue().splitlines()] == dataset.users()


TWICE = [{"$distinct_id": "a", "$properties": {"v": 1}},
         {"$distinct_id": "b", "$properties": {"v": 1}},
         {"$distinct_id": "a", "$properties": {"v": 2}},  # page 0 again
         {"$distinct_id": "c", "$properties": {"v": 1}},
         {"$distinct_id": "b", "$properties": {"v": 3}},  # page 1, listed on page 0 too
         {"$distinct_id": "c", "$properties": {"v": 4}}]
FIRST_OF_EACH = [TWICE[0], TWICE[1], TWICE[3]]


def test_ndjson_writes_each_profile_once_the_first_listing_wins(tmp_path: Path) -> None:
    from mpexport.profile_export.ndjson import NdjsonProfiles

    files = PageFiles.for_fingerprint("key", tmp_path)
    out = io.BytesIO()
    ndjson = NdjsonProfiles(files, stream=out)
    ndjson.open()
    s = state(total=6, size=3)
    ndjson.begin(s)
    ndjson.store(0, page_file(files.directory, TWICE[:3]), 3)
    ndjson.store(1, page_file(files.directory, TWICE[3:]), 3)
    assert ndjson.finish(s) == 3
    assert out.getvalue() == b"".join(json.dumps(p, ensure_ascii=False).encode() + b"\n"
                                      for p in FIRST_OF_EACH)
    assert ndjson.duplicates == 3


def test_the_table_keeps_the_first_listing_of_a_profile_too(tmp_path: Path) -> None:
    database = sink(tmp_path)
    try:
        s = state(total=6, size=3)
        database.begin(s)
        database.store(0, page_file(tmp_path, TWICE[:3]), 3)
        database.store(1, page_file(tmp_path, TWICE[3:]), 3)
        assert database.finish(s) == 3
        assert database.load.duplicates == 3
    finally:
        database.close()
    assert rows(tmp_path / "p.duckdb") == as_rows(FIRST_OF_EACH)


def test_the_summary_counts_profiles_listed_twice() -> None:
    from mpexport.cli.profiles_report import ProfileReport
    from mpexport.profile_export.model import ProfileResult

    report = ProfileReport("stdout", result=ProfileResult(profiles=3, duplicates=3))
    assert "3 profiles (3 listed twice, written once) in" in report.summary_line()
    assert report.to_json(0)["duplicates"] == 3


class StopAfter:
    """A stop request that arrives once ``pages`` pages were written out."""

    def __init__(self, pages: int) -> None:
        self.calls, self.pages = 0, pages

    def raise_if_requested(self) -> None:
        from mpexport.errors import Interrupted

        self.calls += 1
        if self.calls > self.pages:
            raise Interrupted("SIGINT")


@pytest.mark.parametrize("to_file", [False, True])
def test_a_stop_while_writing_out_tells_what_the_output_holds(tmp_path: Path,
                                                              to_file: bool) -> None:
    from mpexport.cli.profiles import _resume_hint
    from mpexport.errors import Interrupted
    from mpexport.profile_export.model import ProfileResult
    from mpexport.profile_export.ndjson import NdjsonProfiles

    files = PageFiles.for_fingerprint("key", tmp_path / "state")
    out, target = io.BytesIO(), tmp_path / "out.ndjson"
    ndjson = NdjsonProfiles(files, stream=None if to_file else out,
                            output=target if to_file else None,
                            guard=StopAfter(1))  # type: ignore[arg-type]
    ndjson.open()
    s = state(total=4, size=2)
    ndjson.begin(s)
    ndjson.store(0, page_file(files.directory, PROFILES[:2]), 2)
    ndjson.store(1, page_file(files.directory, PROFILES[2:4]), 2)
    with pytest.raises(Interrupted):
        ndjson.finish(s)
    ndjson.close()
    result = ProfileResult(pages_total=2, pages_stored=2, pages_written=ndjson.pages_out)
    hint = _resume_hint(ProfileOptions(output=target if to_file else None), result)
    if to_file:  # the temp file went: the file is as it was (here: absent)
        assert ndjson.pages_out == 0 and not target.exists()
        assert f"nothing was written to {target}" in hint
    else:
        assert ndjson.pages_out == 1 and out.getvalue().count(b"\n") == 2
        assert "stdout holds the first 1 of 2 pages" in hint
    assert files.resume("key")[1] == {0, 1}  # kept: a rerun writes every page again


def test_a_missing_or_unwritable_output_folder_is_refused_before_fetching(
        tmp_path: Path) -> None:
    from mpexport.profile_export.request import build_profile_request

    with pytest.raises(UsageError, match="does not exist"):
        build_profile_request(ProfileOptions(output=tmp_path / "nowhere" / "p.ndjson"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root writes anywhere
        with pytest.raises(UsageError, match="not writable"):
            build_profile_request(ProfileOptions(output=locked / "p.ndjson"))
    build_profile_request(ProfileOptions(output=tmp_path / "p.ndjson"))
    if os.path.exists("/dev/null"):  # a device is written in place: its folder may be /dev
        build_profile_request(ProfileOptions(output=Path("/dev/null")))
