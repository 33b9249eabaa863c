"""The persisted hour of queries: where it lives on Windows, and what a failed save says.

Windows is emulated: platformdirs' Windows rules with a patched folder
lookup, and an ``os.replace`` that raises the PermissionError Windows raises
when another program holds the state file open.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import platformdirs
import platformdirs.windows
import pytest

from mpexport.environment import STATE_DIR_ENV, state_dir
from mpexport.pacing.hour import HourlyState

HOST = "https://data.mixpanel.com"
PROJECT = 12345
WALL = 1_719_000_000.0  # a realistic time.time()
CONSEQUENCE = "the next run may not know of this hour's queries"


def budget_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mpexport.pacing.hour" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------ where


def test_windows_state_dir_has_no_author_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "AppData" / "Local"
    monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.windows.Windows)
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", lambda _csidl: str(local))
    # The emulation works: platformdirs' own default would nest mpexport twice.
    assert platformdirs.user_state_path("mpexport") == local / "mpexport" / "mpexport"
    assert state_dir({}) == local / "mpexport"


def test_state_dir_env_still_wins(tmp_path: Path) -> None:
    assert state_dir({STATE_DIR_ENV: str(tmp_path / "elsewhere")}) == tmp_path / "elsewhere"


# ------------------------------------------------------------------ a failed save


class RefusingReplace:
    """``os.replace`` as on Windows while another program has the target open."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, src: Any, dst: Any) -> None:
        self.calls += 1
        raise PermissionError(errno.EACCES, "Access is denied", str(src), 5, str(dst))


def test_a_failed_replace_says_what_where_and_what_it_costs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = HourlyState.for_project(HOST, PROJECT, tmp_path)
    refusing = RefusingReplace()
    monkeypatch.setattr(os, "replace", refusing)
    caplog.set_level(logging.WARNING)
    for i in range(3):
        assert state.record(WALL + i) == []  # never raises: persistence is best effort
    # Every record got as far as the replace, so the silence after the first
    # warning is the once-per-run rule, not an earlier failure.
    assert refusing.calls == 3
    (message,) = budget_warnings(caplog)
    assert message.startswith(
        f"query budget not persisted: cannot replace {state.path} (Access is denied); "
    )
    assert CONSEQUENCE in message
    assert "429" in message
    # The temp files were removed; the state file was never written.
    assert list(state.path.parent.iterdir()) == [state.path.with_name(state.path.name + ".lock")]


def test_each_run_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "replace", RefusingReplace())
    caplog.set_level(logging.WARNING)
    for run in range(2):
        state = HourlyState.for_project(HOST, PROJECT, tmp_path)  # what each run makes
        state.record(WALL + run)
        state.record(WALL + run + 0.5)
    assert len(budget_warnings(caplog)) == 2


def test_an_unwritable_directory_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = HourlyState(blocker / "state.json")  # its directory is a file
    caplog.set_level(logging.WARNING)
    state.record(WALL)
    (message,) = budget_warnings(caplog)
    assert f"cannot create the directory {blocker} (" in message
    assert CONSEQUENCE in message


def test_a_failed_write_of_the_temp_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = HourlyState.for_project(HOST, PROJECT, tmp_path)
    real_open = os.open

    def full_disk(path: Any, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".tmp"):  # only the temp file the new state goes to
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", full_disk)
    caplog.set_level(logging.WARNING)
    state.record(WALL)
    (message,) = budget_warnings(caplog)
    assert f"cannot write {state.path} (No space left on device); " in message


def test_an_unreadable_state_file_says_this_run_is_affected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = HourlyState.for_project(HOST, PROJECT, tmp_path)
    real_read_bytes = Path.read_bytes

    def refusing_read(self: Path) -> bytes:
        if self == state.path:
            raise PermissionError(errno.EACCES, "Access is denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refusing_read)
    caplog.set_level(logging.WARNING)
    assert state.load(WALL) == []
    (message,) = budget_warnings(caplog)
    assert f"cannot read {state.path} (Access is denied); this run does not know" in message
