"""What only Windows can show: file sharing, console control events, pipes, paths.

The other tests run on Windows too (the unit suite in the Windows workflow);
these check what behaves differently there and cannot be reached from Linux:
a second writer and ``--wait-lock`` under Windows byte-range locks, a
database or Parquet file that another process holds open (Windows refuses to
open, replace or delete a file in use), Ctrl-Break, a reader that closes the
pipe (EINVAL rather than EPIPE), ``config init``/``show`` with a Windows
newline on stdin, time zones (Windows has no IANA database of its own: the
tzdata package must be there, and bundled in the exe) and a database path with
spaces and non-ASCII characters.

Each runs the real CLI (``python -m mpexport``, or the frozen exe through
``MPEXPORT_TEST_COMMAND``: packaging/frozen-tests.txt lists this file). The
Popen pid may be a launcher (a venv's python.exe starts the real interpreter
as a child), so no test compares it with a pid the run reports.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pytest

from mpexport.cli.demo import mixpanel_keys
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.sinks.duckdb.lock import lock_path
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
    stored_keys,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform != "win32",
                                reason="Windows only (run by the Windows workflow)")

START = dt.date(2024, 5, 1)


def export_args(url: str, start: dt.date, end: dt.date, *extra: str) -> list[str]:
    return ["export", "--api-url", url, "--from", start.isoformat(), "--to", end.isoformat(),
            *extra]


def assert_exact(db: Path, lines: Iterable[bytes]) -> None:
    keys = stored_keys(db)
    assert len(keys) == len(set(keys)), "a Mixpanel key is stored twice"
    assert set(keys) == mixpanel_keys(lines)


def pids_with_file_open(path: Path) -> set[int]:
    """Processes that have ``path`` open, from the Windows Restart Manager.

    The Windows counterpart of ``tests.helpers.pids_holding_open`` (which reads
    /proc); DuckDB asks the same API who holds a database file.
    """
    import ctypes
    from ctypes import wintypes

    class FileTime(ctypes.Structure):
        _fields_ = [("dwLowDateTime", wintypes.DWORD), ("dwHighDateTime", wintypes.DWORD)]

    class UniqueProcess(ctypes.Structure):
        _fields_ = [("dwProcessId", wintypes.DWORD), ("ProcessStartTime", FileTime)]

    class ProcessInfo(ctypes.Structure):  # RM_PROCESS_INFO
        _fields_ = [
            ("Process", UniqueProcess),
            ("strAppName", wintypes.WCHAR * 256),  # CCH_RM_MAX_APP_NAME + 1
            ("strServiceShortName", wintypes.WCHAR * 64),  # CCH_RM_MAX_SVC_NAME + 1
            ("ApplicationType", ctypes.c_int),
            ("AppStatus", wintypes.ULONG),
            ("TSSessionId", wintypes.DWORD),
            ("bRestartable", wintypes.BOOL),
        ]

    error_more_data = 234
    rm = ctypes.WinDLL("rstrtmgr")  # type: ignore[attr-defined]
    rm.RmStartSession.argtypes = [ctypes.POINTER(wintypes.DWORD), wintypes.DWORD,
                                  wintypes.LPWSTR]
    rm.RmRegisterResources.argtypes = [wintypes.DWORD, wintypes.UINT,
                                       ctypes.POINTER(wintypes.LPCWSTR), wintypes.UINT,
                                       ctypes.c_void_p, wintypes.UINT, ctypes.c_void_p]
    rm.RmGetList.argtypes = [wintypes.DWORD, ctypes.POINTER(wintypes.UINT),
                             ctypes.POINTER(wintypes.UINT), ctypes.c_void_p,
                             ctypes.POINTER(wintypes.DWORD)]
    rm.RmEndSession.argtypes = [wintypes.DWORD]
    for function in (rm.RmStartSession, rm.RmRegisterResources, rm.RmGetList,
                     rm.RmEndSession):
        function.restype = wintypes.DWORD

    session = wintypes.DWORD()
    key = ctypes.create_unicode_buffer(33)  # CCH_RM_SESSION_KEY + 1
    status = rm.RmStartSession(ctypes.byref(session), 0, key)
    if status:
        raise OSError(f"RmStartSession failed: {status}")
    try:
        files = (wintypes.LPCWSTR * 1)(str(path))
        status = rm.RmRegisterResources(session, 1, files, 0, None, 0, None)
        if status:
            raise OSError(f"RmRegisterResources failed: {status}")
        needed, count, reasons = wintypes.UINT(0), wintypes.UINT(0), wintypes.DWORD()
        for _ in range(10):  # the list can grow between the two calls
            infos = (ProcessInfo * max(needed.value, 1))()
            count.value = needed.value
            status = rm.RmGetList(session, ctypes.byref(needed), ctypes.byref(count),
                                  infos if count.value else None, ctypes.byref(reasons))
            if status == 0:
                return {infos[i].Process.dwProcessId for i in range(count.value)}
            if status != error_more_data:
                raise OSError(f"RmGetList failed: {status}")
        raise OSError("RmGetList: the list kept growing")
    finally:
        rm.RmEndSession(session)


def finish(*procs: subprocess.Popen[bytes] | None) -> None:
    """Wait for each process (bounded: a guard against a hang); kill any still running."""
    try:
        for proc in procs:
            if proc is not None:
                proc.wait(timeout=PATIENCE)
    finally:
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_second_writer_exits_4_and_wait_lock_waits_then_succeeds(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # The first run's responses are held mid-body: it surely holds the lock
    # until release(), and makes no request meanwhile.
    end = START + dt.timedelta(days=5)
    dataset = HeldDataset(seed=61, events_per_day=100, hold_from=START)
    server = make_server(dataset, **HOLD_SERVER)
    db = tmp_path / "events.duckdb"
    args = export_args(server.url, START, end, "--chunk-days", "1", "--workers", "2",
                       "--db", str(db))
    env = clean_env(service_account_env())
    cmd = [*cli_command(), *args]
    with (tmp_path / "first.err").open("wb") as first_err, \
            (tmp_path / "waiting.err").open("wb") as waiting_err:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=first_err)
        waiting: subprocess.Popen[bytes] | None = None
        try:
            dataset.wait_held(2)
            # The holder's details, readable while it holds the lock (the
            # Windows lock covers one byte far past them).
            holder = json.loads(lock_path(db).read_bytes())
            requests = len(server.stats)

            refused = run_cli(args)
            assert first.poll() is None
            assert len(server.stats) == requests, "the refused run made a request"

            holders = pids_with_file_open(lock_path(db))
            assert holder["pid"] in holders
            waiting = subprocess.Popen([*cmd, "--wait-lock", "600"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=waiting_err)
            # It has the lock file open too: it waits for the lock, which the
            # first cannot give up before its held responses end.
            wait_until(lambda: pids_with_file_open(lock_path(db)) - holders,
                       "the second run to wait for the lock", proc=waiting)
            assert first.poll() is None
            assert len(server.stats) == requests, "the waiting run made a request"
        finally:
            dataset.release()
            finish(first, waiting)
    first_text = (tmp_path / "first.err").read_text("utf-8", "replace")
    waiting_text = (tmp_path / "waiting.err").read_text("utf-8", "replace")
    assert first.returncode == 0, first_text

    assert refused.code == 4, refused.stderr
    assert str(db) in refused.stderr and f"pid {holder['pid']}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    assert waiting is not None and waiting.returncode == 0, waiting_text
    assert "Traceback" not in waiting_text
    # The waiting run found every day loaded once the first was done.
    assert len(server.stats) == 6
    assert_exact(db, dataset.lines_for_range(START, end))


def test_database_open_in_another_program_exits_4_naming_it(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(Dataset(seed=62, events_per_day=20))
    db = tmp_path / "events.duckdb"
    # A DuckDB shell or BI tool with the file open: Windows denies the
    # run's open (a sharing violation), whatever DuckDB's message says.
    with duckdb.connect(str(db)) as outside:
        outside.execute("CREATE TABLE notes (x INTEGER)")
        result = run_cli(export_args(server.url, START, START + dt.timedelta(days=2),
                                     "--db", str(db)))
    assert result.code == 4, result.stderr
    assert str(db) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == b""
    assert len(server.stats) == 0


def test_parquet_rerun_while_a_reader_holds_a_day_file(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=63, events_per_day=40)
    server = make_server(dataset)
    db, out = tmp_path / "events.duckdb", tmp_path / "parquet"
    end = START + dt.timedelta(days=2)
    args = export_args(server.url, START, end, "--chunk-days", "1", "--db", str(db),
                       "--parquet", str(out))
    first = run_cli(args)
    assert first.code == 0, first.stderr
    held = out / f"date={START.isoformat()}" / "data.parquet"
    assert held.is_file()

    # Late events for that day: the rerun must rewrite its file, which a
    # reader (a BI tool, a notebook) has open. Windows opens files without
    # FILE_SHARE_DELETE, so replacing the file fails while it is open.
    dataset.add_late_events(START, 5)
    before = held.read_bytes()
    with held.open("rb") as reader:
        assert reader.read(4) == b"PAR1"
        rerun = run_cli([*args, "--refresh"])
        # The held file stays whole and old; one warning names it.
        assert held.read_bytes() == before
    assert rerun.code == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert "in use by another program" in rerun.stderr and held.name in rerun.stderr
    assert_exact(db, dataset.lines_for_range(START, end))
    # Nothing holds it now: the next run writes the day it deferred.
    again = run_cli(args)
    assert again.code == 0, again.stderr
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{held.as_posix()}')").fetchone()
    assert rows is not None and rows[0] == len(
        set(dataset.lines_for_range(START, START)))


def test_ctrl_break_stops_cleanly_with_130(make_server: ServerFactory, tmp_path: Path) -> None:
    workers = 4
    end = START + dt.timedelta(days=40)
    hold_from = START + dt.timedelta(days=3)
    dataset = HeldDataset(seed=64, events_per_day=400, hold_from=hold_from)
    server = make_server(dataset, **HOLD_SERVER)
    spool = tmp_path / "tmp"
    spool.mkdir()
    out, err = tmp_path / "out.ndjson", tmp_path / "stderr.txt"
    env = clean_env({**service_account_env(), "TMPDIR": str(spool)})
    args = export_args(server.url, START, end, "--chunk-days", "1", "--workers", str(workers))
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            # Its own process group: the event reaches the run (and a
            # launcher in front of it), not this test process.
            group = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            proc = subprocess.Popen([*cli_command(), *args], stdout=stdout, stderr=stderr,
                                    env=env, creationflags=group)
            try:
                # Mid-export: the first day is on stdout, every worker is
                # inside a response that cannot end, the spool is in use.
                wait_until(lambda: out.stat().st_size > 0, "the first day on stdout", proc=proc)
                dataset.wait_held(workers)
                assert list(spool.iterdir()), "the run does not spool into TMPDIR"
                proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
                proc.wait(timeout=PATIENCE)
            finally:
                finish(proc)
    finally:
        dataset.release()
    text = err.read_text("utf-8", "replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert "SIGBREAK" in text and "to fetch what is missing" in text
    # Whole lines, in order, of the days before the held ones only.
    data = out.read_bytes()
    expected = b"".join(dataset.lines_for_range(START, hold_from - dt.timedelta(days=1)))
    assert data and data.endswith(b"\n") and expected.startswith(data)
    assert list(spool.iterdir()) == [], "a spool directory was left behind"


def test_reader_closing_the_pipe_after_one_line_ends_quietly(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # Far more than a pipe holds: the run is still writing when the reader goes.
    dataset = Dataset(seed=65, events_per_day=3000)
    server = make_server(dataset)
    err = tmp_path / "stderr.txt"
    args = export_args(server.url, START, START + dt.timedelta(days=26), "--chunk-days", "1")
    with err.open("wb") as stderr:
        proc = subprocess.Popen([*cli_command(), *args], stdout=subprocess.PIPE, stderr=stderr,
                                env=clean_env(service_account_env()))
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            proc.stdout.close()  # what `| head -n 1` does (Windows: EINVAL for the writer)
        finally:
            finish(proc)
    text = err.read_text("utf-8", "replace")
    assert line.endswith(b"\n") and json.loads(line)["event"]
    assert proc.returncode == 0, text
    for word in ("Traceback", "Exception", "Errno", "OSError", "BrokenPipe"):
        assert word not in text, text


def test_config_init_from_a_pipe_show_and_use(
    make_server: ServerFactory, tmp_path: Path, isolated_config: Path
) -> None:
    # The secret as Windows pipes send a line: with \r\n.
    init = subprocess.run(
        [*cli_command(), "config", "init", "--profile", "win-ci", "--username", DEMO_USERNAME,
         "--project-id", str(DEMO_PROJECT_ID)],
        input=(DEMO_SECRET + "\r\n").encode(), capture_output=True, env=clean_env(),
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    assert b"saved profile win-ci" in init.stderr
    config_file = isolated_config / "config.toml"
    written = config_file.read_bytes()
    assert DEMO_SECRET.encode() in written
    assert (DEMO_SECRET + "\r").encode() not in written

    show = subprocess.run([*cli_command(), "config", "show"], capture_output=True,
                          env=clean_env(), stdin=subprocess.DEVNULL, timeout=120)
    assert show.returncode == 0, show.stderr
    text = show.stdout.decode("utf-8")
    assert str(config_file) in text
    assert "[profiles.win-ci]" in text and "<hidden>" in text
    assert DEMO_SECRET not in text

    # The profile works: an export with it and no MP_* variables.
    dataset = Dataset(seed=66, events_per_day=30)
    server = make_server(dataset)
    end = START + dt.timedelta(days=2)
    result = run_cli([*export_args(server.url, START, end, "--chunk-days", "1"),
                      "--profile", "win-ci"], credentials=False)
    assert result.code == 0, result.stderr
    assert result.stdout == expected_stdout(dataset, day_chunks(START, end, 1))


def test_project_timezone_new_york(make_server: ServerFactory, tmp_path: Path) -> None:
    # Windows has no IANA database: zoneinfo needs the tzdata package (and
    # the exe needs it bundled). New York is UTC-5 in January, UTC-4 in June.
    dataset = Dataset(seed=67, events_per_day=20)
    server = make_server(dataset)
    db = tmp_path / "events.duckdb"
    for day in (dt.date(2024, 1, 10), dt.date(2024, 6, 10)):
        result = run_cli(export_args(server.url, day, day, "--db", str(db),
                                     "--project-timezone", "America/New_York"))
        assert result.code == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT epoch(time)::BIGINT, (properties->>'time')::BIGINT FROM events").fetchall()
    offsets: dict[int, set[int]] = {}
    for true, shifted in rows:
        month = dt.datetime.fromtimestamp(shifted, dt.UTC).month
        offsets.setdefault(month, set()).add(true - shifted)
    assert offsets == {1: {5 * 3600}, 6: {4 * 3600}}


def test_database_path_with_spaces_and_non_ascii(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    dataset = Dataset(seed=68, events_per_day=30)
    server = make_server(dataset)
    folder = tmp_path / "Mixpanel Exporte, Käse ☕ 日付"
    folder.mkdir()
    db = folder / "événements 2024.duckdb"
    parquet = folder / "Parquet Ordner ü"
    summary = folder / "résumé.json"
    end = START + dt.timedelta(days=3)
    args = export_args(server.url, START, end, "--chunk-days", "2", "--db", str(db),
                       "--parquet", str(parquet), "--summary-json", str(summary))
    first = run_cli(args)
    assert first.code == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert_exact(db, dataset.lines_for_range(START, end))
    assert len(list(parquet.glob("date=*/data.parquet"))) == 4
    assert json.loads(summary.read_text("utf-8"))["exit_code"] == 0

    again = run_cli(args)
    assert again.code == 0, again.stderr
    assert "2 already loaded" in again.stderr
    assert_exact(db, dataset.lines_for_range(START, end))
    # No file under a mangled name (a path passed through the ANSI code page).
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert {p.name for p in folder.iterdir()
            if not p.name.startswith(db.name)} == {parquet.name, summary.name}


def _paste_into_cmd(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run a printed cmd line as if pasted: `mpexport` becomes the command under test."""
    from mpexport.cli.shell import cmd_line

    assert line.startswith("mpexport ")
    full = cmd_line(cli_command()) + line[len("mpexport"):]
    # /s: cmd strips only the outer quotes and runs the rest as typed.
    return subprocess.run(f'cmd.exe /d /s /c "{full}"', env=env, capture_output=True,
                          timeout=PATIENCE, stdin=subprocess.DEVNULL)


