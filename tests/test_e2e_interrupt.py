"""SIGINT/SIGTERM mid-export: the right exit code, whole lines, no traceback, no spool left.

The server holds the responses of the later days mid-body, so the signal
surely comes while downloads are under way and the run could not have
finished without it. "Prompt" is what the exit itself proves: the held
responses never end, so a run that waited for its downloads would not exit
at all (the wait's timeout is a guard against such a hang, not a measurement).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.pipeline import SPOOL_QUEUE
from tests.helpers import (
    HOLD_SERVER,
    PATIENCE,
    HeldDataset,
    ServerFactory,
    clean_env,
    cli_command,
    service_account_env,
    wait_until,
)

# Windows has neither signal to send: Ctrl-Break is in tests/test_windows_only.py.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

START, END = dt.date(2024, 3, 1), dt.date(2024, 4, 30)
WORKERS = 4


def export_args(url: str, *extra: str) -> list[str]:
    return [*cli_command(), "export", "--api-url", url, "--from", START.isoformat(),
            "--to", END.isoformat(), "--chunk-days", "1", "--workers", str(WORKERS), *extra]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_stdout(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    hold_from = START + dt.timedelta(days=3)
    dataset = HeldDataset(seed=8, events_per_day=400, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    spool = tmp_path / "tmp"
    spool.mkdir()
    out = tmp_path / "out.ndjson"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    try:
        with out.open("wb") as stdout:
            proc = subprocess.Popen(export_args(server.url), stdout=stdout,
                                    stderr=subprocess.PIPE, env=env)
            # Mid-export: the first day is on stdout and every worker is
            # inside a response that cannot end.
            wait_until(lambda: out.stat().st_size > 0, "the first day on stdout", proc=proc)
            dataset.wait_held(WORKERS)
            proc.send_signal(signum)
            _, stderr_bytes = proc.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    stderr = stderr_bytes.decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "to fetch what is missing" in stderr and "mpexport export --from" in stderr
    # Its output was redirected: the resume must add to the file, not empty it.
    advice = stderr.split("to fetch what is missing, run:\n", 1)[1].splitlines()
    assert advice[0] == ("mpexport: append the output of the command below to this run's: "
                         "'>> FILE', not '> FILE' (which overwrites it), or add --output FILE "
                         "--append")
    assert advice[1].startswith("  mpexport export --from ") and len(advice) == 2
    # Whole lines, in order, of the days before the held ones only.
    data = out.read_bytes()
    expected = b"".join(dataset.lines_for_range(START, hold_from - dt.timedelta(days=1)))
    assert data and data.endswith(b"\n") and expected.startswith(data)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_export_to_duckdb(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    import duckdb

    hold_from = START + dt.timedelta(days=10)
    dataset = HeldDataset(seed=9, events_per_day=400, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    spool = tmp_path / "tmp"
    spool.mkdir()
    db = tmp_path / "events.duckdb"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    try:
        proc = subprocess.Popen(export_args(server.url, "--db", str(db)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Every worker is inside a held response (days 10-13). A worker takes
        # a day only with a spool slot (workers + SPOOL_QUEUE of them), and
        # the loader gives a slot back once it committed that day: so at
        # least 14 - 8 days are in the database now.
        dataset.wait_held(WORKERS)
        proc.send_signal(signum)
        stdout, stderr_bytes = proc.communicate(timeout=PATIENCE)
    finally:
        dataset.release()
    stderr = stderr_bytes.decode()
    assert proc.returncode == code, stderr
    assert stdout == b""
    assert "Traceback" not in stderr
    assert "run the same command again" in stderr
    assert list(spool.iterdir()) == []
    with duckdb.connect(str(db), read_only=True) as con:
        loaded = con.execute("SELECT from_date FROM _mpexport_chunks").fetchall()
        rows = con.execute(
            "SELECT event, distinct_id, epoch(time)::BIGINT, insert_id FROM events"
        ).fetchall()
    days = {row[0] for row in loaded}
    committed_at_least = 10 + WORKERS - (WORKERS + SPOOL_QUEUE)
    assert committed_at_least <= len(days) and max(days) < hold_from
    expected = set().union(*(mixpanel_keys(dataset.lines_for_day(d)) for d in days))
    assert set(rows) == expected and len(rows) == len(expected)


# -- a second signal: this run's additions undone, then an exit at once ---------------

# What the run prints at the first signal: a literal here, so the test also pins the text.
FIRST_NOTICE = "mpexport: {name}: stopping cleanly; a second {name} quits at once\n"


def _stderr_with_room_for(room: int) -> tuple[int, int, bytes]:
    """A pipe for a run's stderr that takes exactly ``room`` more bytes, then blocks its writer.

    One page of capacity (Linux ``F_SETPIPE_SZ``), filled but for ``room``
    bytes: the first-signal notice fits exactly, and the run's next stderr
    write (the stop report, printed before any resume command) blocks until
    this test reads. So the second signal surely comes while the first stop
    is being handled, however fast the machine. Returns (read end, write end,
    the filler).
    """
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, os.sysconf("SC_PAGE_SIZE"))
    capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    filler = b"." * (capacity - room)
    assert os.write(write_end, filler) == len(filler)
    return read_end, write_end, filler


def _pipe_is_full(read_end: int, capacity: int) -> bool:
    import array
    import fcntl
    import termios

    queued = array.array("i", [0])
    fcntl.ioctl(read_end, termios.FIONREAD, queued)
    return queued[0] >= capacity


def _read_to_end(read_end: int) -> bytes:
    """Everything the run writes to the pipe until it exits (the timeout guards a hang)."""
    import select

    data = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], PATIENCE)
        assert ready, "the run neither wrote to stderr nor exited"
        chunk = os.read(read_end, 65536)
        if not chunk:
            return data
        data += chunk


def _signal_twice(args: list[str], env: dict[str, str], dataset: HeldDataset,
                  started: Callable[[], bool], signum: int) -> tuple[int, bytes]:
    """Run ``args``; once ``started()`` and every worker is held, signal, then signal again.

    The second signal is sent once the first one's notice is on stderr, and
    (see :func:`_stderr_with_room_for`) before the run could print a resume
    command. Returns the exit code and stderr after the filler.
    """
    name = signal.Signals(signum).name
    notice = FIRST_NOTICE.format(name=name).encode()
    read_end, write_end, filler = _stderr_with_room_for(len(notice))
    proc = None
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=write_end, env=env)
        os.close(write_end)
        write_end = -1
        wait_until(started, "the first days in the file", proc=proc)
        dataset.wait_held(WORKERS)
        proc.send_signal(signum)
        wait_until(lambda: _pipe_is_full(read_end, len(filler) + len(notice)),
                   "the first signal's notice on stderr", proc=proc)
        proc.send_signal(signum)
        stderr = _read_to_end(read_end)
        code = proc.wait(timeout=PATIENCE)
    finally:
        dataset.release()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert stderr.startswith(filler + notice), stderr[len(filler):]
    return code, stderr[len(filler) + len(notice):]


CAN_SIZE_PIPES = sys.platform.startswith("linux")


@pytest.mark.skipif(not CAN_SIZE_PIPES, reason="sizes a pipe with F_SETPIPE_SZ (Linux)")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_leaves_an_appended_file_as_it_was_before_the_run(
    make_server: ServerFactory, tmp_path: Path, signum: int, code: int
) -> None:
    """No resume command is printed, so the file must suit the same command run again."""
    dataset = HeldDataset(seed=10, events_per_day=400, hold_from=START + dt.timedelta(days=3))
    server = make_server(dataset, **HOLD_SERVER)
    folder, spool = tmp_path / "out", tmp_path / "tmp"
    folder.mkdir()
    spool.mkdir()
    target = folder / "events.ndjson"
    before = b"".join(dataset.lines_for_day(START - dt.timedelta(days=1)))
    target.write_bytes(before)
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    args = export_args(server.url, "--output", str(target), "--append", "--quiet")
    exit_code, stderr = _signal_twice(args, env, dataset,
                                      lambda: target.stat().st_size > len(before), signum)
    name = signal.Signals(signum).name
    assert exit_code == code, stderr
    assert stderr.decode() == (f"mpexport: {name} again: quit at once; {target} holds what it "
                               "held before this run (run the same command again)\n")
    assert target.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [target.name]  # no temp file


@pytest.mark.skipif(not CAN_SIZE_PIPES, reason="sizes a pipe with F_SETPIPE_SZ (Linux)")
def test_a_second_sigint_leaves_no_new_output_file_nor_its_temp_file(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = HeldDataset(seed=11, events_per_day=400, hold_from=START + dt.timedelta(days=3))
    server = make_server(dataset, **HOLD_SERVER)
    folder, spool = tmp_path / "out", tmp_path / "tmp"
    folder.mkdir()
    spool.mkdir()
    target = folder / "new.ndjson"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    args = export_args(server.url, "--output", str(target), "--quiet")

    def temp_file_growing() -> bool:
        return any(p.stat().st_size > 0 for p in folder.iterdir())

    exit_code, stderr = _signal_twice(args, env, dataset, temp_file_growing, signal.SIGINT)
    assert exit_code == 130, stderr
    assert stderr.decode() == (f"mpexport: SIGINT again: quit at once; {target} was left as "
                               "it was before this run (run the same command again)\n")
    assert list(folder.iterdir()) == []  # neither the file nor its temp file
