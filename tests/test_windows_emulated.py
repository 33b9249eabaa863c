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
    from mpexport import filelock
    from mpexport.sinks import output_file

    def refused(src: object, dst: object) -> None:
        error = PermissionError(errno.EACCES, "Access is denied", str(src), 5, str(dst))
        error.winerror = 5  # type: ignore[attr-defined]  # the constructor's, on Windows
        raise error

    monkeypatch.setattr(filelock, "WINDOWS", True)
    monkeypatch.setattr(filelock, "_win32_open_error", lambda _p: probed)
    monkeypatch.setattr(output_file.os, "replace", refused)
    temporary, target = tmp_path / ".out.ndjson.tmp", tmp_path / "out.ndjson"
    failure = output_file._replace(temporary, target)
    assert failure is not None and failure.exit_code == 1
    assert failure.hint == f"the events are in {temporary}; {fix} and rename it"
