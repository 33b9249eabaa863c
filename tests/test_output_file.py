"""``--output FILE``: the NDJSON written by mpexport itself, byte for byte, nothing on stdout."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import mpexport
from mpexport.errors import Interrupted, OutputFileError
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.interrupt import InterruptGuard
from mpexport.mixpanel.credentials import Credentials
from mpexport.model import Chunk, CompletedChunk
from mpexport.sinks import ndjson as ndjson_module
from mpexport.sinks.ndjson import NdjsonSink
from mpexport.sinks.output_file import Destination, ndjson_destination
from tests.helpers import (
    ServerFactory,
    clean_env,
    cli_command,
    day_chunks,
    expected_stdout,
    run_cli,
    service_account_env,
)

START, END = dt.date(2024, 5, 1), dt.date(2024, 5, 9)
CREDS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
RANGE = ["--from", START.isoformat(), "--to", END.isoformat(), "--chunk-days", "3"]


def test_output_file_is_byte_exact_and_stdout_stays_empty(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=12, events_per_day=30, quiet_every=4)
    server = make_server(dataset, faults=("reset", "gzip_cut"))
    target = tmp_path / "events ü.ndjson"
    result = run_cli(["export", "--api-url", server.url, *RANGE, "--output", str(target)])
    assert result.code == 0, result.stderr
    assert result.stdout == b""
    assert target.read_bytes() == expected_stdout(dataset, day_chunks(START, END, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


def test_an_early_failure_leaves_the_existing_file_alone(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=12, events_per_day=5))
    target = tmp_path / "keep.ndjson"
    target.write_bytes(b'{"event":"old"}\n')
    result = run_cli(["export", "--api-url", server.url, *RANGE, "--output", str(target)],
                     credentials=False)
    assert result.code == 3, result.stderr
    assert target.read_bytes() == b'{"event":"old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ndjson"]


def test_the_printed_resume_command_appends_what_failed(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=13, events_per_day=20)
    failing = make_server(dataset, fail_dates=frozenset({dt.date(2024, 5, 5)}))
    target = tmp_path / "out.ndjson"
    summary = tmp_path / "summary.json"
    result = run_cli(["export", "--api-url", failing.url, *RANGE, "--retries", "0",
                      "--output", str(target), "--summary-json", str(summary)])
    assert result.code == 1
    [rerun] = json.loads(summary.read_text())["rerun"]
    argv = shlex.split(rerun)
    assert argv[argv.index("--output") + 1] == str(target) and "--append" in argv
    assert argv[argv.index("--from") + 1] == "2024-05-04"  # the failed chunk, whole
    healthy = make_server(dataset)
    argv[argv.index("--api-url") + 1] = healthy.url
    resumed = run_cli(argv[1:])
    assert resumed.code == 0, resumed.stderr
    lines = target.read_bytes().splitlines(keepends=True)
    assert Counter(lines) == Counter(dataset.lines_for_range(START, END))


def test_output_mistakes_are_one_line_usage_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nope" / "out.ndjson"
    cases = [
        (["--output", str(missing_dir)], "cannot write --output"),
        (["--append"], "--append needs --output"),
    ]
    for extra, message in cases:
        result = run_cli(["export", "--api-url", "http://127.0.0.1:9", *RANGE, *extra])
        assert result.code == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


class _StopAfterFirstWrite(io.BytesIO):
    """A file-like whose first write makes the run's guard ask for a stop (a Ctrl-C)."""

    def __init__(self, guard: InterruptGuard) -> None:
        super().__init__()
        self.guard = guard

    def write(self, data: Any) -> int:
        self.guard.request_stop("SIGINT")
        return super().write(data)


def _spooled(tmp_path: Path, index: int, day: dt.date, lines: int) -> CompletedChunk:
    body = b"".join(b'{"event":"e%d","properties":{"time":%d}}\n' % (index, n)
                    for n in range(lines))
    path = tmp_path / f"chunk-{index}.ndjson"
    path.write_bytes(body)
    return CompletedChunk(Chunk(index, day, day), path, lines, len(body), "", 1, 0.0)


