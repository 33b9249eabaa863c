"""``mpexport profiles`` end to end: the real CLI against the built-in server, over real HTTP.

Exact outcomes only: the profiles out are the profiles the server holds,
each once. Runs are stopped at known points: :class:`PageControl` stands in
for the server's page faults and holds (or fails) chosen pages, so a test
knows which pages a run had when it stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mpexport.fakeserver import DEMO_SECRET, FakeMixpanelServer
from mpexport.fakeserver.profiles import ProfileDataset
from mpexport.fakeserver.sessions import MAX_SESSIONS
from mpexport.sinks.duckdb.lock import database_lock
from tests.helpers import (
    PATIENCE,
    SECRET_MARKERS,
    ServerFactory,
    clean_env,
    cli_command,
    run_cli,
    service_account_env,
    wait_until,
)

ENGAGE = "/api/query/engage"


class PageControl:
    """The server's page faults, replaced: hold pages until released, or fail them (HTTP 500)."""

    def __init__(self, hold: set[int] | None = None, fail: set[int] | None = None) -> None:
        self.hold = hold or set()
        self.fail = fail or set()
        self.released = threading.Event()
        self._cond = threading.Condition()
        self._held = 0

    def choose(self, page: int) -> str | None:
        if page in self.fail:
            return "http500"
        if page in self.hold and not self.released.is_set():
            with self._cond:
                self._held += 1
                self._cond.notify_all()
            try:
                self.released.wait(10 * PATIENCE)  # bounded: a failed test leaves no thread
            finally:
                with self._cond:
                    self._held -= 1
                    self._cond.notify_all()
        return None

    def wait_held(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._held >= count, PATIENCE), "pages not held"


@pytest.fixture
def controls() -> Iterator[list[PageControl]]:
    made: list[PageControl] = []
    yield made
    for control in made:
        control.released.set()


def controlled(server: FakeMixpanelServer, controls: list[PageControl],
               **kwargs: Any) -> PageControl:
    control = PageControl(**kwargs)
    server.engage.faults = control  # type: ignore[assignment]
    controls.append(control)
    return control


def ndjson(profiles: list[dict[str, Any]]) -> bytes:
    """The exact bytes of profiles as the server sends them, one per line."""
    return b"".join(json.dumps(p, ensure_ascii=False).encode() + b"\n" for p in profiles)


def table(db: Path, name: str = "profiles") -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"SELECT distinct_id, properties FROM {name}").fetchall()
    assert len(rows) == len({d for d, _ in rows}), "a profile stored twice"
    return dict(rows)


def as_rows(profiles: list[dict[str, Any]]) -> dict[str, str]:
    return {p["$distinct_id"]: json.dumps(p["$properties"], ensure_ascii=False)
            for p in profiles}


def served_pages(server: FakeMixpanelServer, since: int = 0) -> list[int]:
    """Pages the server answered whole (in arrival order) from request ``since`` on."""
    return [int(r.params.get("page", "0")) for r in server.stats.records()[since:]
            if r.path.rstrip("/") == ENGAGE and r.status == 200 and r.fault is None]


def args(server: FakeMixpanelServer, *extra: str) -> list[str]:
    return ["profiles", "--api-url", server.url, "--no-progress", *extra]


def test_stdout_holds_every_profile_once_with_faults_on(
        make_server: ServerFactory, tmp_path: Path, isolated_state: Path) -> None:
    dataset = ProfileDataset(seed=3, count=2500)
    # Five pages, and page p's first attempt gets fault p: every kind once.
    server = make_server(profiles=dataset, engage_page_size=500,
                         engage_faults=("http500", "http503", "http429", "reset", "cut"))
    summary = tmp_path / "summary.json"
    result = run_cli(args(server, "--summary-json", str(summary)))
    assert result.code == 0, result.stderr
    assert result.stdout == ndjson(dataset.users())
    assert "mpexport: 2500 profiles in 5/5 pages" in result.stderr
    assert result.stderr.count("retrying in") == 5
    report = json.loads(summary.read_text())
    assert report["status"] == "complete" and report["profiles"] == 2500
    assert report["pages"] == {"total": 5, "stored": 5, "fetched": 5, "resumed": 0,
                               "failed": []}
    assert report["retries"] == 5
    # The kept pages went once the profiles were out; no secret anywhere.
    assert list((isolated_state / "profiles").glob("*/page-*")) == []
    kept = b"".join(p.read_bytes() for p in isolated_state.rglob("*") if p.is_file())
    for text in (result.stderr.encode(), result.stdout, summary.read_bytes(), kept):
        assert not any(secret.encode() in text for secret in SECRET_MARKERS)


