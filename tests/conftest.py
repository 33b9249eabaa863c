"""Shared fixtures: the built-in server on loopback and a runner for the real CLI.

The CLI runs as a subprocess. ``MPEXPORT_TEST_COMMAND`` (shell words) replaces
``python -m mpexport``, so the same tests can run against a frozen build.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mpexport.fakeserver import (
    DEMO_API_SECRET,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    Dataset,
    FakeMixpanelServer,
    ServerConfig,
)

# A fixed "today" keeps ranges and the server's future-date check stable.
TODAY = dt.date(2024, 6, 30)
SECRET_MARKERS = (DEMO_SECRET, DEMO_API_SECRET)


def cli_command() -> list[str]:
    """The command that runs mpexport: the test override or ``python -m mpexport``."""
    override = os.environ.get("MPEXPORT_TEST_COMMAND")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "mpexport"]


def service_account_env() -> dict[str, str]:
    """Environment with the demo service account."""
    return {
        "MP_USERNAME": DEMO_USERNAME,
        "MP_SECRET": DEMO_SECRET,
        "MP_PROJECT_ID": str(DEMO_PROJECT_ID),
    }


# The built-in server enforces no limits unless a test asks it to, so the
# client's pacing is lifted too unless a test sets it.
UNPACED = {"MPEXPORT_QPS_LIMIT": "1000", "MPEXPORT_HOURLY_LIMIT": "1000000"}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the user's MP_*/MPEXPORT_* settings, plus ``extra``.

    Keeps the per-test state dir; lifts client pacing unless ``extra`` sets it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MP_", "MPEXPORT_"))}
    env["PYTHONUTF8"] = "1"
    env["MPEXPORT_STATE_DIR"] = os.environ["MPEXPORT_STATE_DIR"]
    env["MPEXPORT_CONFIG_DIR"] = os.environ["MPEXPORT_CONFIG_DIR"]
    env.update(UNPACED)
    env.update(extra or {})
    return env


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point mpexport's state (the hourly budget) at a fresh directory per test."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("MPEXPORT_STATE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def isolated_config(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point mpexport's config dir at a fresh, empty directory: never the user's profiles."""
    path = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("MPEXPORT_CONFIG_DIR", str(path))
    monkeypatch.delenv("MPEXPORT_PROFILE", raising=False)
    return path


@dataclass
class CliResult:
    """What a CLI run left behind."""

    code: int
    stdout: bytes
    stderr: str

    def lines(self) -> list[bytes]:
        return self.stdout.splitlines(keepends=True)


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    credentials: bool = True,
    timeout: float = 120,
    cwd: Path | None = None,
) -> CliResult:
    """Run the CLI to completion and capture both streams."""
    extra = service_account_env() if credentials else {}
    extra.update(env or {})
    proc = subprocess.run(
        [*cli_command(), *args],
        env=clean_env(extra),
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


ServerFactory = Callable[..., FakeMixpanelServer]


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


def expected_stdout(dataset: Dataset, chunks: Sequence[tuple[dt.date, dt.date]]) -> bytes:
    """The exact bytes an export of these chunks writes: chunk by chunk, in order."""
    return b"".join(b"".join(dataset.lines_for_range(a, b)) for a, b in chunks)


def day_chunks(start: dt.date, end: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    """The (from, to) pairs of a plan with ``days`` per chunk."""
    pairs = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + dt.timedelta(days=days - 1))
        pairs.append((cursor, last))
        cursor = last + dt.timedelta(days=1)
    return pairs


def stored_keys(db: Path, table: str = "events") -> list[tuple[str, str, int, str]]:
    """Mixpanel keys (event, distinct_id, epoch seconds, $insert_id) of a table's rows."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            f"SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM {table}"
        ).fetchall()
    return [(e, d, t, i) for e, d, t, i in rows]
