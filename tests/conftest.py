"""Fixtures only: per-test isolation and the built-in server on loopback.

What tests share besides fixtures (the CLI runner, environments, expected
output, ways to wait) is in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from mpexport.fakeserver import Dataset, FakeMixpanelServer, ServerConfig
from tests.helpers import TODAY, ServerFactory
from tests.s3server import S3Server, running_s3_server

# By default Hypothesis fails an example that takes longer than 200 ms, and
# a test whose examples are slow to generate: wall-clock limits that a busy
# machine breaks. Tests that want a deadline set one themselves. (A test's
# own suppress_health_check replaces this list.)
settings.register_profile("mpexport", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mpexport")


@pytest.fixture(autouse=True)
def without_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear the shell's MP_* and MPEXPORT_* variables: the suite passes whatever a user exports.

    MPEXPORT_TEST_* are the harness's own (which executable the suite runs).
    """
    import os

    for name in list(os.environ):
        if name.startswith(("MP_", "MPEXPORT_")) and not name.startswith("MPEXPORT_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def isolated_state(without_user_settings: None, tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point mpexport's state (the hourly budget) at a fresh directory per test."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("MPEXPORT_STATE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def isolated_config(without_user_settings: None, tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point mpexport's config dir at a fresh, empty directory: never the user's profiles."""
    path = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("MPEXPORT_CONFIG_DIR", str(path))
    monkeypatch.delenv("MPEXPORT_PROFILE", raising=False)
    return path


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start fake servers with the given config; all are closed after the test."""
    servers: list[FakeMixpanelServer] = []

    def factory(dataset: Dataset | None = None, **config: Any) -> FakeMixpanelServer:
        config.setdefault("today", TODAY)
        server = FakeMixpanelServer(ServerConfig(dataset=dataset or Dataset(seed=7), **config))
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto) on 127.0.0.1 with an empty bucket."""
    with running_s3_server() as server:
        yield server