def test_the_table_holds_every_profile_once(make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = ProfileDataset(seed=5, count=1200)
    server = make_server(profiles=dataset, engage_page_size=500,
                         engage_faults=("reset", "cut"))
    db = tmp_path / "crm.duckdb"
    result = run_cli(args(server, "--db", str(db)))
    assert result.code == 0, result.stderr
    assert table(db) == as_rows(dataset.users())
    assert f"loaded 1200 profiles into {db} table profiles" in result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        seen = dict(con.execute("SELECT distinct_id, strftime(last_seen, '%Y-%m-%dT%H:%M:%S') "
                                "FROM profiles").fetchall())
        (exported,) = con.execute("SELECT count(DISTINCT exported_at) FROM profiles").fetchone()
        (staged,) = con.execute("SELECT count(*) FROM _mpexport_profile_stage").fetchone()
    assert seen == {p["$distinct_id"]: p["$properties"]["$last_seen"] for p in dataset.users()}
    assert exported == 1 and staged == 0
    again = run_cli(args(server, "--db", str(db), "--summary-json", "-"))
    assert again.code == 0 and table(db) == as_rows(dataset.users())
    assert '"replaced": 1200' in again.stderr


def test_a_full_export_replaces_the_snapshot_whole(
        make_server: ServerFactory, tmp_path: Path, controls: list[PageControl]) -> None:
    db = tmp_path / "crm.duckdb"
    before = ProfileDataset(seed=1, count=600)
    assert run_cli(args(make_server(profiles=before, engage_page_size=500),
                        "--db", str(db))).code == 0
    after = ProfileDataset(seed=2, count=1500)
    server = make_server(profiles=after, engage_page_size=500)
    control = controlled(server, controls, hold={1, 2})
    proc = subprocess.Popen([*cli_command(), *args(server, "--db", str(db))],
                            env=clean_env(service_account_env()), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        control.wait_held(2)  # page 0 is staged; the rest can never arrive
        proc.kill()  # no chance to tidy up: what a reader finds is what DuckDB committed
        proc.communicate(timeout=PATIENCE)
    finally:
        control.released.set()
    assert table(db) == as_rows(before.users())
    since = len(server.stats.records())
    result = run_cli(args(server, "--db", str(db)))
    assert result.code == 0, result.stderr
    assert "resuming the session" in result.stderr
    assert "1 of 3 pages already stored" in result.stderr
    assert sorted(served_pages(server, since)) == [1, 2]
    assert table(db) == as_rows(after.users())


def test_a_filtered_export_upserts_its_profiles(make_server: ServerFactory,
                                               tmp_path: Path) -> None:
    db = tmp_path / "crm.duckdb"
    first = ProfileDataset(seed=1, count=1000)
    assert run_cli(args(make_server(profiles=first), "--db", str(db))).code == 0
    # The same project later: more users; only the pro ones, with two properties.
    later = ProfileDataset(seed=1, count=3000)
    where = 'properties["plan"] == "pro"'
    server = make_server(profiles=later, engage_page_size=500)
    result = run_cli(args(server, "--db", str(db), "--where", where, "--property", "plan",
                          "--property", "$email", "--summary-json", "-"))
    assert result.code == 0, result.stderr
    pro = later.select(where, output_properties=["plan", "$email"])
    expected = {**as_rows(first.users()), **as_rows(pro)}
    assert table(db) == expected
    summary = json.loads(result.stderr[result.stderr.index("{"):])
    assert summary["mode"] == "upsert" and summary["profiles"] == len(pro)
    assert summary["replaced"] == sum(1 for p in pro if int(p["$distinct_id"][2:]) <= 1000)
    cohort = run_cli(args(server, "--db", str(db), "--cohort", "7"))
    assert cohort.code == 0, cohort.stderr
    assert table(db) == {**expected, **as_rows(later.select(cohort_id=7))}


def test_group_profiles_go_to_their_own_table(make_server: ServerFactory,
                                             tmp_path: Path) -> None:
    dataset = ProfileDataset(seed=4, count=10, groups=700)
    server = make_server(profiles=dataset, engage_page_size=500)
    db = tmp_path / "crm.duckdb"
    for key in ("company_id", "org_id", "company_id"):
        result = run_cli(args(server, "--db", str(db), "--group-id", key))
        assert result.code == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT group_key, distinct_id, properties FROM group_profiles"
                           ).fetchall()
        tables = {t for (t,) in con.execute("SHOW TABLES").fetchall()
                  if not t.startswith("_mpexport")}
    for key in ("company_id", "org_id"):
        got = {d: p for k, d, p in rows if k == key}
        assert got == as_rows(dataset.group_profiles(key)) and len(got) == 700
    assert len(rows) == 1400 and tables == {"group_profiles"}
    stdout = run_cli(args(server, "--group-id", "org_id"))
    assert stdout.code == 0 and stdout.stdout == ndjson(dataset.group_profiles("org_id"))


def test_an_expired_session_starts_again_from_page_0(
        make_server: ServerFactory, controls: list[PageControl]) -> None:
    dataset = ProfileDataset(seed=6, count=2500)
    server = make_server(profiles=dataset, engage_page_size=500)
    control = controlled(server, controls, hold={3})
    proc = subprocess.Popen([*cli_command(), *args(server)],
                            env=clean_env(service_account_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        control.wait_held(1)
        for _ in range(MAX_SESSIONS):  # the server forgets the run's session
            server.engage.sessions.open([])
    finally:
        control.released.set()
    stdout, stderr = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, stderr.decode()
    assert b"the session expired; starting again from page 0" in stderr
    assert stdout == ndjson(dataset.users())
    assert served_pages(server).count(0) == 2


def test_a_failed_run_is_continued_with_only_the_missing_pages(
        make_server: ServerFactory, tmp_path: Path, controls: list[PageControl]) -> None:
    dataset = ProfileDataset(seed=7, count=2500)
    server = make_server(profiles=dataset, engage_page_size=500)
    control = controlled(server, controls, fail={3, 4})
    db = tmp_path / "crm.duckdb"
    summary = tmp_path / "summary.json"
    first = run_cli(args(server, "--db", str(db), "--retries", "0",
                         "--summary-json", str(summary)))
    assert first.code == 1, first.stderr
    assert "3 of 5 pages are stored and nothing was written to the table" in first.stderr
    assert "3/5 pages" in first.stderr
    assert json.loads(summary.read_text())["status"] == "partial"
    assert table(db) == {}
    control.fail = set()
    plan = run_cli(args(server, "--db", str(db), "--dry-run"))
    assert plan.code == 0, plan.stderr
    assert b"3 of 5 pages stored, 2 pages left: 2 queries" in plan.stdout
    since = len(server.stats.records())
    second = run_cli(args(server, "--db", str(db)))
    assert second.code == 0, second.stderr
    assert sorted(served_pages(server, since)) == [3, 4]
    assert table(db) == as_rows(dataset.users())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_keeps_the_pages_and_a_rerun_fetches_the_rest(
        make_server: ServerFactory, isolated_state: Path, controls: list[PageControl]) -> None:
    dataset = ProfileDataset(seed=8, count=2500)
    server = make_server(profiles=dataset, engage_page_size=500)
    control = controlled(server, controls, hold={3, 4})
    proc = subprocess.Popen([*cli_command(), *args(server)],
                            env=clean_env(service_account_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        control.wait_held(2)
        kept = isolated_state / "profiles"
        wait_until(lambda: len(list(kept.glob("*/page-*.ndjson"))) == 3,
                   "pages 0-2 kept", proc=proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=PATIENCE)
    finally:
        control.released.set()
    assert proc.returncode == 130, stderr.decode()
    assert stdout == b"" and b"Traceback" not in stderr
    assert b"run the same command again" in stderr
    since = len(server.stats.records())
    result = run_cli(args(server))
    assert result.code == 0, result.stderr
    assert sorted(served_pages(server, since)) == [3, 4]
    assert result.stdout == ndjson(dataset.users())


def test_a_dry_run_fetches_nothing(make_server: ServerFactory) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=10))
    result = run_cli(args(server, "--dry-run", "--where", 'properties["plan"] == "pro"'))
    assert result.code == 0, result.stderr
    assert server.stats.records() == []
    text = result.stdout.decode()
    assert f"POST {server.url}/api/query/engage" in text and "where=" in text
    assert "100000 profiles would be 100 pages: 100 queries" in text
    assert "rate limits" in text and "queries used in the last hour" in text
    assert DEMO_SECRET not in text


def test_429s_are_waited_out_under_the_5_at_once_limit(make_server: ServerFactory) -> None:
    dataset = ProfileDataset(seed=9, count=3000)
    server = make_server(profiles=dataset, engage_page_size=500, engage_concurrency_limit=5,
                         retry_after=1)
    # The default 5 at once never draws a 429...
    result = run_cli(args(server))
    assert result.code == 0 and result.stdout == ndjson(dataset.users())
    assert server.stats.count(status=429) == 0
    # ...more than 5 does, and every 429 is waited out, like a first attempt's 429.
    busy = make_server(profiles=dataset, engage_page_size=500, engage_concurrency_limit=5,
                       retry_after=1, engage_faults=("http429",))
    result = run_cli(args(busy, "--workers", "8"))
    assert result.code == 0, result.stderr
    assert result.stdout == ndjson(dataset.users())
    assert busy.stats.count(status=429) >= 6


def test_exit_codes(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=10))
    bad_where = run_cli(args(server, "--where", "properties[ nonsense"))
    assert bad_where.code == 2 and "HTTP 400" in bad_where.stderr
    wrong = run_cli(args(server), env={"MP_SECRET": "not-the-secret"})
    assert wrong.code == 3 and "credentials" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr
    db = tmp_path / "crm.duckdb"
    with database_lock(db):
        locked = run_cli(args(server, "--db", str(db)))
    assert locked.code == 4 and "in use" in locked.stderr
    for result in (bad_where, wrong, locked):
        assert "Traceback" not in result.stderr and result.stdout == b""


def test_an_output_file_is_put_in_place_whole(make_server: ServerFactory,
                                             tmp_path: Path) -> None:
    dataset = ProfileDataset(seed=2, count=700)
    server = make_server(profiles=dataset, engage_page_size=500)
    out = tmp_path / "profiles.ndjson"
    out.write_bytes(b"an older export\n")
    result = run_cli(args(server, "-o", str(out), "--property", "$name"))
    assert result.code == 0, result.stderr
    assert result.stdout == b""
    assert out.read_bytes() == ndjson(dataset.select(output_properties=["$name"]))
    assert [p.name for p in tmp_path.iterdir()] == ["profiles.ndjson"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_exit_1_with_one_line(make_server: ServerFactory,
                                             tmp_path: Path) -> None:
    server = make_server(profiles=ProfileDataset(seed=1, count=700), engage_page_size=500)
    for extra, name in ((["--output", "/dev/full"], "/dev/full"), ([], "stdout")):
        with open("/dev/full", "wb") as full:
            proc = subprocess.run([*cli_command(), *args(server, *extra)],
                                  env=clean_env(service_account_env()), stdout=full,
                                  stderr=subprocess.PIPE, timeout=PATIENCE, check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode == 1, (name, stderr)
        lines = [line for line in stderr.splitlines() if line.startswith("mpexport: error")]
        assert len(lines) == 1 and "No space left" in lines[0], (name, stderr)
        assert "Traceback" not in stderr and "Exception ignored" not in stderr
        # The pages are kept: a rerun with room writes every profile.
        again = run_cli(args(server, "--summary-json", str(tmp_path / "s.json")))
        assert again.code == 0 and json.loads((tmp_path / "s.json").read_text())[
            "pages"]["resumed"] == 2
