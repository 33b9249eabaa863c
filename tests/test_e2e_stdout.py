"""End to end: the real CLI against the built-in server over loopback HTTP."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections import Counter

import pytest

from mpexport.fakeserver import FAULT_KINDS, Dataset
from tests.helpers import (
    SECRET_MARKERS,
    ServerFactory,
    clean_env,
    cli_command,
    day_chunks,
    expected_stdout,
    run_cli,
    service_account_env,
)

START = dt.date(2024, 5, 1)
END = dt.date(2024, 5, 27)  # 27 days: 9 chunks of 3 days


def export_args(server_url: str, start: dt.date = START, end: dt.date = END,
                *extra: str) -> list[str]:
    return ["export", "--api-url", server_url, "--from", start.isoformat(),
            "--to", end.isoformat(), *extra]


@pytest.mark.parametrize("workers", [1, 8])
def test_exact_output_with_every_fault_on_first_attempts(
    make_server: ServerFactory, workers: int
) -> None:
    dataset = Dataset(seed=11, events_per_day=120, quiet_every=5)
    server = make_server(dataset, faults=FAULT_KINDS)
    result = run_cli(export_args(server.url, START, END, "--chunk-days", "3",
                                 "--workers", str(workers)))
    assert result.code == 0, result.stderr
    chunks = day_chunks(START, END, 3)
    # Byte-exact: whole chunks, in date order, as the server sent them.
    assert result.stdout == expected_stdout(dataset, chunks)
    assert Counter(result.lines()) == Counter(dataset.lines_for_range(START, END))
    # Every fault kind really happened and was retried.
    applied = {r.fault for r in server.stats.records() if r.fault}
    assert applied == set(FAULT_KINDS)
    assert "Traceback" not in result.stderr
    assert f"{len(result.lines())} events in 9/9 chunks" in result.stderr


def test_gzip_and_plain_both_exact(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=3, events_per_day=50)
    server = make_server(dataset, gzip_threshold=10**9)  # never gzip
    result = run_cli(export_args(server.url, START, END, "--chunk-days", "7"))
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, END, 7))


def test_only_quiet_days_give_empty_output(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=3, events_per_day=50, quiet_every=1)
    server = make_server(dataset)
    result = run_cli(export_args(server.url, START, END, "--chunk-days", "7"))
    assert result.code == 0, result.stderr
    assert result.stdout == b""
    assert "0 events in 4/4 chunks" in result.stderr


def test_legacy_secret_and_event_filter(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=5, events_per_day=80)
    server = make_server(dataset)
    result = run_cli(
        export_args(server.url, START, END, "--event", "Purchase", "--event", "Sign Up"),
        credentials=False,
        env={"MP_API_SECRET": SECRET_MARKERS[1]},
    )
    assert result.code == 0, result.stderr
    expected = dataset.lines_for_range(START, END, events=["Purchase", "Sign Up"])
    assert expected and Counter(result.lines()) == Counter(expected)
    # Legacy secrets send no project_id.
    assert all("project_id" not in q for q in server.stats.queries())


def test_permanently_failing_chunk_exits_1_and_names_the_retry(
    make_server: ServerFactory,
) -> None:
    dataset = Dataset(seed=9, events_per_day=40)
    bad_day = dt.date(2024, 5, 10)  # inside chunk 2024-05-08..2024-05-14
    server = make_server(dataset, fail_dates=frozenset({bad_day}))
    result = run_cli(export_args(server.url, START, END, "--retries", "1", "--chunk-days", "7"))
    assert result.code == 1
    good = [c for c in day_chunks(START, END, 7) if not c[0] <= bad_day <= c[1]]
    assert result.stdout == expected_stdout(dataset, good)
    assert "2024-05-08..2024-05-14" in result.stderr
    assert "mpexport export --from 2024-05-08 --to 2024-05-14" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_credentials_exit_3_without_retry_storm(make_server: ServerFactory) -> None:
    server = make_server()
    result = run_cli(export_args(server.url), env={"MP_SECRET": "wrong-secret"})
    assert result.code == 3
    assert result.stdout == b""
    assert "Unable to authenticate request" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wrong-secret" not in result.stderr
    assert len(server.stats) <= 10  # at most one request per worker, never retried


def test_server_400_exits_2_with_its_message(make_server: ServerFactory) -> None:
    server = make_server()
    result = run_cli(export_args(server.url, START, END, "--where", "this is not valid"))
    assert result.code == 2
    assert result.stdout == b""
    assert "invalid where" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_credentials_exit_3_naming_variables(make_server: ServerFactory) -> None:
    server = make_server()
    result = run_cli(export_args(server.url), credentials=False)
    assert result.code == 3
    assert "MP_USERNAME" in result.stderr and "MP_API_SECRET" in result.stderr
    assert len(server.stats) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from", "2024-02-30", "--to", "2024-03-01"], "not a real calendar date"),
        (["--from", "2024-03-02", "--to", "2024-03-01"], "after"),
        (["--from", "soon", "--to", "today"], "not a date"),
        (["--from", "-3", "--to", "today", "--workers", "0"], "--workers"),
        (["--from", "-3", "--to", "today", "--workers", "100000"], "--workers"),
        (["--from", "-3", "--to", "today", "--limit", "100001"], "--limit"),
        (["--from", "-3", "--to", "today", "--region", "mars"], "mars"),
        (["--from", "-3", "--to", "today", "--api-url", "http://example.com"], "plain HTTP"),
    ],
)
def test_bad_input_exit_2_one_line(args: list[str], needle: str) -> None:
    result = run_cli(["export", *args])
    assert result.code == 2, result.stderr
    assert result.stdout == b""
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_head_ends_quietly(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=1, events_per_day=3000)
    server = make_server(dataset)
    proc = subprocess.Popen(
        [*cli_command(), *export_args(server.url, START, END, "--chunk-days", "1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(service_account_env()),
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(5)]
    proc.stdout.close()  # what `head -n 5` does after five lines
    stderr = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert all(line.endswith(b"\n") for line in head)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception" not in stderr


def test_forced_progress_keeps_stdout_pure(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=2, events_per_day=100)
    server = make_server(dataset, faults=("http503",))
    result = run_cli(export_args(server.url, START, END, "--progress", "--chunk-days", "7"))
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, END, 7))
    assert "chunks" in result.stderr and "events" in result.stderr


def test_dry_run_fetches_nothing(make_server: ServerFactory) -> None:
    server = make_server()
    result = run_cli(export_args(server.url, START, END, "--dry-run", "--chunk-days", "10"))
    assert result.code == 0, result.stderr
    text = result.stdout.decode()
    assert "3 chunks, 3 queries" in text
    assert "from_date=2024-05-21&to_date=2024-05-27" in text
    assert len(server.stats) == 0
    for secret in SECRET_MARKERS:
        assert secret not in text


def test_python_dash_m_and_version() -> None:
    result = run_cli(["--version"], credentials=False)
    assert result.code == 0
    assert b"mpexport" in result.stdout
