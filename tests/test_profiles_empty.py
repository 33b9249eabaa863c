"""A full ``profiles --db`` export that lists no profiles keeps a non-empty table (issue 20).

Replacing a snapshot of thousands with nothing is what an outage, a wrong
project or a permissions change looks like, far more often than a project
that really lost every profile: the run exits 1 with one line saying so and
leaves the table as it was, unless ``--allow-empty`` (``allow_empty=True``)
says an empty snapshot is meant. Filtered exports upsert, so they never
remove what they did not list and need no guard.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import mpexport
from mpexport.errors import EmptySnapshotError, ExitCode, exit_code_for
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, FakeMixpanelServer
from mpexport.fakeserver.profiles import ProfileDataset
from mpexport.mixpanel.credentials import Credentials
from tests.helpers import ServerFactory, run_cli

REFUSED = (
    "mpexport: error: Mixpanel's session listed 0 profiles; replacing the {n} profiles in "
    "{db} table profiles with none was refused and the table is unchanged (if the "
    "project really has no profiles now, run again with --allow-empty, or "
    "allow_empty=True in the library)"
)


def args(server: FakeMixpanelServer, db: Path, *extra: str) -> list[str]:
    return ["profiles", "--api-url", server.url, "--no-progress", "--db", str(db), *extra]


def snapshot(db: Path, table: str = "profiles") -> list[tuple[object, ...]]:
    """Every row as stored, exported_at included: "unchanged" means these are equal."""
    with duckdb.connect(str(db), read_only=True) as con:
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall())


@pytest.fixture
def stored(make_server: ServerFactory, tmp_path: Path) -> tuple[Path, list[tuple[object, ...]]]:
    """A database whose profiles table holds 700 profiles from an earlier full export."""
    db = tmp_path / "crm.duckdb"
    first = run_cli(args(make_server(profiles=ProfileDataset(seed=1, count=700)), db))
    assert first.code == 0, first.stderr
    rows = snapshot(db)
    assert len(rows) == 700
    return db, rows


def test_an_empty_session_keeps_the_table_and_exits_1(
    make_server: ServerFactory, tmp_path: Path, stored: tuple[Path, list[tuple[object, ...]]]
) -> None:
    db, before = stored
    empty = make_server(profiles=ProfileDataset(seed=1, count=0))
    summary = tmp_path / "summary.json"
    result = run_cli(args(empty, db, "--summary-json", str(summary)))

    assert result.code == 1, result.stderr
    assert result.stderr.splitlines() == [REFUSED.format(n=700, db=db)]
    assert snapshot(db) == before
    report = json.loads(summary.read_text())
    assert (report["status"], report["exit_code"]) == ("failed", 1)
    assert report["error"] == REFUSED.format(n=700, db=db).removeprefix("mpexport: error: ")

    allowed = run_cli(args(empty, db, "--allow-empty", "--summary-json", str(summary)))
    assert allowed.code == 0, allowed.stderr
    assert snapshot(db) == []
    report = json.loads(summary.read_text())
    assert (report["status"], report["profiles"], report["replaced"]) == ("complete", 0, 700)


def test_a_filtered_export_listing_nothing_is_no_threat(
    make_server: ServerFactory, stored: tuple[Path, list[tuple[object, ...]]]
) -> None:
    """An upsert of nothing removes nothing: no guard, exit 0."""
    db, before = stored
    empty = make_server(profiles=ProfileDataset(seed=1, count=0))
    for extra in (["--where", 'properties["plan"] == "pro"'], ["--cohort", "7"]):
        result = run_cli(args(empty, db, *extra))
        assert result.code == 0, result.stderr
        assert snapshot(db) == before


def test_an_empty_snapshot_into_an_empty_table_is_fine(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "new.duckdb"
    empty = make_server(profiles=ProfileDataset(seed=1, count=0))
    for _ in range(2):  # a new table, then the (still empty) table again
        result = run_cli(args(empty, db))
        assert result.code == 0, result.stderr
        assert snapshot(db) == []


def test_group_keys_are_guarded_each_on_their_own(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The table holds every group key; only the key exported is replaced, so only its
    rows count."""
    db = tmp_path / "crm.duckdb"
    groups = make_server(profiles=ProfileDataset(seed=4, count=0, groups=30))
    assert run_cli(args(groups, db, "--group-id", "company_id")).code == 0
    before = snapshot(db, "group_profiles")
    assert len(before) == 30
    empty = make_server(profiles=ProfileDataset(seed=4, count=0, groups=0))
    refused = run_cli(args(empty, db, "--group-id", "company_id"))
    assert refused.code == 1, refused.stderr
    assert f"replacing the 30 company_id profiles in {db} table group_profiles with none" in (
        refused.stderr)
    assert snapshot(db, "group_profiles") == before
    other = run_cli(args(empty, db, "--group-id", "org_id"))
    assert other.code == 0, other.stderr
    assert snapshot(db, "group_profiles") == before


def test_the_library_refuses_alike(
    make_server: ServerFactory, stored: tuple[Path, list[tuple[object, ...]]]
) -> None:
    db, before = stored
    empty = make_server(profiles=ProfileDataset(seed=1, count=0))
    credentials = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET,
                              project_id=DEMO_PROJECT_ID)
    common = {"db": db, "api_url": empty.url, "credentials": credentials,
              "qps_limit": 1000, "hourly_limit": 100_000}
    with pytest.raises(EmptySnapshotError) as caught:
        mpexport.profiles(**common)  # type: ignore[arg-type]
    assert exit_code_for(caught.value) == ExitCode.PARTIAL == 1
    assert snapshot(db) == before
    result = mpexport.profiles(**common, allow_empty=True)  # type: ignore[arg-type]
    assert (result.profiles, result.load.replaced if result.load else None) == (0, 700)
    assert snapshot(db) == []
