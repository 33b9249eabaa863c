"""``mpexport check``: confirms credentials, and names the region that accepts them."""

from __future__ import annotations

import datetime as dt

import pytest

from mpexport.errors import CredentialsError, ExitCode, ProxyCredentialsError
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.mixpanel import check
from mpexport.mixpanel import endpoints as client
from mpexport.mixpanel.check import check_credentials
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint
from tests.helpers import TODAY, ServerFactory, run_cli

CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
DAY = TODAY - dt.timedelta(days=1)


def test_check_passes_where_the_credentials_work(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=1, events_per_day=5))
    outcome = check_credentials(CREDS, "us", server.url, DAY)
    assert outcome.events <= 1
    assert len(server.stats) == 1
    assert server.stats.queries()[0]["limit"] == "1"


def test_check_names_the_region_that_answers(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The project lives in the EU: the US host does not know these credentials.
    us = make_server(Dataset(seed=1, events_per_day=5), secret="another-secret")
    eu = make_server(Dataset(seed=1, events_per_day=5))
    india = make_server(Dataset(seed=1, events_per_day=5), secret="a-third-secret")
    monkeypatch.setitem(client.REGION_HOSTS, "us", us.url)
    monkeypatch.setitem(client.REGION_HOSTS, "eu", eu.url)
    monkeypatch.setitem(client.REGION_HOSTS, "in", india.url)
    with pytest.raises(CredentialsError, match="work in region eu") as info:
        check_credentials(CREDS, "us", None, DAY)
    assert "--region eu" in info.value.one_line()
    assert DEMO_SECRET not in info.value.one_line()


def test_check_refused_everywhere_keeps_the_original_error(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for region in ("us", "eu", "in"):
        server = make_server(Dataset(seed=1, events_per_day=5), secret="not-yours")
        monkeypatch.setitem(client.REGION_HOSTS, region, server.url)
    with pytest.raises(CredentialsError, match="HTTP 401"):
        check_credentials(CREDS, "us", None, DAY)


def test_check_command_exit_codes(make_server: ServerFactory) -> None:
    server = make_server(Dataset(seed=1, events_per_day=5), today=dt.datetime.now(dt.UTC).date())
    ok = run_cli(["check", "--api-url", server.url])
    assert ok.code == 0, ok.stderr
    assert "OK" in ok.stderr and DEMO_SECRET not in ok.stderr
    bad = run_cli(["check", "--api-url", server.url], env={"MP_SECRET": "wrong"})
    assert bad.code == 3
    assert "Traceback" not in bad.stderr


def test_a_proxy_asking_for_credentials_is_not_taken_for_a_wrong_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probed: list[str] = []

    def probe(endpoint: Endpoint, *_: object) -> int:
        probed.append(endpoint.base_url)
        raise ProxyCredentialsError("the proxy asked for credentials (HTTP 407)")

    monkeypatch.setattr(check, "_probe", probe)
    with pytest.raises(ProxyCredentialsError) as info:
        check.check_credentials(CREDS, "us", None, DAY)
    assert info.value.exit_code == ExitCode.CREDENTIALS
    assert probed == [client.REGION_HOSTS["us"]]  # no other region was asked
