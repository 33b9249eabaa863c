"""Pacing against a server that enforces Mixpanel's limits: exact output, plans that fit."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
from collections import Counter

import pytest

from mpexport.fakeserver import Dataset
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    day_chunks,
    expected_stdout,
    run_cli,
    service_account_env,
)

MIXPANEL_PACE = {"MPEXPORT_QPS_LIMIT": "3", "MPEXPORT_HOURLY_LIMIT": "60"}


def test_forty_one_day_chunks_on_ten_workers_paced_and_exact(
    make_server: ServerFactory,
) -> None:
    """Ten workers against a server enforcing 3 queries/s: exact, each chunk fetched once.

    Zero 429s is a timing property (arrivals bunch up on a loaded machine),
    so it is measured by `make bench` (yardstick: 429 responses); here a 429,
    if one comes, must be waited out without spending a retry (--retries 0).
    """
    dataset = Dataset(seed=31, events_per_day=30)
    server = make_server(dataset, qps_limit=3)  # 429 without Retry-After
    start, end = dt.date(2024, 3, 1), dt.date(2024, 4, 9)
    result = run_cli(
        ["export", "--api-url", server.url, "--from", start.isoformat(), "--to",
         end.isoformat(), "--chunk-days", "1", "--workers", "10", "--retries", "0"],
        env=MIXPANEL_PACE,
    )
    assert result.code == 0, result.stderr
    assert Counter(result.stdout.splitlines(keepends=True)) == Counter(
        dataset.lines_for_range(start, end)
    )
    assert server.stats.count(status=200) == 40


def test_a_year_with_the_default_plan_fits_the_hourly_limit(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=32, events_per_day=5)
    server = make_server(dataset, qps_limit=3, hourly_limit=60)
    start, end = dt.date(2023, 1, 1), dt.date(2023, 12, 31)
    result = run_cli(
        ["export", "--api-url", server.url, "--from", start.isoformat(), "--to",
         end.isoformat()],
        env=MIXPANEL_PACE,
    )
    assert result.code == 0, result.stderr
    assert Counter(result.stdout.splitlines(keepends=True)) == Counter(
        dataset.lines_for_range(start, end)
    )
    # The plan fits the hour: at most 51 queries were answered (429s aside,
    # which depend on timing; see the test above).
    assert server.stats.count(status=200) <= 51


def test_a_second_run_in_the_same_hour_plans_with_what_is_left(
    make_server: ServerFactory,
) -> None:
    server = make_server(Dataset(seed=33, events_per_day=5))
    env = {"MPEXPORT_QPS_LIMIT": "100", "MPEXPORT_HOURLY_LIMIT": "60"}
    year = ["export", "--api-url", server.url, "--from", "2023-01-01", "--to", "2023-12-31"]
    # 20 queries spent: the year is planned within what is left of the hour.
    first = run_cli(["export", "--api-url", server.url, "--from", "2024-01-01", "--to",
                     "2024-01-20", "--chunk-days", "1"], env=env)
    assert first.code == 0, first.stderr
    dry = run_cli([*year, "--dry-run"], env=env)
    text = dry.stdout.decode()
    assert "20 queries used in the last hour" in text
    planned = int(text.splitlines()[-2].split()[0])
    assert 10 <= planned <= int((60 - 20) * 0.85)
    # The hour nearly spent: rather than a few huge queries, plan as for a
    # fresh hour and say how long the budget makes it wait.
    assert run_cli(year, env=env).code == 0
    dry = run_cli([*year, "--dry-run"], env=env)
    text = dry.stdout.decode()
    planned = int(text.splitlines()[-2].split()[0])
    assert planned >= 10
    assert "can start in 1h" in text


def test_429_with_retry_after_is_honoured_without_spending_retries(
    make_server: ServerFactory,
) -> None:
    dataset = Dataset(seed=34, events_per_day=20)
    server = make_server(dataset, faults=("http429",), fault_attempts=2, retry_after=1)
    result = run_cli(
        ["export", "--api-url", server.url, "--from", "2024-01-01", "--to", "2024-01-06",
         "--chunk-days", "2", "--retries", "0"],
    )
    # --retries 0 would fail a chunk on its first real failure; 429s don't count.
    assert result.code == 0, result.stderr
    assert server.stats.count(status=429) == 6
    assert Counter(result.stdout.splitlines(keepends=True)) == Counter(
        dataset.lines_for_range(dt.date(2024, 1, 1), dt.date(2024, 1, 6))
    )


def test_truncating_chunk_is_split_down_to_days(make_server: ServerFactory) -> None:
    dataset = Dataset(seed=35, events_per_day=40)
    # Every query's first two attempts come back truncated: a 4-day chunk is
    # halved, then halved again, and each day then succeeds on its third try.
    server = make_server(dataset, faults=("terminated_early_line",), fault_attempts=2)
    result = run_cli(
        ["export", "--api-url", server.url, "--from", "2024-01-01", "--to", "2024-01-04",
         "--chunk-days", "4"],
    )
    assert result.code == 0, result.stderr
    assert "keeps failing" in result.stderr
    assert result.stdout == b"".join(
        b"".join(dataset.lines_for_day(dt.date(2024, 1, d))) for d in range(1, 5)
    )


def test_two_runs_of_one_project_share_the_per_second_limit(
    make_server: ServerFactory,
) -> None:
    """Two exports of one project at once stay within 3 queries/s together.

    Every response is held mid-body until both runs have all three workers
    waiting on one: then each run has started 3 of its 6 chunks, and on the
    release all six workers are free at the same moment with 3 chunks left
    each. Paced per process, both would start 3 at once (3+ answers 429);
    sharing the starts through the state file lets only 3 go per window.
    """
    first, second = dt.date(2024, 3, 1), dt.date(2024, 4, 1)
    days = 6
    dataset = HeldDataset(seed=36, events_per_day=60, hold_from=first)
    # Retry-After 1: a 429, if timing lets one through, costs a second, not a backoff.
    server = make_server(dataset, qps_limit=3, retry_after=1, **HOLD_SERVER)
    env = clean_env({**service_account_env(), **MIXPANEL_PACE})

    def start(day: dt.date) -> subprocess.Popen[bytes]:
        last = day + dt.timedelta(days=days - 1)
        return subprocess.Popen(
            [*cli_command(), "export", "--api-url", server.url, "--from", day.isoformat(),
             "--to", last.isoformat(), "--chunk-days", "1", "--workers", "3"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )

    runs = [start(first), start(second)]
    try:
        # Six responses held at once means both runs (3 workers each) have
        # three requests in flight: they overlap, whatever their start-up times.
        dataset.wait_held(2 * 3)
    finally:
        dataset.release()
    outputs = [run.communicate(timeout=PATIENCE) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()
    for day, (out, _) in zip((first, second), outputs, strict=True):
        last = day + dt.timedelta(days=days - 1)
        assert out == expected_stdout(dataset, day_chunks(day, last, 1))

    records = [r for r in server.stats.records() if r.path.rstrip("/") == "/api/2.0/export"]
    statuses = Counter(r.status for r in records)
    assert statuses[200] == 2 * days  # each chunk answered once
    # Arrivals can bunch up on a loaded machine (see the test above), so a
    # couple of 429s are tolerated; per-process pacing drew 3 or more here.
    assert statuses[429] <= 2, statuses
    assert set(statuses) <= {200, 429}, statuses
    # The server saw the runs' requests interleave: each run's window of
    # arrivals overlaps the other's.
    windows = []
    for day in (first, second):
        last = day + dt.timedelta(days=days - 1)
        arrivals = [r.arrival for r in records
                    if day <= dt.date.fromisoformat(r.params["from_date"]) <= last]
        windows.append((min(arrivals), max(arrivals)))
    (a_first, a_last), (b_first, b_last) = windows
    assert a_first < b_last and b_first < a_last, windows


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_run_waiting_for_the_hour_says_who_spent_it(make_server: ServerFactory) -> None:
    """Earlier runs spent the hour (a small limit, as a test server would set): the wait says so.

    The second run waits most of an hour; it is stopped once it said so, and
    its resume advice says when the budget frees up.
    """
    server = make_server(Dataset(seed=37, events_per_day=5))
    pace = {"MPEXPORT_QPS_LIMIT": "100", "MPEXPORT_HOURLY_LIMIT": "2"}
    days = ["--api-url", server.url, "--chunk-days", "1", "--to", "2024-01-02"]
    assert run_cli(["export", "--from", "2024-01-01", *days], env=pace).code == 0
    proc = subprocess.Popen(
        [*cli_command(), "export", "--from", "2024-01-01", *days],
        env=clean_env({**service_account_env(), **pace}), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        said = ""
        while not said.startswith("waiting "):
            said = proc.stderr.readline()
            assert said, "the run ended without waiting"
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=PATIENCE)
    finally:
        proc.kill()
    # The hour and its margin, less the moments since the first run: about an hour.
    assert re.fullmatch(
        r"waiting (1h00m|59m[0-5]\ds) for Mixpanel's hourly budget: 2 of the 2 queries "
        r"allowed per hour were started in the last hour, 2 by other runs of this project on this "
        r"machine; the next can start at (\d\d:\d\d:\d\d) \(for a proxy or a test server "
        r"with other limits, set --hourly-limit or MPEXPORT_HOURLY_LIMIT\)\n", said), said
    at = said.rsplit(" at ", 1)[1][:8]
    assert proc.returncode == 130, rest
    assert (f"mpexport: Mixpanel's hourly budget frees up at {at}; until then a resume "
            "waits for it\n") in rest, rest
    assert server.stats.count(status=200) == 2  # the first run's queries only
