"""Progress output modes: bars on a terminal, status lines for cron logs, nothing when quiet."""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

from mpexport.cli.progress import BarProgress
from mpexport.events import BytesReceived, ChunkDone, ChunkRetry, PlanReady, WaitingForBudget
from mpexport.model import Chunk, CompletedChunk
from tests.helpers import wait_until

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
