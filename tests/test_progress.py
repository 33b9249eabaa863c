"""Progress output modes: bars on a terminal, status lines for cron logs, nothing when quiet."""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

from mpexport.cli.progress import BarProgress
from mpexport.events import BytesReceived, ChunkDone, ChunkRetry, PlanReady, WaitingForBudget
from mpexport.model import Chunk, CompletedChunk
from tests.helpers import ServerFactory, run_cli, wait_until

CHUNKS = tuple(Chunk(i, dt.date(2024, 1, 1 + i), dt.date(2024, 1, 1 + i)) for i in range(4))


def done(i: int, lines: int) -> ChunkDone:
    return ChunkDone(CompletedChunk(CHUNKS[i], Path("x"), lines, 100, "0" * 64, 1, 0.1))


def ticker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "mpexport-progress"}


def test_lines_mode_prints_status_every_interval() -> None:
    stream = io.StringIO()
    before = ticker_threads()
    progress = BarProgress(stream, mode="lines", interval=0.05)
    progress(PlanReady(CHUNKS, ()))
    progress(BytesReceived(1000))
    progress(done(0, 12))
    # Two lines: the timer repeats (it did not print once and stop).
    wait_until(lambda: stream.getvalue().count("\n") >= 2, "two status lines")
    (ticker,) = ticker_threads() - before
    progress.close()
    ticker.join(timeout=60)
    assert not ticker.is_alive(), "close() did not stop the timer"
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("mpexport: 1/4 chunks, 12 events") for line in lines)


def test_quiet_mode_prints_nothing() -> None:
    stream = io.StringIO()
    before = ticker_threads()
    progress = BarProgress(stream, mode="quiet", interval=0.01)
    progress(PlanReady(CHUNKS, ()))
    progress(ChunkRetry(CHUNKS[0], 1, "HTTP 503", 1.0))
    progress(WaitingForBudget(125, "hourly budget"))
    # No timer was started that could print later.
    assert ticker_threads() - before == set()
    progress.close()
    assert stream.getvalue() == ""


def test_notes_for_retries_and_waits() -> None:
    stream = io.StringIO()
    progress = BarProgress(stream, mode="lines", interval=60)
    progress(PlanReady(CHUNKS, ()))
    progress(ChunkRetry(CHUNKS[1], 1, "HTTP 503", 1.5))
    progress(WaitingForBudget(125, "hourly budget"))
    progress.close()
    text = stream.getvalue()
    assert "2024-01-02: attempt 1 failed (HTTP 503); retrying in 1.5s" in text
    assert "waiting 2m05s for Mixpanel's hourly budget" in text


def test_bars_mode_writes_only_to_its_stream() -> None:
    stream = io.StringIO()
    progress = BarProgress(stream, mode="bars")
    progress(PlanReady(CHUNKS, ()))
    for i in range(4):
        progress(done(i, 5))
    progress.close()
    assert "chunks" in stream.getvalue() and "4/4" in stream.getvalue()


def test_notes_survive_a_legacy_code_page() -> None:
    """A console that cannot encode a message gets escapes, not a crash."""
    import subprocess
    import sys

    from tests.helpers import clean_env

    code = (
        "import sys, datetime as dt\n"
        "from mpexport.cli.main import _tolerant_stderr\n"
        "from mpexport.events import ChunkRetry\n"
        "from mpexport.model import Chunk\n"
        "from mpexport.cli.progress import BarProgress\n"
        "_tolerant_stderr()\n"
        "p = BarProgress(sys.stderr, mode='lines')\n"
        "p(ChunkRetry(Chunk(0, dt.date(2024, 1, 1), dt.date(2024, 1, 1)), 1,"
        " 'HTTP 503: \\u00dcberlastet \\U0001f600', 1.0))\n"
    )
    env = clean_env({"PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"})
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert b"\\U0001f600" in proc.stderr


def segments(text: str) -> list[str]:
    """What a terminal shows of ``text`` line by line: escapes dropped, split at CR and LF."""
    import re

    return re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text))


HOURLY_WAIT = WaitingForBudget(3451, "hourly budget", used=60, limit=60, by_others=48,
                               until=1_719_741_600.0)