def _paste_into_powershell(line: str, env: dict[str, str],
                           program: str) -> subprocess.CompletedProcess[bytes]:
    """Run a printed PowerShell line as if pasted (read from stdin, so no quoting of ours)."""
    assert line.startswith("mpexport ")
    command = " ".join("'" + part.replace("'", "''") + "'" for part in cli_command())
    script = f"& {command}{line[len('mpexport'):]}\nexit $LASTEXITCODE\n"
    return subprocess.run([program, "-NoProfile", "-NonInteractive", "-Command", "-"],
                          input=script.encode("utf-8"), env=env, capture_output=True,
                          timeout=PATIENCE)


def test_printed_resume_commands_paste_into_cmd_and_powershell(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A resume command with quotes, $, & and a non-ASCII path with spaces, pasted in each shell."""
    import shutil

    from mpexport.cli.shell import cmd_line, powershell_line

    dataset = Dataset(seed=61, events_per_day=30)
    bad_day = dt.date(2024, 5, 2)
    failing = make_server(dataset, fail_dates=frozenset({bad_day}))
    folder = tmp_path / "Jos\u00e9 & Co data"
    folder.mkdir()
    where = 'properties["$os"]=="Windows" or properties["plan"]=="pro"'
    result = run_cli(export_args(failing.url, START, dt.date(2024, 5, 3), "--chunk-days", "1",
                                 "--retries", "0", "--where", where, "--event", "Sign Up",
                                 "--event", "Page View", "--no-progress"))
    assert result.code == 1, result.stderr
    lines = [line.strip() for line in result.stderr.splitlines()]
    printed = {label: lines[lines.index(f"in {label}:") + 1]
               for label in ("cmd", "PowerShell 7", "Windows PowerShell 5.1")}
    healthy = make_server(dataset)
    env = clean_env(service_account_env())
    shells = [("cmd", "cmd"), ("powershell.exe", "Windows PowerShell 5.1")]
    if shutil.which("pwsh"):
        shells.append(("pwsh", "PowerShell 7"))
    wanted = [raw for raw in dataset.lines_for_range(bad_day, bad_day)
              if json.loads(raw)["event"] in ("Sign Up", "Page View")
              and (json.loads(raw)["properties"].get("$os") == "Windows"
                   or json.loads(raw)["properties"].get("plan") == "pro")]
    assert wanted
    for program, label in shells:
        out = folder / f"{program}.ndjson"
        line = printed[label].replace(failing.url, healthy.url)
        # Output to a file in the awkward folder: one more argument, quoted the same way.
        extra = ["x", "--output", str(out)]
        if program == "cmd":
            done = _paste_into_cmd(line + cmd_line(extra)[1:], env)
        else:
            suffix = powershell_line(extra, legacy=label.startswith("Windows"))[1:]
            done = _paste_into_powershell(line + suffix, env, program)
        assert done.returncode == 0, (program, done.stderr.decode("utf-8", "replace"))
        assert out.read_bytes().splitlines(keepends=True) == wanted, program


@pytest.mark.parametrize("how", ["read-only attribute", "ACL denying writes"])
def test_a_database_this_user_may_not_write_is_exit_2_not_a_held_file(
    tmp_path: Path, how: str
) -> None:
    """Access denied is bad usage with the path (exit 2); --wait-lock has nothing to wait for."""
    import os
    import stat

    from mpexport import filelock

    db = tmp_path / "events é.duckdb"
    duckdb.connect(str(db)).close()
    if how == "read-only attribute":
        os.chmod(db, stat.S_IREAD)
        undo = ["attrib", "-R", str(db)]
    else:
        # os.access sees only the read-only attribute: an ACL passes it and
        # reaches the probe, where the C runtime's EACCES is all Python gets.
        subprocess.run(["icacls", str(db), "/deny", f"{os.environ['USERNAME']}:(W)"],
                       check=True, capture_output=True)
        undo = ["icacls", str(db), "/reset"]
    try:
        with pytest.raises(PermissionError) as refused:
            db.open("r+b")
        assert filelock.why_refused(refused.value, db) == filelock.DENIED
        assert filelock.writer_refused(db) == filelock.DENIED
        # A wait would outlast run_cli's timeout: the test fails rather than waits.
        result = run_cli(export_args("http://127.0.0.1:9", START, START, "--db", str(db),
                                     "--wait-lock", "3600"))
    finally:
        subprocess.run(undo, check=True, capture_output=True)
    assert result.code == 2, result.stderr
    assert str(db) in result.stderr and "read-only" in result.stderr, result.stderr
    assert "open in another program" not in result.stderr


def test_output_and_summary_held_for_a_moment_are_replaced_after_a_retry(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A virus scan or a preview has both files open near the end of the run: it waits."""
    import time

    dataset = Dataset(seed=69, events_per_day=50)
    server = make_server(dataset)
    end = START + dt.timedelta(days=2)
    expected = expected_stdout(dataset, day_chunks(START, end, 1))
    out, summary = tmp_path / "out.ndjson", tmp_path / "last-run.json"
    out.write_bytes(b"old\n")
    summary.write_bytes(b"{}\n")
    err = tmp_path / "stderr.txt"
    args = export_args(server.url, START, end, "--chunk-days", "1", "--output", str(out),
                       "--summary-json", str(summary))

    def temp_of(target: Path) -> list[Path]:
        return list(tmp_path.glob(f".{target.name}.*.tmp"))

    # Python's open shares reading and writing but not deleting: a replace
    # over a file held so is refused, as Windows refuses it for a scanner.
    holding_out, holding_summary = out.open("rb"), summary.open("rb")
    try:
        with err.open("wb") as stderr:
            proc = subprocess.Popen([*cli_command(), *args], stdout=subprocess.DEVNULL,
                                    stderr=stderr, env=clean_env(service_account_env()))
            try:
                wait_until(lambda: any(p.stat().st_size == len(expected) for p in temp_of(out)),
                           "the whole export in the temp file", proc=proc)
                time.sleep(0.5)  # the run's replace is refused meanwhile, and retried
                holding_out.close()
                wait_until(lambda: temp_of(summary) or proc.poll() is not None,
                           "the summary's replace", proc=proc)
                time.sleep(0.3)
                holding_summary.close()
                proc.wait(timeout=PATIENCE)
            finally:
                finish(proc)
    finally:
        holding_out.close()
        holding_summary.close()
    text = err.read_text("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "could not" not in text and "Traceback" not in text
    assert out.read_bytes() == expected
    assert json.loads(summary.read_text("utf-8"))["exit_code"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, summary.name, err.name])


def test_the_config_file_is_private_to_the_token_user_even_in_a_shared_folder(
    isolated_config: Path
) -> None:
    from mpexport.config import private_file

    users = "*S-1-5-32-545"
    # A shared folder: every local user may read what is created in it.
    subprocess.run(["icacls", str(isolated_config), "/grant", f"{users}:(OI)(CI)R"],
                   check=True, capture_output=True)
    init = subprocess.run(
        [*cli_command(), "config", "init", "--profile", "acl", "--username", DEMO_USERNAME,
         "--project-id", str(DEMO_PROJECT_ID)],
        input=(DEMO_SECRET + "\r\n").encode(), capture_output=True, env=clean_env(),
        timeout=120)
    assert init.returncode == 0, init.stderr
    assert b"warning" not in init.stderr
    config_file = isolated_config / "config.toml"
    sid = private_file.current_user_sid()
    whoami = subprocess.run(["whoami", "/user", "/fo", "csv", "/nh"], capture_output=True,
                            check=True, text=True)
    assert whoami.stdout.strip().split(",")[-1].strip('"') == sid
    sddl = private_file.file_sddl(config_file)
    assert sddl == private_file.owner_only_sddl(sid), sddl
    assert private_file.other_readers(sddl, sid) == []

    def show() -> str:
        done = subprocess.run([*cli_command(), "config", "show"], capture_output=True,
                              env=clean_env(), stdin=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8")

    assert "warning" not in show()
    subprocess.run(["icacls", str(config_file), "/grant", f"{users}:R"], check=True,
                   capture_output=True)
    assert f"# warning: {config_file} is readable by other accounts (Users)" in show()
