"""Windows behaviour emulated on Linux: what the platform does differently, handled.

Each test makes this process behave as Windows does at one point (the error a
closed pipe raises there, the shell a command is pasted into) and shows the
code takes the Windows branch; the Windows workflow runs the real thing.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mpexport import errors
from mpexport.cli.main import run as cli_run
from mpexport.model import Chunk
from mpexport.sinks.ndjson import NdjsonSink


class WindowsClosedPipe(io.TextIOBase):
    """stdout whose reader went away, as Windows reports it: EINVAL, not EPIPE."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise OSError(errno.EINVAL, "Invalid argument")

    def flush(self) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no descriptor")


class ClosedPipeBytes(io.BytesIO):
    def flush(self) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")


def test_help_into_a_closed_windows_pipe_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(errors, "ON_WINDOWS", True)
    stdout = WindowsClosedPipe()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert cli_run(["export", "--help"]) == 0
    assert stdout.writes > 0, "help was written into the closed pipe"
    assert capsys.readouterr().err == ""


def test_einval_elsewhere_is_an_error_even_on_windows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EINVAL from anything but stdout (an invalid file name on Windows) is no quiet success."""
    from mpexport import runner

    def invalid_name(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument", "events?.duckdb")

    monkeypatch.setattr(errors, "ON_WINDOWS", True)
    monkeypatch.setattr(runner, "_run_pipeline", invalid_name)
    monkeypatch.setenv("MP_API_SECRET", "s3cr3t-for-this-test")
    code = cli_run(["export", "--from", "2024-01-01", "--to", "2024-01-02",
                    "--api-url", "http://127.0.0.1:9"])
    assert code == 70
    assert "Invalid argument" in capsys.readouterr().err
    assert errors.exit_code_for(OSError(errno.EINVAL, "Invalid argument")) == 70


def test_abort_flush_into_a_closed_windows_pipe_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = NdjsonSink(ClosedPipeBytes(), dt.date(2024, 1, 1))
    sink.chunk_failed(Chunk(0, dt.date(2024, 1, 1), dt.date(2024, 1, 1)))
    monkeypatch.setattr(errors, "ON_WINDOWS", False)
    with pytest.raises(OSError):
        sink.abort()
    monkeypatch.setattr(errors, "ON_WINDOWS", True)
    sink.abort()  # nothing raised: `| head` on Windows ends quietly


def test_dry_run_plan_into_a_closed_windows_pipe_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(errors, "ON_WINDOWS", True)
    monkeypatch.setattr(sys, "stdout", WindowsClosedPipe())
    code = cli_run(["export", "--from", "2024-01-01", "--to", "2024-01-05", "--dry-run",
                    "--api-url", "http://127.0.0.1:9"])
    assert code == 0
    assert "internal error" not in capsys.readouterr().err


def test_worker_joins_wait_in_slices_so_a_second_ctrl_c_is_serviced(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows cannot interrupt a long timed join: joins are cut into 0.1 s slices."""
    import threading
    import time

    from mpexport.interrupt import WAIT_SLICE_SECONDS, join_in_slices

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    class StuckWorker(threading.Thread):
        """A worker still connecting: alive however long it is joined."""

        def __init__(self) -> None:
            super().__init__()
            self.timeouts: list[float] = []

        @property
        def ident(self) -> int:  # type: ignore[override]
            return 1

        def is_alive(self) -> bool:
            return True

        def join(self, timeout: float | None = None) -> None:
            assert timeout is not None
            self.timeouts.append(timeout)
            clock[0] += timeout

    worker = StuckWorker()
    join_in_slices([worker], deadline=1000.0 + 15.0)
    assert len(worker.timeouts) >= 150
    assert max(worker.timeouts) <= WAIT_SLICE_SECONDS
    assert clock[0] == pytest.approx(1015.0)


@pytest.mark.parametrize(("probed", "fix"), [
    (5, "make out.ndjson writable (it may be read-only)"),
    (32, "close what holds out.ndjson"),
])
def test_a_refused_output_replace_says_whether_the_file_is_read_only_or_held(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, probed: int, fix: str
) -> None:
    """os.replace says ERROR_ACCESS_DENIED for both on Windows; a Win32 open tells them apart."""
    from mpexport import atomic, filelock
    from mpexport.sinks import output_file

    def refused(src: object, dst: object) -> None:
        error = PermissionError(errno.EACCES, "Access is denied", str(src), 5, str(dst))
        error.winerror = 5  # type: ignore[attr-defined]  # the constructor's, on Windows
        raise error

    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: probed)
    monkeypatch.setattr(output_file.os, "replace", refused)
    monkeypatch.setattr(atomic, "_pause", lambda _s: None)  # a held file is retried first
    temporary, target = tmp_path / ".out.ndjson.tmp", tmp_path / "out.ndjson"
    failure = output_file._replace(temporary, target)
    assert failure is not None and failure.exit_code == 1
    assert failure.hint == f"the events are in {temporary}; {fix} and rename it"


# ------------------------------------------------------------------ a console that is closed


class ConsoleHandlers:
    """Stands in for SetConsoleCtrlHandler: the handlers registered now, and the removals."""

    def __init__(self) -> None:
        self.active: list[Callable[[int], bool]] = []
        self.removed = 0

    def add(self, handler: Callable[[int], bool]) -> Callable[[], None]:
        self.active.append(handler)

        def remove() -> None:
            self.active.remove(handler)
            self.removed += 1

        return remove


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> ConsoleHandlers:
    from mpexport import interrupt

    handlers = ConsoleHandlers()
    monkeypatch.setattr(interrupt, "add_console_handler", handlers.add)
    return handlers


