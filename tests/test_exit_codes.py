"""Every way a run ends: the process's exit code and the summary JSON's are the same code."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mpexport import runner
from mpexport.cli.main import run
from mpexport.fakeserver import Dataset, FakeMixpanelServer
from mpexport.fakeserver import ServerConfig as FakeConfig
from mpexport.sinks.duckdb.lock import database_lock
from tests.helpers import (
    TODAY,
    clean_env,
    cli_command,
    run_cli,
    service_account_env,
    wait_until,
)

# The shared server fails 2024-05-02 on every attempt (see the fixture).
RANGE = ["--from", "2024-05-01", "--to", "2024-05-04"]
Outcome = Callable[[str, Path], int]


def _cli(args: list[str], env: dict[str, str] | None = None) -> int:
    return run_cli(args, env=env).code


def complete(url: str, summary: Path) -> int:
    return _cli(["export", "--api-url", url, "--from", "2024-05-05", "--to", "2024-05-08",
                 "--summary-json", str(summary)])


def partial(url: str, summary: Path) -> int:
    return _cli(["export", "--api-url", url, *RANGE, "--chunk-days", "1", "--retries", "0",
                 "--summary-json", str(summary)])


def usage_from_click(url: str, summary: Path) -> int:
    return _cli(["export", "--api-url", url, "--from", "2024-05-01", "--workers", "x",
                 "--summary-json", str(summary)])


def usage_from_mpexport(url: str, summary: Path) -> int:
    return _cli(["export", "--api-url", url, "--from", "2024-05-09", "--to", "2024-05-01",
                 "--summary-json", str(summary)])


def credentials(url: str, summary: Path) -> int:
    return _cli(["export", "--api-url", url, *RANGE, "--summary-json", str(summary)],
                env={"MP_SECRET": "wrong"})


def locked(url: str, summary: Path) -> int:
    db = summary.with_name("locked.duckdb")
    with database_lock(db):
        return _cli(["export", "--api-url", url, *RANGE, "--db", str(db),
                     "--summary-json", str(summary)])


def closed_pipe(url: str, summary: Path) -> int:
    return _closed_pipe(["export", "--api-url", url, "--from", "2024-03-01", "--to",
                         "2024-04-30", "--chunk-days", "1", "--summary-json", str(summary)])


def closed_pipe_dry_run(url: str, summary: Path) -> int:
    return _closed_pipe(["export", "--api-url", url, "--from", "2020-01-01", "--to",
                         "2024-04-30", "--chunk-days", "1", "--dry-run",
                         "--summary-json", str(summary)])


def _closed_pipe(args: list[str]) -> int:
    proc = subprocess.Popen([*cli_command(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=clean_env(service_account_env()))
    assert proc.stdout is not None
    assert proc.stdout.read(100)  # the reader takes a little, then goes away (`| head`)
    proc.stdout.close()
    return proc.wait(timeout=120)


CASES: dict[str, tuple[Outcome, int]] = {
    "complete": (complete, 0),
    "partial": (partial, 1),
    "usage (click)": (usage_from_click, 2),
    "usage (mpexport)": (usage_from_mpexport, 2),
    "credentials": (credentials, 3),
    "locked": (locked, 4),
    "closed pipe": (closed_pipe, 0),
    "closed pipe, dry run": (closed_pipe_dry_run, 0),
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMixpanelServer]:
    with FakeMixpanelServer(FakeConfig(dataset=Dataset(seed=5, events_per_day=400),
                                       today=TODAY,
                                       fail_dates=frozenset({dt.date(2024, 5, 2)}))) as fake:
        yield fake


def summary_code(summary: Path) -> int:
    report = json.loads(summary.read_text())
    code = report["exit_code"]
    assert isinstance(code, int)
    return code


@pytest.mark.parametrize("name", list(CASES))
def test_process_and_summary_agree(server: FakeMixpanelServer, tmp_path: Path,
                                   name: str) -> None:
    outcome, expected = CASES[name]
    summary = tmp_path / "summary.json"
    code = outcome(server.url, summary)
    assert code == expected
    assert summary_code(summary) == code


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_codes_agree(tmp_path: Path, signum: int, expected: int) -> None:
    # Requests that hang at the server: the run is surely mid-way when the signal comes.
    with FakeMixpanelServer(FakeConfig(dataset=Dataset(seed=5, events_per_day=50),
                                       today=TODAY, ttfb=20.0)) as slow:
        summary = tmp_path / "summary.json"
        proc = subprocess.Popen(
            [*cli_command(), "export", "--api-url", slow.url, *RANGE,
             "--summary-json", str(summary)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=clean_env(service_account_env()),
        )
        wait_until(lambda: len(slow.stats), "the export's first request", proc=proc)
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    assert code == expected
    assert summary_code(summary) == code


def test_internal_error_is_70_with_one_line(
    server: FakeMixpanelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bug is neither "partial" nor "bad usage": 70, one line, no traceback."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "_run_pipeline", broken)
    for key, value in service_account_env().items():
        monkeypatch.setenv(key, value)
    summary = tmp_path / "summary.json"
    code = run(["export", "--api-url", server.url, *RANGE, "--summary-json", str(summary)])
    assert code == 70
    assert summary_code(summary) == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_check_network_failure_is_not_bad_usage(tmp_path: Path) -> None:
    """No server answers: the check failed after retries (1), the command line was fine."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    result = run_cli(["check", "--api-url", f"http://127.0.0.1:{port}"], timeout=300)
    assert result.code == 1, result.stderr
    assert "did not answer" in result.stderr


def test_loader_failure_names_committed_days_and_the_resume_command(
    server: FakeMixpanelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full disk on the third chunk: exit 1, the days kept, a command that loads the rest."""
    import shlex

    import duckdb

    from mpexport.sinks.duckdb import sink as sink_duckdb

    real_load = sink_duckdb.load_chunk
    loads: list[dt.date] = []

    def disk_full_on_third(con: object, completed: object, **kwargs: object) -> object:
        loads.append(completed.chunk.from_date)  # type: ignore[attr-defined]
        if len(loads) == 3:
            raise duckdb.IOException("could not write: No space left on device")
        return real_load(con, completed, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sink_duckdb, "load_chunk", disk_full_on_third)
    for key, value in service_account_env().items():
        monkeypatch.setenv(key, value)
    db = tmp_path / "events.duckdb"
    summary = tmp_path / "summary.json"
    code = run(["export", "--api-url", server.url, "--from", "2024-05-05", "--to", "2024-05-09",
                "--chunk-days", "1", "--workers", "1", "--db", str(db),
                "--summary-json", str(summary)])
    err = capsys.readouterr().err
    assert code == 1 and summary_code(summary) == 1
    assert "No space left on device" in err
    assert "committing 2 chunks (days 2024-05-05..2024-05-06)" in err
    [rerun] = json.loads(summary.read_text())["rerun"]
    assert rerun.startswith("mpexport export --from 2024-05-07 --to 2024-05-09 ")
    assert rerun in err

    monkeypatch.setattr(sink_duckdb, "load_chunk", real_load)
    resumed = run([*shlex.split(rerun)[1:], "--api-url", server.url])
    assert resumed == 0
    with duckdb.connect(str(db), read_only=True) as con:
        days = con.execute("SELECT DISTINCT CAST(time AS DATE) FROM events ORDER BY 1").fetchall()
    assert [d for (d,) in days] == [dt.date(2024, 5, n) for n in range(5, 10)]
