"""OAuth bearer tokens: the third kind of credential, end to end and in its rules.

The real CLI runs as a subprocess against the built-in server, which accepts
``Authorization: Bearer DEMO_OAUTH_TOKEN`` (and records which kind of
credential each request carried, never its value).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from mpexport.config.resolve import LEGACY_SECRET_WARNING, resolve_credentials
from mpexport.errors import CredentialsError, UsageError
from mpexport.fakeserver import (
    DEMO_OAUTH_TOKEN,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    ProfileDataset,
)
from mpexport.mixpanel.credentials import Credentials, credentials_from_env
from tests.helpers import (
    ServerFactory,
    clean_env,
    cli_command,
    day_chunks,
    expected_stdout,
    run_cli,
)

FIRST, LAST = dt.date(2024, 5, 1), dt.date(2024, 5, 4)
TOKEN_ENV = {"MP_OAUTH_TOKEN": DEMO_OAUTH_TOKEN, "MP_PROJECT_ID": str(DEMO_PROJECT_ID)}
# Looks like a real token, and is not the server's: refused as an expired one would be.
REFUSED = "mp-oauth-refused-0123456789abcdef"
EXPIRED_HINT = "the OAuth token may have expired"


def export_args(url: str, *extra: str) -> list[str]:
    return ["export", "--api-url", url, "--from", FIRST.isoformat(), "--to", LAST.isoformat(),
            "--chunk-days", "2", *extra]


def host(url: str) -> str:
    """What check names: the host and port it asked."""
    return url.split("://", 1)[1]


def auth_kinds(server: object) -> set[str]:
    return {r.auth for r in server.stats.records()}  # type: ignore[attr-defined]


# ------------------------------------------------------------------ a good token


def test_a_good_token_exports_events_profiles_and_counts(
        make_server: ServerFactory, tmp_path: Path) -> None:
    dataset = Dataset(seed=91, events_per_day=25)
    server = make_server(dataset, profiles=ProfileDataset(seed=9, count=30))
    result = run_cli(export_args(server.url), env=TOKEN_ENV, credentials=False)
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(FIRST, LAST, 2))
    # Sent as a bearer token, with the project id a token needs (as a service account's).
    assert auth_kinds(server) == {"oauth_token"}
    assert {q["project_id"] for q in server.stats.queries()} == {str(DEMO_PROJECT_ID)}
    assert LEGACY_SECRET_WARNING not in result.stderr

    db = tmp_path / "events.duckdb"
    stored = run_cli(export_args(server.url, "--db", str(db), "--verify"), env=TOKEN_ENV,
                     credentials=False)
    assert stored.code == 0, stored.stderr
    assert f"verified: {FIRST}..{LAST} matches Mixpanel" in stored.stderr
    profiles = run_cli(["profiles", "--api-url", server.url, "--no-progress"], env=TOKEN_ENV,
                       credentials=False)
    assert profiles.code == 0, profiles.stderr
    assert len(profiles.stdout.splitlines()) == 30
    paths = {r.path for r in server.stats.records()}
    assert paths == {"/api/2.0/export", "/api/query/events", "/api/query/engage"}
    assert auth_kinds(server) == {"oauth_token"}
    for run in (result, stored, profiles):
        assert DEMO_OAUTH_TOKEN not in run.stderr
    assert DEMO_OAUTH_TOKEN.encode() not in profiles.stdout


def test_check_says_an_oauth_token_answered(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=92, events_per_day=5), today=dt.datetime.now(dt.UTC).date())
    ok = run_cli(["check", "--api-url", server.url], env=TOKEN_ENV, credentials=False)
    assert ok.code == 0, ok.stderr
    assert ok.stderr == (f"mpexport: OK: OAuth token (environment) can export project "
                         f"{DEMO_PROJECT_ID} from {host(server.url)}\n")
    sa = run_cli(["check", "--api-url", server.url])
    assert sa.stderr == (f"mpexport: OK: service account {DEMO_USERNAME} (environment) can "
                         f"export project {DEMO_PROJECT_ID} from {host(server.url)}\n")


# ------------------------------------------------------------------ a refused token


def test_a_refused_token_exits_3_and_appears_nowhere(
        make_server: ServerFactory, tmp_path: Path, isolated_state: Path) -> None:
    server = make_server(Dataset(seed=93, events_per_day=10),
                         profiles=ProfileDataset(seed=9, count=10))
    refused = {"MP_OAUTH_TOKEN": REFUSED, "MP_PROJECT_ID": str(DEMO_PROJECT_ID)}
    db = tmp_path / "events.duckdb"
    summary = tmp_path / "summary.json"
    runs = {
        "export": run_cli(export_args(server.url, "-v", "--summary-json", str(summary)),
                          env=refused, credentials=False),
        "sync": run_cli(["sync", "--api-url", server.url, "--db", str(db), "--from",
                         FIRST.isoformat(), "--to", LAST.isoformat(), "-v", "--debug"],
                        env=refused, credentials=False),
        "profiles": run_cli(["profiles", "--api-url", server.url, "--no-progress", "-v"],
                            env=refused, credentials=False),
        "check": run_cli(["check", "--api-url", server.url], env=refused, credentials=False),
    }
    for name, run in runs.items():
        assert run.code == 3, (name, run.stderr)
        assert ("Traceback" in run.stderr) == (name == "sync")  # --debug: even in one
        assert "Mixpanel refused the OAuth token (HTTP 401)" in run.stderr, name
        assert EXPIRED_HINT in run.stderr, name
    assert runs["check"].stderr == (
        "mpexport: error: Mixpanel refused the OAuth token (HTTP 401): Unable to authenticate "
        f"request ({EXPIRED_HINT}: get a new one and set MP_OAUTH_TOKEN (or the profile's "
        "oauth_token); check MP_PROJECT_ID and --region too)\n")
    assert json.loads(summary.read_text())["exit_code"] == 3
    assert auth_kinds(server) == {"oauth_token"}
    assert {r.status for r in server.stats.records()} == {401}

    blobs = [b for run in runs.values() for b in (run.stdout, run.stderr.encode())]
    blobs += [p.read_bytes() for p in (*tmp_path.rglob("*"), *isolated_state.rglob("*"))
              if p.is_file()]
    assert len(blobs) > 2 * len(runs)  # the summary, the database, its lock or the state
    for blob in blobs:
        assert REFUSED.encode() not in blob
        assert REFUSED[-8:].encode() not in blob


def test_a_token_for_another_project_is_refused_with_exit_3(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=94, events_per_day=5))
    result = run_cli(export_args(server.url), credentials=False,
                     env={"MP_OAUTH_TOKEN": DEMO_OAUTH_TOKEN, "MP_PROJECT_ID": "7"})
    assert result.code == 3
    assert "Mixpanel refused the OAuth token (HTTP 403)" in result.stderr
    assert "check MP_PROJECT_ID" in result.stderr
    assert EXPIRED_HINT in result.stderr
    assert DEMO_OAUTH_TOKEN not in result.stderr


# ------------------------------------------------------------------ a profile holding a token


def test_a_profile_holding_a_token(make_server: ServerFactory, isolated_config: Path) -> None:
    dataset = Dataset(seed=95, events_per_day=20)
    server = make_server(dataset, today=dt.datetime.now(dt.UTC).date())
    init = subprocess.run(
        [*cli_command(), "config", "init", "--profile", "tok", "--oauth-token",
         "--project-id", str(DEMO_PROJECT_ID)],
        input=(DEMO_OAUTH_TOKEN + "\n").encode(), capture_output=True, env=clean_env())
    assert init.returncode == 0, init.stderr
    config_file = isolated_config / "config.toml"
    assert init.stderr.decode() == f"mpexport: saved profile tok in {config_file}\n"
    text = config_file.read_text()
    assert (f'[profiles.tok]\nproject_id = {DEMO_PROJECT_ID}\n'
            f'oauth_token = "{DEMO_OAUTH_TOKEN}"\n') in text
    if os.name == "posix":
        assert config_file.stat().st_mode & 0o077 == 0

    show = subprocess.run([*cli_command(), "config", "show"], capture_output=True,
                          env=clean_env({"MP_OAUTH_TOKEN": REFUSED}))
    assert show.returncode == 0
    shown = show.stdout.decode()
    assert "oauth_token = <hidden>\n" in shown
    assert "# set in the environment, used instead of any profile: MP_OAUTH_TOKEN" in shown

    exported = run_cli(export_args(server.url, "--profile", "tok"), credentials=False)
    assert exported.code == 0, exported.stderr
    assert exported.stdout == expected_stdout(dataset, day_chunks(FIRST, LAST, 2))
    check = run_cli(["check", "--api-url", server.url, "--profile", "tok"], credentials=False)
    assert check.stderr == (f"mpexport: OK: OAuth token (profile tok ({config_file})) can "
                            f"export project {DEMO_PROJECT_ID} from {host(server.url)}\n")
    assert auth_kinds(server) == {"oauth_token"}
    # A token in the environment beside --profile is as ambiguous as any MP_* credential.
    both = run_cli(export_args(server.url, "--profile", "tok"), credentials=False,
                   env={"MP_OAUTH_TOKEN": REFUSED})
    assert both.code == 2
    assert "MP_OAUTH_TOKEN is set in the environment" in both.stderr
    for blob in (init.stdout, init.stderr, show.stdout, show.stderr, exported.stderr.encode(),
                 check.stderr.encode(), both.stderr.encode()):
        assert DEMO_OAUTH_TOKEN.encode() not in blob
        assert REFUSED.encode() not in blob


def test_config_init_refuses_a_token_without_a_project_or_with_another_kind() -> None:
    for extra, message in (
        ([], "--project-id is required with --oauth-token"),
        (["--project-id", "1", "--username", "u"],
         "give one of --username USER, --oauth-token or --legacy-api-secret"),
        (["--project-id", "1", "--legacy-api-secret"],
         "give one of --username USER, --oauth-token or --legacy-api-secret"),
    ):
        result = subprocess.run([*cli_command(), "config", "init", "--oauth-token", *extra],
                                input=b"tok\n", capture_output=True, env=clean_env())
        assert result.returncode == 2
        assert message in result.stderr.decode()


# ------------------------------------------------------------------ the rules


def test_precedence_service_account_then_token_then_legacy_secret() -> None:
    sa = {"MP_USERNAME": "u", "MP_SECRET": "s", "MP_PROJECT_ID": "5"}
    token = {"MP_OAUTH_TOKEN": "t0k", "MP_PROJECT_ID": "5"}
    legacy = {"MP_API_SECRET": "old"}
    assert credentials_from_env({**legacy, **token, **sa}).kind == "service_account"
    assert credentials_from_env({**legacy, **token}).kind == "oauth_token"
    assert credentials_from_env(legacy).kind == "api_secret"
    chosen = resolve_credentials({**legacy, **token, "MPEXPORT_CONFIG_DIR": "/nowhere"})
    assert chosen.credentials == Credentials(oauth_token="t0k", project_id=5)
    assert chosen.warnings == ()  # the legacy secret is not used, so no retirement warning


def test_a_token_needs_a_project_id() -> None:
    with pytest.raises(CredentialsError) as info:
        credentials_from_env({"MP_OAUTH_TOKEN": "t0k"})
    assert info.value.one_line() == (
        "an OAuth token needs a project id (set MP_PROJECT_ID or pass --project-id)")
    assert credentials_from_env({"MP_OAUTH_TOKEN": "t0k"}, project_id=3).project_id == 3


@pytest.mark.parametrize("token", ["Bearer abc", "ab c", "a\nb", "a\x1b[2Jb", "tökén", "a\tb"])
def test_a_token_that_cannot_be_a_header_is_refused_unquoted(token: str) -> None:
    # requests would quote a bad header value in its own error: refuse it first, unquoted.
    with pytest.raises(UsageError) as info:
        credentials_from_env({"MP_OAUTH_TOKEN": token, "MP_PROJECT_ID": "1"})
    text = info.value.one_line()
    assert text.startswith("MP_OAUTH_TOKEN is not a token: ")
    assert token.strip() not in text
    with pytest.raises(UsageError):
        Credentials(oauth_token=token, project_id=1)


def test_surrounding_whitespace_of_a_token_is_dropped() -> None:
    creds = credentials_from_env({"MP_OAUTH_TOKEN": "  t0k.x-y_z~+/=\n", "MP_PROJECT_ID": "1"})
    assert creds.oauth_token == "t0k.x-y_z~+/="


def test_a_token_is_never_in_a_repr_and_is_a_secret() -> None:
    creds = Credentials(oauth_token=DEMO_OAUTH_TOKEN, project_id=1)
    assert DEMO_OAUTH_TOKEN not in repr(creds)
    assert DEMO_OAUTH_TOKEN not in repr(creds.auth())
    assert creds.secrets() == [DEMO_OAUTH_TOKEN]
    assert creds.describe() == "OAuth token"
    assert Credentials(username="u", secret=DEMO_SECRET, project_id=1).describe() == (
        "service account u")
    assert Credentials(api_secret="x").describe() == "legacy project secret"


# ------------------------------------------------------------------ the built-in server


@pytest.mark.parametrize(("header", "project", "status", "kind"), [
    (f"Bearer {DEMO_OAUTH_TOKEN}", str(DEMO_PROJECT_ID), 200, "oauth_token"),
    (f"bearer {DEMO_OAUTH_TOKEN}", str(DEMO_PROJECT_ID), 200, "oauth_token"),
    (f"Bearer {REFUSED}", str(DEMO_PROJECT_ID), 401, "oauth_token"),
    ("Bearer ", str(DEMO_PROJECT_ID), 401, ""),
    (f"Bearer {DEMO_OAUTH_TOKEN}", None, 400, "oauth_token"),
    (f"Bearer {DEMO_OAUTH_TOKEN}", "7", 403, "oauth_token"),
])
def test_the_server_takes_a_bearer_token_like_mixpanel(
        make_server: ServerFactory, header: str, project: str | None, status: int,
        kind: str) -> None:
    import requests

    server = make_server(Dataset(seed=96, events_per_day=5))
    params = {"from_date": "2024-05-01", "to_date": "2024-05-01"}
    if project is not None:
        params["project_id"] = project
    response = requests.get(f"{server.url}/api/2.0/export", params=params,
                            headers={"Authorization": header}, timeout=30)
    assert response.status_code == status
    [record] = server.stats.records()
    assert (record.status, record.auth) == (status, kind)
    assert REFUSED not in repr(record) and DEMO_OAUTH_TOKEN not in repr(record)


def test_the_demo_verifies_with_a_bearer_token(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    demo = run_cli(["demo", "--days", "2", "--events-per-day", "40", "--no-progress",
                    "--output", str(db)], credentials=False)
    assert demo.code == 0, demo.stderr
    [line] = [t for t in demo.stderr.splitlines() if t.startswith("demo: verify: ")]
    assert line.endswith(" queries (with an OAuth bearer token): all match")
    assert DEMO_OAUTH_TOKEN not in demo.stderr


def test_a_new_token_resumes_its_projects_profile_session() -> None:
    from mpexport.profile_export.options import ProfileOptions
    from mpexport.profile_export.request import build_profile_request

    request = build_profile_request(ProfileOptions(), region="us")
    old = request.fingerprint(Credentials(oauth_token="old-token", project_id=1))
    assert request.fingerprint(Credentials(oauth_token="new-token", project_id=1)) == old
    assert request.fingerprint(Credentials(oauth_token="old-token", project_id=2)) != old
    assert "old-token" not in old