def test_a_stop_mid_chunk_cuts_a_file_back_to_its_last_whole_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut chunk is fetched whole by the resume: the file must not keep part of it."""
    monkeypatch.setattr(ndjson_module, "COPY_BUFFER", 64)
    monkeypatch.setattr(ndjson_module, "FINISH_GRACE_SECONDS", 0.0)
    guard = InterruptGuard()
    target = tmp_path / "out.ndjson"
    target.write_bytes(b"kept from before\n")
    first = _spooled(tmp_path, 0, START, 3)
    first_bytes = first.path.read_bytes()
    second = _spooled(tmp_path, 1, START + dt.timedelta(days=1), 50)
    with open(target, "ab") as stream:
        destination = Destination(stream, stream.tell(), owned=True)
        sink = NdjsonSink(stream, START)
        sink.accept(first)  # written whole, before any stop
        sink._guard = guard  # from here on, the first write asks for a stop
        sink._stream = _StopAfterFirstWrite(guard)
        with pytest.raises(Interrupted):
            sink.accept(second)
        assert sink.cut is not None and sink.cut.from_date == START + dt.timedelta(days=1)
        assert destination.keep_whole_chunks(sink.whole_bytes)
    assert target.read_bytes() == b"kept from before\n" + first_bytes


def test_a_failed_replace_keeps_the_events_where_the_message_says(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=14, events_per_day=10)
    server = make_server(dataset)
    blocked = tmp_path / "out.ndjson"
    blocked.mkdir()  # a directory by that name: the final replace must fail
    (blocked / "inside").write_bytes(b"x")
    # Through the library: the CLI refuses a directory before anything runs.
    with pytest.raises(OutputFileError) as failed:
        mpexport.export(START, END, chunk_days=3, api_url=server.url, output=blocked,
                        credentials=CREDS, qps_limit=1000, hourly_limit=1_000_000)
    [kept] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert kept.read_bytes() == expected_stdout(dataset, day_chunks(START, END, 3))
    assert str(kept) in failed.value.one_line()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_exit_1_with_one_line_not_a_bug(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=15, events_per_day=10))
    via_option = run_cli(["export", "--api-url", server.url, *RANGE, "--output", "/dev/full"])
    with open("/dev/full", "wb") as full:
        redirected = subprocess.run(
            [*cli_command(), "export", "--api-url", server.url, *RANGE],
            env=clean_env(service_account_env()), stdout=full, stderr=subprocess.PIPE,
            timeout=120)
    for code, stderr in ((via_option.code, via_option.stderr),
                         (redirected.returncode, redirected.stderr.decode())):
        assert code == 1, stderr
        assert "No space left on device" in stderr and "Traceback" not in stderr
        assert "internal error" not in stderr


class _Exited(BaseException):
    """What the patched ``os._exit`` raises: the process would end here."""


def _second_signal(guard: InterruptGuard, monkeypatch: pytest.MonkeyPatch) -> int:
    """Deliver SIGINT twice to ``guard``'s handler; return the code it exits with."""
    import signal

    def exit_now(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    guard._handle(signal.SIGINT, None)  # the first: a stop request only
    with pytest.raises(_Exited) as exited:
        guard._handle(signal.SIGINT, None)
    code = exited.value.args[0]
    assert isinstance(code, int)
    return code


def test_a_second_signal_mid_write_cuts_an_appended_file_to_its_size_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Mid-run the stream holds unflushed bytes: the undo works on the descriptor alone."""
    guard = InterruptGuard()
    target = tmp_path / "out.ndjson"
    target.write_bytes(b'{"event":"old"}\n')
    opened = ndjson_destination(None, target, append=True, guard=guard)
    destination = opened.__enter__()
    destination.stream.write(b'{"event":"new","properties":{}}\n')
    destination.stream.flush()
    destination.stream.write(b'{"event":"half')  # still in the buffer
    assert _second_signal(guard, monkeypatch) == 130
    # os._exit would end the process here: nothing else runs, no buffer is flushed.
    assert target.read_bytes() == b'{"event":"old"}\n'
    assert capfd.readouterr().err == (
        "mpexport: SIGINT: stopping cleanly; a second SIGINT quits at once\n"
        f"mpexport: SIGINT again: quit at once; {target} holds what it held before this run "
        "(run the same command again)\n")
    opened.__exit__(None, None, None)  # what a test process must still close


def test_a_second_signal_mid_write_removes_a_new_files_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = InterruptGuard()
    target = tmp_path / "out.ndjson"
    target.write_bytes(b"from an earlier run\n")
    opened = ndjson_destination(None, target, append=False, guard=guard)
    destination = opened.__enter__()
    destination.stream.write(b'{"event":"new"}\n')
    destination.stream.flush()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert _second_signal(guard, monkeypatch) == 130
    assert [p.name for p in tmp_path.iterdir()] == ["out.ndjson"]
    assert target.read_bytes() == b"from an earlier run\n"
    with pytest.raises(OSError):  # the undo closed the descriptor, as the exit would
        opened.__exit__(None, None, None)


def test_a_settled_file_is_not_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run's file stays, and so does a stopped one's once its resume is printed."""
    guard = InterruptGuard()
    target = tmp_path / "out.ndjson"
    with ndjson_destination(None, target, append=False, guard=guard) as destination:
        destination.stream.write(b'{"event":"done"}\n')
    stopped = tmp_path / "stopped.ndjson"
    stopped.write_bytes(b'{"event":"old"}\n')
    with (pytest.raises(Interrupted),
          ndjson_destination(None, stopped, append=True, guard=guard) as destination):
        destination.stream.write(b'{"event":"whole chunk"}\n')
        raise Interrupted("SIGINT")
    guard.settle()  # what the CLI does once the resume command is printed
    _second_signal(guard, monkeypatch)
    assert target.read_bytes() == b'{"event":"done"}\n'
    assert stopped.read_bytes() == b'{"event":"old"}\n{"event":"whole chunk"}\n'


def test_every_undo_runs_even_if_one_fails(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = InterruptGuard()
    ran: list[str] = []

    def broken() -> str:
        ran.append("broken")
        raise OSError("no such file")

    def fine() -> str:
        ran.append("fine")
        return "b.ndjson is fine"

    guard.add_undo(broken)
    guard.discard_undo(guard.add_undo(lambda: ran.append("forgotten") or "never"))
    guard.add_undo(fine)
    assert _second_signal(guard, monkeypatch) == 130
    assert ran == ["broken", "fine"]
    assert capfd.readouterr().err.endswith(
        "mpexport: SIGINT again: quit at once; b.ndjson is fine\n")


# ------------------------------------------------------------------ links and leftovers


needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="giving a link to another user takes root")


@needs_root
@pytest.mark.parametrize("option", ["--output", "--summary-json"])
def test_a_link_another_user_planted_in_tmp_is_refused_before_anything_is_fetched(
    make_server: ServerFactory, tmp_path: Path, option: str
) -> None:
    server = make_server(Dataset(seed=16, events_per_day=10))
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    link = shared / "out"
    link.symlink_to(victim)
    os.lchown(link, 54321, 54321)
    result = run_cli(["export", "--api-url", server.url, *RANGE, option, str(link)])
    assert result.code == 2, result.stderr
    assert result.stderr == (
        f"mpexport: error: refusing to write {link}: {link} is a symbolic link owned by "
        f"another user (uid 54321) in the shared folder {shared} (someone else could redirect "
        "the write through it: remove the link or choose a path in a folder of your own)\n")
    assert len(server.stats) == 0
    assert victim.read_bytes() == b"precious\n"


@pytest.mark.parametrize("append", [False, True], ids=["new", "append"])
def test_the_next_run_removes_the_temp_file_a_killed_run_left(
    make_server: ServerFactory, tmp_path: Path, append: bool
) -> None:
    """A console closed before the replace leaves `.NAME.<pid>-<machine>-<hex>.tmp`."""
    from mpexport.atomic import _host_tag

    dataset = Dataset(seed=17, events_per_day=10)
    server = make_server(dataset)
    target = tmp_path / "out.ndjson"
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp_path / f".out.ndjson.{gone.pid}-{_host_tag()}-0123456789ab.tmp"
    left.write_bytes(b'{"event":"half')
    # Another run still writing beside it (pid 1 is alive): never touched.
    live = tmp_path / f".out.ndjson.1-{_host_tag()}-ba9876543210.tmp"
    live.write_bytes(b'{"event":"more')
    extra = ["--append"] if append else []
    result = run_cli(["export", "--api-url", server.url, *RANGE, "--output", str(target),
                      *extra])
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])
    assert target.read_bytes() == expected_stdout(dataset, day_chunks(START, END, 3))