def test_the_console_handler_is_there_while_the_command_runs(console: ConsoleHandlers) -> None:
    from mpexport.interrupt import InterruptGuard

    guard = InterruptGuard()
    with guard.installed():
        assert console.active == [guard.console_event]
    assert console.active == [] and console.removed == 1


@pytest.mark.parametrize("event", [0, 1], ids=["ctrl-c", "ctrl-break"])
def test_ctrl_c_and_ctrl_break_are_left_to_the_signals(console: ConsoleHandlers,
                                                       event: int) -> None:
    from mpexport.interrupt import InterruptGuard

    guard = InterruptGuard()
    with guard.installed():
        assert guard.console_event(event) is False
        assert guard.pending is None


@pytest.mark.parametrize(("event", "name"), [
    (2, "CTRL_CLOSE_EVENT"), (5, "CTRL_LOGOFF_EVENT"), (6, "CTRL_SHUTDOWN_EVENT")])
def test_a_closed_console_stops_the_run_and_holds_windows_off_until_it_is_done(
    console: ConsoleHandlers, monkeypatch: pytest.MonkeyPatch, event: int, name: str
) -> None:
    """The handler (on Windows' own thread) asks for the stop, then waits for the command."""
    import threading

    from mpexport import interrupt
    from mpexport.errors import Interrupted
    from mpexport.interrupt import InterruptGuard

    clock = [500.0]
    lingered: list[float] = []
    monkeypatch.setattr(interrupt, "_clock", lambda: clock[0])
    monkeypatch.setattr(interrupt, "_linger", lingered.append)
    undone: list[str] = []
    answers: list[bool] = []
    guard = InterruptGuard(stderr=io.StringIO())
    with pytest.raises(Interrupted) as stopped, guard.installed():
        def undo() -> None:
            undone.append("undo")

        guard.add_undo(undo)
        windows = threading.Thread(target=lambda: answers.append(guard.console_event(event)))
        windows.start()
        while not guard.stop_requested():  # the handler's first act
            windows.join(0.01)
        assert windows.is_alive(), "returned before the run stopped: Windows would end it now"
        clock[0] += 1.5  # the run takes 1.5 s to stop on a whole line
        guard.raise_if_requested()
    windows.join()
    assert stopped.value.signal_name == name and stopped.value.exit_code == 130
    assert answers == [True]
    # The rest of the grace, so the process ends by itself (summary JSON, exit code).
    assert lingered == [interrupt.CONSOLE_GRACE_SECONDS - 1.5]
    assert undone == [], "a stop that finished in time undoes nothing"


def test_a_stop_that_outlasts_the_grace_runs_the_undo_actions(
    console: ConsoleHandlers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mpexport import interrupt
    from mpexport.interrupt import InterruptGuard

    monkeypatch.setattr(interrupt, "CONSOLE_GRACE_SECONDS", 0.0)
    lingered: list[float] = []
    monkeypatch.setattr(interrupt, "_linger", lingered.append)
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        guard = InterruptGuard(stderr=stderr)
        with guard.installed():
            guard.add_undo(lambda: "out.ndjson holds what it held before this run")
            assert guard.console_event(2) is True
            assert guard.pending == "CTRL_CLOSE_EVENT"
    assert lingered == []
    assert err.read_text().splitlines() == [
        "mpexport: CTRL_CLOSE_EVENT: stopping cleanly (Windows allows a few seconds)",
        "mpexport: CTRL_CLOSE_EVENT: not stopped within 0 s; "
        "out.ndjson holds what it held before this run",
    ]


# ------------------------------------------------------------------ files someone else holds


def _held_n_times(n: int) -> Callable[[object, object], None]:
    """os.replace as Windows answers while another program has the target open, ``n`` times."""
    import os

    real = os.replace
    left = [n]

    def replace(src: object, dst: object) -> None:
        if left[0] > 0:
            left[0] -= 1
            error = PermissionError(errno.EACCES, "Access is denied", str(src), 5, str(dst))
            error.winerror = 5  # type: ignore[attr-defined]
            raise error
        real(str(src), str(dst))

    return replace


def test_output_held_for_a_moment_is_put_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A virus scan has out.ndjson open (access denied; the Win32 probe says: held)."""
    import os

    from mpexport import atomic, filelock
    from mpexport.sinks import output_file

    pauses: list[float] = []
    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: 32)
    monkeypatch.setattr(atomic, "_pause", pauses.append)
    monkeypatch.setattr(os, "replace", _held_n_times(3))
    temporary, target = tmp_path / ".out.ndjson.tmp", tmp_path / "out.ndjson"
    temporary.write_bytes(b'{"event":"a"}\n')
    assert output_file._replace(temporary, target) is None
    assert target.read_bytes() == b'{"event":"a"}\n' and not temporary.exists()
    assert pauses == [0.05, 0.1, 0.2]


def test_a_summary_held_for_a_moment_is_written_and_the_exit_stays_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json
    import os

    from mpexport import atomic, filelock
    from mpexport.cli.summary import write_summary_json

    pauses: list[float] = []
    monkeypatch.setattr(atomic, "_pause", pauses.append)
    monkeypatch.setattr(os, "replace", _held_n_times(2))
    # Access denied (5) needs the Win32 probe; an open that works now keeps "held".
    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: None)
    target = tmp_path / "last-run.json"
    target.write_text('{"exit_code": 1}')
    write_summary_json(str(target), {"exit_code": 0})
    assert json.loads(target.read_text()) == {"exit_code": 0}
    assert pauses == [0.05, 0.1]