def test_an_hourly_wait_says_who_spent_the_budget_and_until_when() -> None:
    stream = io.StringIO()
    progress = BarProgress(stream, mode="lines", interval=60)
    progress(PlanReady(CHUNKS, ()))
    progress(HOURLY_WAIT)
    progress(WaitingForBudget(3451, "hourly budget", used=7, limit=7, by_others=0,
                              until=1_719_741_600.0))
    progress.close()
    at = dt.datetime.fromtimestamp(1_719_741_600.0).strftime("%H:%M:%S")
    hint = ("(for a proxy or a test server with other limits, set --hourly-limit or "
            "MPEXPORT_HOURLY_LIMIT)")
    assert stream.getvalue().splitlines() == [
        "waiting 57m31s for Mixpanel's hourly budget: 60 of the 60 queries allowed per hour "
        "were started in the last hour, 48 by other runs of this project on this machine; "
        f"the next can start at {at} {hint}",
        "waiting 57m31s for Mixpanel's hourly budget: 7 of the 7 queries allowed per hour "
        f"were started in the last hour, all by this run; the next can start at {at} {hint}",
    ]
    assert progress.hourly_wait == WaitingForBudget(3451, "hourly budget", used=7, limit=7,
                                                    by_others=0, until=1_719_741_600.0)


def test_the_eta_counts_the_wait_for_the_budget() -> None:
    stream = io.StringIO()
    progress = BarProgress(stream, mode="bars")
    progress(PlanReady(CHUNKS, ()))
    before = stream.getvalue()
    progress(HOURLY_WAIT)
    drawn = [s for s in segments(stream.getvalue()[len(before):]) if s.startswith("chunks")]
    progress.close()
    # No chunk done yet: the wait, and the rest still unknown.
    assert drawn[-1].endswith("| 0/4 [00:00<57:31+, ?chunk/s]")


def test_byte_counts_say_which_bytes() -> None:
    stream = io.StringIO()
    progress = BarProgress(stream, mode="bars")
    progress(PlanReady(CHUNKS, ()))
    progress(BytesReceived(874_000))
    progress.close()
    # Decimal units, as the summary's MB: 874 kB compressed, not 874 KiB.
    assert any(s.startswith("received (compressed): 874kB [") for s in segments(
        stream.getvalue()))
    lines = BarProgress(io.StringIO(), mode="lines")
    assert lines.status_line().startswith("mpexport: 0/0 chunks, 0 events, 0.0 MB/s received, ")


def test_log_lines_go_above_the_bars() -> None:
    """-v's request lines, logged by worker threads, never land inside a bar."""
    import logging

    from mpexport.cli.options import configure_logging

    stream = io.StringIO()
    progress = BarProgress(stream, mode="bars")
    configure_logging(verbose=True, quiet=False, write=progress.write)
    try:
        progress(PlanReady(CHUNKS, ()))
        progress(BytesReceived(1000))
        worker = threading.Thread(target=logging.getLogger("mpexport.mixpanel.fetch").info,
                                  args=("GET %s -> %d", "host/api/2.0/export?from_date=x", 200))
        worker.start()
        worker.join()
        progress(done(0, 5))
        progress.close()
    finally:
        configure_logging(verbose=False, quiet=False)
    assert "mpexport: GET host/api/2.0/export?from_date=x -> 200" in segments(stream.getvalue())


def test_verbose_bars_against_the_server(make_server: ServerFactory) -> None:
    """Bars forced on: request lines stand above them, with key=value parameters; sizes labelled."""
    from mpexport.fakeserver import DEMO_PROJECT_ID, Dataset

    server = make_server(Dataset(seed=41, events_per_day=20))
    result = run_cli(["export", "--api-url", server.url, "--from", "2024-01-01", "--to",
                      "2024-01-01", "-v", "--progress"])
    assert result.code == 0, result.stderr
    shown = segments(result.stderr)
    host = server.url.split("://", 1)[1]
    request = (f"mpexport: GET {host}/api/2.0/export?from_date=2024-01-01&to_date=2024-01-01"
               f"&project_id={DEMO_PROJECT_ID} -> ")
    assert [s for s in shown if request in s] == [
        s for s in shown if s.startswith(request)], shown
    assert any(s.startswith(request + "200, first byte after ") for s in shown)
    assert any(s.startswith(request + "complete: 20 lines, ") for s in shown)
    assert any(s.startswith("received (compressed): ") for s in shown)
    # The summary's size is the NDJSON written, here all of stdout.
    assert (f"chunks, {len(result.stdout) / 1e6:.1f} MB written, " in shown[-2]), shown[-2]
