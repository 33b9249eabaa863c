"""Spool folders: removed after the run, cleared when a killed run left them; full, the run ends."""

from __future__ import annotations

import datetime as dt
import errno
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mpexport.errors import ExitCode, SpoolFullError
from mpexport.fakeserver import DEMO_PROJECT_ID, DEMO_SECRET, DEMO_USERNAME, Dataset
from mpexport.filelock import try_lock
from mpexport.mixpanel.credentials import Credentials
from mpexport.mixpanel.endpoints import Endpoint
from mpexport.mixpanel.fetch import Query, fetch_once
from mpexport.mixpanel.transport import FetchSettings, new_session
from mpexport.model import Chunk, QueryFilters
from mpexport.spool import MARKER, PREFIX, UNMARKED_GRACE_SECONDS, clear_stale, spool_folder
from tests.helpers import UNPACED, ServerFactory, service_account_env

CREDENTIALS = Credentials(username=DEMO_USERNAME, secret=DEMO_SECRET, project_id=DEMO_PROJECT_ID)
DAY = dt.date(2024, 5, 1)


def _left_by_killed_run(parent: Path, name: str, age: float = 3600.0) -> Path:
    folder = parent / f"{PREFIX}{name}"
    folder.mkdir()
    (folder / MARKER).write_bytes(b"")
    (folder / "chunk-0001.ndjson").write_bytes(b'{"event":"x"}\n')
    then = time.time() - age
    os.utime(folder / MARKER, (then, then))
    return folder


def test_a_folder_nobody_holds_is_cleared_and_a_live_one_kept(tmp_path: Path) -> None:
    stale = _left_by_killed_run(tmp_path, "dead")
    with spool_folder(tmp_path) as live:
        (live / "chunk-0002.ndjson").write_bytes(b"{}\n")
        # Another run starting now: the live folder's lock is held (by this
        # process's other open file description, as another process would).
        assert clear_stale(tmp_path) == []
        assert live.is_dir()
    assert not stale.exists()  # cleared when the live run started
    assert not live.exists()


def test_clear_stale_reports_only_abandoned_folders(tmp_path: Path) -> None:
    stale = _left_by_killed_run(tmp_path, "a")
    held = _left_by_killed_run(tmp_path, "b")
    unmarked_new = tmp_path / f"{PREFIX}c"
    unmarked_new.mkdir()
    unmarked_old = tmp_path / f"{PREFIX}d"
    unmarked_old.mkdir()
    old = time.time() - UNMARKED_GRACE_SECONDS - 60
    os.utime(unmarked_old, (old, old))
    other = tmp_path / "not-ours"
    other.mkdir()
    # A run that created its marker a moment ago and is about to lock it.
    starting = _left_by_killed_run(tmp_path, "e", age=1.0)
    with open(held / MARKER, "r+b") as handle:
        assert try_lock(handle)
        removed = clear_stale(tmp_path)
    assert sorted(removed) == sorted([stale, unmarked_old])
    assert held.is_dir() and unmarked_new.is_dir() and other.is_dir() and starting.is_dir()


# --- a full spool folder stops the run ----------------------------------------------------


class _FullDisk:
    """A spool file on a full disk: every write fails as the OS says it then (ENOSPC)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


@pytest.fixture
def full_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder whose chunk files cannot be written (ENOSPC); other files are not touched.

    The spool files are made with mkstemp and opened with os.fdopen: the
    descriptors mkstemp hands out for chunk files in this folder's spool are
    the ones whose writes fail.
    """
    parent = tmp_path / "temp"
    parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    chunk_fds: set[int] = set()
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        path = Path(name)
        if path.parent.parent == parent and path.name.startswith("chunk-"):
            chunk_fds.add(fd)
        return fd, name

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        if fd in chunk_fds:
            chunk_fds.discard(fd)
            return _FullDisk(handle)
        return handle

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)
    return parent


def test_a_full_spool_folder_ends_the_run_after_the_first_failure(
    full_spool: Path, make_server: ServerFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from mpexport.cli.main import run

    for name, value in {**service_account_env(), **UNPACED}.items():
        monkeypatch.setenv(name, value)
    server = make_server(Dataset(seed=5, events_per_day=40))
    output = tmp_path / "out.ndjson"
    code = run(["export", "--api-url", server.url, "--from", "2024-05-01", "--to", "2024-05-03",
                "--chunk-days", "1", "--workers", "1", "--no-progress", "--output", str(output)])
    stderr = capsys.readouterr().err
    assert code == ExitCode.PARTIAL, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith(f"mpexport: error: no space left in {full_spool} for the spool"), line
    assert "TMPDIR" in line and "free" in line, line
    assert "retrying" not in stderr and "Traceback" not in stderr
    # One query: nothing was asked of Mixpanel after the failure showed the cause.
    assert len(server.stats.queries()) == 1
    assert not output.exists()
    assert list(full_spool.iterdir()) == []  # the spool folder was removed


def test_a_full_disk_is_a_spool_full_error_naming_the_folder(
    full_spool: Path, make_server: ServerFactory,
) -> None:
    server = make_server(Dataset(seed=5, events_per_day=40))
    query = Query(Endpoint(server.url), CREDENTIALS, QueryFilters())
    with spool_folder() as folder, pytest.raises(SpoolFullError) as caught:
        fetch_once(new_session(), query, Chunk(0, DAY, DAY), folder, FetchSettings(),
                   threading.Event(), lambda _: None)
    assert caught.value.folder == full_spool
    assert caught.value.exit_code == ExitCode.PARTIAL
    assert "No space left on device" in caught.value.one_line()
